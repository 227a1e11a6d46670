"""Celery's own tools work against a real `genserve worker`: `celery -A genserve.workers.celery_app`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import WorkerProcess

pytestmark = pytest.mark.integration


def celery(redis_url: str, prefix: str, *argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, GENSERVE_BROKER_URL=redis_url, GENSERVE_QUEUE_PREFIX=prefix)
    return subprocess.run([sys.executable, "-m", "celery", "-A", "genserve.workers.celery_app", *argv],
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def named_worker(repo: Path, redis_url: str) -> Iterator[tuple[WorkerProcess, str, str]]:
    """A worker with a node name of its own, so inspect replies come from it and no other."""
    prefix = f"tools-{uuid.uuid4().hex[:6]}"
    node = f"tools-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    process = WorkerProcess(repo, redis_url, prefix, env={"GENSERVE_WORKER__HOSTNAME": node})
    yield process, prefix, node
    process.stop()


def inspect(redis_url: str, prefix: str, node: str, command: str, timeout_s: float = 60) -> dict:
    """`celery inspect <command> --json`, retried until the worker (still starting) answers."""
    end = time.monotonic() + timeout_s
    while True:
        result = celery(redis_url, prefix, "inspect", command, "-d", node, "--json", "--timeout", "2")
        if result.returncode == 0:
            return json.loads(result.stdout.strip().splitlines()[-1])
        assert "untrusted content" not in result.stderr + result.stdout, result.stderr
        if time.monotonic() > end:
            raise AssertionError(f"celery inspect {command}: {result.stdout} {result.stderr}")
        time.sleep(0.5)


def test_celery_inspect_ping_reaches_a_genserve_worker(redis_url: str, named_worker: tuple[WorkerProcess, str, str]):
    """`celery -A genserve.workers.celery_app inspect ping` gets pong from the worker (msgpack accepted)."""
    worker, prefix, node = named_worker
    replies = inspect(redis_url, prefix, node, "ping")
    assert replies == {node: {"ok": "pong"}}, worker.output()


def test_celery_inspect_active_queues_lists_the_model_queues(redis_url: str, named_worker: tuple[WorkerProcess, str, str]):
    """active_queues names one queue per model in the repository, under the worker's prefix."""
    worker, prefix, node = named_worker
    replies = inspect(redis_url, prefix, node, "active_queues")
    queues = sorted(q["name"] for q in replies[node])
    assert queues == [f"{prefix}.cvae", f"{prefix}.vae"], worker.output()


def test_celery_app_refuses_pickle(redis_url: str):
    """The tools' app accepts msgpack and JSON only, like the workers."""
    result = subprocess.run([sys.executable, "-c", "from genserve.workers.celery_app import app; "
                             "print(sorted(app.conf.accept_content), app.conf.task_serializer)"],
                            env=dict(os.environ, GENSERVE_BROKER_URL=redis_url), capture_output=True, text=True)
    assert result.stdout.split() == ["['json',", "'msgpack']", "msgpack"], result.stderr


def test_celery_inspect_stats_and_active_describe_the_worker(redis_url: str, named_worker: tuple[WorkerProcess, str, str]):
    """stats names the worker's pool and broker; active lists what runs now (nothing, when idle)."""
    worker, prefix, node = named_worker
    stats = inspect(redis_url, prefix, node, "stats")[node]
    assert stats["pool"]["implementation"].endswith(("solo:TaskPool", "threads:TaskPool", "prefork:TaskPool"))
    assert stats["broker"]["transport"] == "redis"
    assert inspect(redis_url, prefix, node, "active") == {node: []}
