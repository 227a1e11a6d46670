"""The Celery task of batch-job chunks (`genserve.run_chunk`), bound to the worker's app."""

from __future__ import annotations

import logging
from typing import Any, Callable

from celery import Celery

from genserve.jobs.store import RedisJobStore
from genserve.protocol import CHUNK_TASK_NAME, job_key_prefix
from genserve.settings import Settings
from genserve.workers.jobs.runner import ChunkRunner
from genserve.workers.runtime import ModelCache


log = logging.getLogger(__name__)

REDIS_RETRY_S = 60.0  # how long a chunk waits for Redis to come back before it fails


def _through_outages(run: Callable[[], str]) -> str:
    """Run, retrying while Redis is unreachable (a restart): a chunk that failed on a dead
    connection would be acked and lost once the broker is back, with nothing to re-run it.
    Re-running is safe: a finished chunk is skipped, a shard is rewritten with the same bytes."""
    import time

    import redis

    end = time.monotonic() + REDIS_RETRY_S
    while True:
        try:
            return run()
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() > end:
                raise
            time.sleep(1.0)


def start_bulk_consumer(app: Celery, settings: Settings, queues: list[str], keeper: Any = None,
                        failover: Any = None) -> Any:
    """Run chunks of `queues` on a thread of this worker process, yielding to online tasks;
    `keeper` (workers/leases.py) renews each chunk message's lease while it runs, `failover`
    (workers/failover.py) owns it, so a dead worker's chunk is restored in seconds."""
    from genserve.protocol import TASK_NAME
    from genserve.workers.jobs.bulk import BulkConsumer, OnlineTasks

    online = OnlineTasks()
    online.connect(TASK_NAME)

    def run(payload: dict[str, Any], pause: Callable[[], None]) -> str:
        return _through_outages(lambda: app.chunk_runner().run(payload, pause))

    def republish(queue: str, payload: dict[str, Any]) -> None:
        app.send_task(CHUNK_TASK_NAME, args=[payload], queue=queue, routing_key=queue)

    def hold(tag: str) -> bool:
        """False: another live worker runs this chunk message (a second copy): skip it."""
        if failover is not None:
            try:
                if not failover.own(tag):
                    log.warning("chunk message %s is run by another live worker: this copy is skipped", tag)
                    return False
            except Exception as exc:  # Redis away: the next beat owns it (keeper.held lists it)
                log.warning("failover: could not own chunk message %s: %s", tag, exc)
        if keeper is not None:
            keeper.hold(tag)
        return True

    def release(tag: str) -> None:
        if keeper is not None:
            keeper.release(tag)

    consumer = BulkConsumer(settings.broker_url, dict(app.conf.broker_transport_options), queues, run, republish,
                            online, hold, release)
    consumer.start()
    return consumer


def register_chunk_task(app: Celery, settings: Settings, cache: Callable[[], ModelCache]) -> None:
    """`cache()` is the process's model cache, shared with the online task (one session per model)."""
    from genserve.workers.tasks import execute

    state: dict[str, ChunkRunner] = {}

    def runner() -> ChunkRunner:
        if "runner" not in state:  # created in the process that runs chunks (after any fork)
            store = RedisJobStore(settings.backend_url, job_key_prefix(settings.queue_prefix))
            state["runner"] = ChunkRunner(store, lambda payload: execute(payload, cache()), settings.jobs.fsync)
        return state["runner"]

    app.chunk_runner = runner  # the bulk consumer thread (workers/jobs/bulk.py) runs chunks with it

    # shared=False: per app (it closes over this app's settings and cache), as run_batch
    @app.task(name=CHUNK_TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True,
              shared=False)
    def run_chunk(self: Any, payload: dict[str, Any]) -> str:
        outcome = _through_outages(lambda: runner().run(payload))
        if outcome == "retry":  # a fresh message at the back of the bulk queue; this one is acked
            queue = (self.request.delivery_info or {}).get("routing_key")
            run_chunk.apply_async(args=[payload], queue=queue, routing_key=queue)
        return outcome
