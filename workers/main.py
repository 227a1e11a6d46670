"""`genserve worker`: one worker process, wired together.

The Celery app consumes the online queues of the repository's models (or --queues); beside
it run the message leases (workers/leases.py), the failover heartbeat and sweep
(workers/failover.py), the hot-model scan (workers/hot_models.py), the metrics endpoint
(workers/metrics.py) and the bulk thread that runs batch-job chunks (workers/jobs/bulk.py).
"""

from __future__ import annotations

import sys

from genserve.settings import Settings


def run_worker(settings: Settings) -> int:
    """Run until Celery's worker stops; 2 when there is nothing to serve or no broker."""
    from genserve.workers import hot_models
    from genserve.workers.app import bulk_queues, create_app, worker_pool, worker_queues
    from genserve.workers.jobs.task import start_bulk_consumer
    from genserve.workers.leases import install
    from genserve.workers.metrics import serve as serve_metrics

    if settings.embedded:
        print("genserve worker needs --broker-url (or GENSERVE_BROKER_URL)", file=sys.stderr)
        return 2
    queues = worker_queues(settings)
    hot = not settings.worker.queues and settings.worker.model_scan_s > 0
    if not queues and not hot:
        print(f"no models in {settings.model_repository} and no --queues: nothing to serve; "
              "build one with `genserve export vae`", file=sys.stderr)
        return 2
    if not queues:  # an empty repository: wait on the default queue for models to be published
        print(f"no models in {settings.model_repository} yet: serving each one as it is published",
              file=sys.stderr)
        queues = [f"{settings.queue_prefix}.default"]

    app = create_app(settings)
    if settings.worker.receipts:  # fewer waited round trips per online message
        from genserve.workers import receipts

        receipts.install()
        receipts.ack_with_result(settings.backend_url == settings.broker_url)
    pool, concurrency = worker_pool(settings)
    hot_models.install(app, settings, pool)  # only without --queues: consume new models' queues
    serve_metrics(settings.worker.metrics_host, settings.worker.metrics_port, multiprocess=pool == "prefork")
    # Long tasks keep their messages: renew the visibility lease of each message held (the
    # visibility timeout is a Redis-transport notion; other brokers redeliver on disconnect).
    failover = keeper = None
    if settings.broker_url.startswith(("redis://", "rediss://", "unix://")):
        keeper = install(settings.broker_url, settings.worker.visibility_timeout_s)
        if settings.worker.failover_ttl_s > 0:  # a dead worker's messages return in seconds
            from genserve.workers import failover as failover_module

            failover = failover_module.install(app, settings.broker_url, settings.queue_prefix, keeper.held,
                                               settings.worker.failover_ttl_s,
                                               queues=lambda: consumed(app, queues),
                                               processes=concurrency if pool == "prefork" else 1)
    # batch-job chunks, beside the online tasks, with leases and failover like theirs
    start_bulk_consumer(app, settings, bulk_queues(settings), keeper, failover)
    from celery.signals import worker_ready

    from genserve.heap import freeze_startup

    # consuming: no full garbage-collector pass walks start-up's objects again (genserve/heap.py)
    worker_ready.connect(lambda **_: freeze_startup(), weak=False, dispatch_uid="genserve-heap")
    try:
        app.worker_main([
            "worker", "--queues", ",".join(queues), "--pool", pool,
            "--concurrency", str(concurrency),
            "--loglevel", settings.log_level.upper(), "--hostname", settings.worker.hostname,
            # Heartbeats stay on (one small event every 2 s): they keep the worker's event
            # dispatcher up, so Flower sees the worker and can turn task events on remotely.
            "--without-gossip", "--without-mingle",
        ])
    finally:
        if failover is not None:  # after Celery restored its prefetched messages: nothing left behind
            failover.close()
    return 0


def consumed(app: object, started_with: list[str]) -> list[str]:
    """The queues Celery consumes now: those it started with and any hot model's added since."""
    try:
        selection = list(getattr(app.amqp.queues, "consume_from", None) or {})  # type: ignore[attr-defined]
    except RuntimeError:  # the consumer thread added one just now: the next beat sees it
        selection = []
    return sorted(set(started_with) | set(selection))
