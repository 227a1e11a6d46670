"""Hot models: a worker starts consuming the queue of a model published while it runs.

A worker started without --queues serves "every model in the repository"; this makes that
true of models published after it started too. A Celery consumer bootstep rescans the
repository every `model_scan_s` seconds on the consumer's own timer (the thread that owns the
broker connection, so no locking) and calls `Consumer.add_task_queue` for each new model:
the same call Celery's `add_consumer` control command makes, without a round trip through
the broker's control mailbox. A queue added this way stays in the app's queue selection, so
it survives a consumer restart after a lost broker connection. New versions of a model need
nothing: the model's queue is the same and `ModelCache` resolves the version per message.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, bootsteps

from genserve.protocol import Loop
from genserve.repository import ModelRepository
from genserve.settings import Settings

log = logging.getLogger(__name__)


def published_models(repository: ModelRepository) -> list[str]:
    """Names with at least one published version (a bare folder mid-publish is not a model)."""
    return [name for name in repository.names() if repository.versions(name)]


def install(app: Celery, settings: Settings, pool: str) -> None:
    """Add the watcher to the worker's consumer; only for workers that serve every model."""
    if settings.worker.queues or settings.worker.model_scan_s <= 0:
        return
    repository = ModelRepository(settings.model_repository)

    class ModelQueueWatcher(bootsteps.StartStopStep):
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.timer_ref: Any = None

        def start(self, consumer: Any) -> None:
            self.scan(consumer)
            self.timer_ref = consumer.timer.call_repeatedly(settings.worker.model_scan_s, self.scan, (consumer,))

        def stop(self, consumer: Any) -> None:
            if self.timer_ref is not None:
                self.timer_ref.cancel()
                self.timer_ref = None

        def scan(self, consumer: Any) -> None:
            try:
                for name in published_models(repository):
                    queue = settings.queue_for(name)
                    if consumer.task_consumer.consuming_from(queue):
                        continue
                    consumer.add_task_queue(queue)
                    log.warning("hot model: now consuming %s (model %s published after start)", queue, name)
                    self.warn_if_pool_unfit(repository, name)
            except Exception:  # a half-written repository must not stop the consumer
                log.exception("scanning %s for new models failed", settings.model_repository)

        @staticmethod
        def warn_if_pool_unfit(repository: ModelRepository, name: str) -> None:
            latest = repository.resolve(name)
            if latest.loop == Loop.AUTOREGRESSIVE.value and pool != "threads":
                log.warning("%s is a text generator; this %s-pool worker runs one generation at a time "
                            "(restart it to get the threads pool)", name, pool)

    app.steps["consumer"].add(ModelQueueWatcher)
