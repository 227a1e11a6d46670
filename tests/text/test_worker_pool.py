"""A worker serving a text generator runs the threads pool, so generation tasks can share steps."""

from __future__ import annotations

from genserve.settings import Settings, WorkerSettings
from genserve.workers.app import worker_pool


def test_text_generators_get_the_threads_pool(gpt_repo, tmp_path):
    """auto picks threads (task_threads tasks at once) for a GPT, solo for an empty repository;
    an explicit pool wins."""
    assert worker_pool(Settings(model_repository=gpt_repo)) == ("threads", 32)
    assert worker_pool(Settings(model_repository=gpt_repo, worker=WorkerSettings(task_threads=8))) == ("threads", 8)
    assert worker_pool(Settings(model_repository=tmp_path)) == ("solo", 1)
    assert worker_pool(Settings(model_repository=tmp_path, worker=WorkerSettings(concurrency=2))) == ("prefork", 2)
    assert worker_pool(Settings(model_repository=gpt_repo, worker=WorkerSettings(pool="solo"))) == ("solo", 1)
