"""Builds the Celery app from settings, nothing else.

Broker and result backend are Redis; messages are msgpack (JSON accepted, pickle refused).
Results go to Redis through `workers/results.py` (Celery's Redis backend, one round trip).
Late acknowledgement: a message is acked only after its result is stored, and a worker that
dies mid-batch leaves it unacked, so Redis hands it to another worker after the visibility
timeout. Queues are per model ("genserve.vae"), so a deployment routes models to GPU or
CPU workers by which queues each worker consumes.
"""

from __future__ import annotations

import os

from celery import Celery

from genserve.protocol import Loop, bulk_queue_name
from genserve.redis_urls import tls_options
from genserve.repository import ModelRepository
from genserve.settings import Settings
from genserve.workers.autoregressive.streaming import RedisStreamSink
from genserve.workers.jobs.task import register_chunk_task
from genserve.workers.kombu_compat import tolerate_restore_on_a_lost_connection
from genserve.workers.results import backend_url
from genserve.workers.runtime import ModelCache
from genserve.workers.tasks import register_tasks


def create_app(settings: Settings, *, with_results: bool = True) -> Celery:
    """The worker's app (`with_results`), or the gateway's, which reads results itself."""
    if not settings.broker_url:
        raise ValueError("a broker URL is required for the distributed mode")
    tolerate_restore_on_a_lost_connection()  # else a Redis restart under load stops the worker
    app = Celery(
        "genserve",
        broker=settings.broker_url,
        # Celery's Redis result backend, storing and announcing a result in one round trip.
        backend=backend_url(settings.backend_url) if with_results else None,
        set_as_current=False,
    )
    app.conf.update(
        task_serializer="msgpack",
        result_serializer="msgpack",
        accept_content=["msgpack", "json"],
        result_accept_content=["msgpack", "json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=settings.worker.prefetch_multiplier,
        broker_transport_options={
            "visibility_timeout": settings.worker.visibility_timeout_s,
            # kombu scans for abandoned messages every interval x throttle seconds (100 s by
            # default); scan every interval instead so a dead worker's batch returns quickly.
            "unacked_restore_interval": settings.worker.restore_interval_s,
            "unacked_restore_throttle": 1,
            # A worker killed while restoring leaves kombu's restore mutex held, and no message
            # of any worker comes back until it expires (300 s by default); a restore takes ms.
            "unacked_mutex_expire": 10,
        },
        result_expires=settings.result_expires_s,
        task_default_queue=f"{settings.queue_prefix}.default",
        broker_connection_retry_on_startup=True,
        task_publish_retry_policy={
            "max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
        },
        # Events feed Flower and `celery events`; control replies (inspect) are msgpack like
        # everything else, so tools must load this app (`celery -A genserve.workers.celery_app`).
        worker_send_task_events=settings.worker.task_events,
        task_send_sent_event=settings.worker.task_events,
        # rediss://: verify the server's certificate in the broker and backend like redis-py does.
        broker_use_ssl=tls_options(settings.broker_url),
        redis_backend_use_ssl=tls_options(settings.backend_url),
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        genserve_short_strategy=settings.worker.short_strategy,  # read by workers/strategy.py
    )
    repository = ModelRepository(settings.model_repository)
    streams = RedisStreamSink(settings.backend_url)  # token chunks of streamed generations
    caches: dict[int, ModelCache] = {}  # one per process (after any fork), shared by both tasks

    def cache() -> ModelCache:
        if os.getpid() not in caches:
            caches[os.getpid()] = ModelCache(repository, settings.worker, streams=streams)
        return caches[os.getpid()]

    register_tasks(app, cache)
    register_chunk_task(app, settings, cache)
    return app


def worker_pool(settings: Settings) -> tuple[str, int]:
    """(Celery pool, its concurrency). Text generators need `threads`: each generation task
    blocks until its sequence leaves the process's shared decode batch, so one process must
    hold many active tasks for their decode steps to be shared."""
    worker = settings.worker
    pool = worker.pool
    if pool == "auto":
        repository = ModelRepository(settings.model_repository)
        names = worker.queues or repository.names()
        generates = any(m.loop == Loop.AUTOREGRESSIVE for m in repository.manifests() if m.name in names)
        pool = "threads" if generates else "solo" if worker.concurrency == 1 else "prefork"
    return pool, worker.task_threads if pool == "threads" else worker.concurrency


def worker_queues(settings: Settings) -> list[str]:
    """Queues this worker consumes: the configured models, or every model in the repository."""
    names = settings.worker.queues or ModelRepository(settings.model_repository).names()
    return [settings.queue_for(name) for name in names]


def bulk_queues(settings: Settings) -> list[str]:
    """The batch-job queues of the same models, consumed by the bulk thread (workers/jobs/bulk.py)."""
    names = settings.worker.queues or ModelRepository(settings.model_repository).names()
    return [bulk_queue_name(settings.queue_prefix, name) for name in names]
