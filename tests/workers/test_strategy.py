"""The online task's strategy (workers/strategy.py) in a real Celery worker on a real Redis.

The worker runs in this process (Celery's own test worker: the real consumer, solo pool and
kombu Redis transport, in a thread), so the test can see which path took each message: the
short one hands task_received a `Received`, Celery's own a `Request`.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import msgpack
import pytest
import redis
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun, task_prerun, task_received
from kombu.serialization import dumps

from genserve.protocol import RESULT_PREFIX, TASK_NAME
from genserve.services.backends.celery import TaskPublisher
from genserve.settings import Settings
from genserve.workers.app import create_app
from genserve.workers.strategy import expired, plain_call


def test_expired_reads_celerys_header():
    now = time.time()
    assert not expired(None)
    assert expired(datetime.fromtimestamp(now - 1, tz=timezone.utc).isoformat(), now)
    assert not expired(datetime.fromtimestamp(now + 5, tz=timezone.utc).isoformat(), now)
    assert expired(datetime.fromtimestamp(now - 1, tz=timezone.utc), now)
    assert expired("not a time", now)  # Celery's strategy decides what it means


def test_plain_call_takes_one_positional_argument_and_no_workflow():
    assert plain_call([[{"op": "x"}], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]) == {"op": "x"}
    assert plain_call([[{"op": "x"}], {}, None]) == {"op": "x"}
    assert plain_call([[], {"payload": {}}, {}]) is None
    assert plain_call([[{"op": "x"}], {}, {"callbacks": [{"task": "t"}]}]) is None
    assert plain_call([[{"op": "x"}], {}, {"chain": [{"task": "t"}]}]) is None
    assert plain_call([[1, 2], {}, {}]) is None
    assert plain_call("garbage") is None


@dataclass
class Worker:
    app: Any
    publisher: TaskPublisher
    queue: str
    client: redis.Redis
    seen: list[str] = field(default_factory=list)  # the kind of request each task_received carried
    signalled: list[str] = field(default_factory=list)  # task_prerun / task_postrun, in order

    def send(self, deadline_s: float = 30.0) -> str:
        task_id = f"strategy_{uuid.uuid4().hex[:12]}"
        self.client.lpush(self.queue, self.publisher.encode(task_id, self.queue, payload(), time.time() + deadline_s))
        return task_id

    def send_raw(self, args: list[Any], kwargs: dict[str, Any]) -> str:
        """A message as TaskPublisher writes it, with any arguments."""
        task_id = f"strategy_{uuid.uuid4().hex[:12]}"
        envelope = json.loads(self.publisher.encode(task_id, self.queue, payload(), time.time() + 30))
        message = self.app.amqp.as_task_v2(task_id, TASK_NAME, args=args, kwargs=kwargs)
        _, _, body = dumps(message.body, serializer="msgpack")
        envelope.update(body=base64.b64encode(body).decode(), headers=message.headers)
        self.client.lpush(self.queue, json.dumps(envelope).encode())
        return task_id

    def meta(self, task_id: str, timeout_s: float = 20.0) -> dict[str, Any]:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            data = self.client.get(f"{RESULT_PREFIX}{task_id}")
            if data is not None:
                return msgpack.unpackb(data)
            time.sleep(0.01)
        raise AssertionError(f"no result for {task_id}")

    def settled(self, timeout_s: float = 5.0) -> bool:
        """Nothing of this test's left in kombu's unacked hash (acked, late)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if not any(b"strategy_" in v for v in self.client.hvals("unacked")):
                return True
            time.sleep(0.02)
        return False


def payload() -> dict[str, Any]:
    request = {"count": 1, "seed": 3, "label": None, "latents": None, "tensor": True, "png": False,
               "return_latents": False, "first_index": 0, "request_id": "r"}
    return {"model": "vae", "op": "generate_images", "sent_at": time.time(), "requests": [request]}


@pytest.fixture
def worker(repo: Path, redis_url: str, request: pytest.FixtureRequest) -> Iterator[Worker]:
    settings = Settings(model_repository=repo, broker_url=redis_url, queue_prefix=f"strategy-{uuid.uuid4().hex[:8]}")
    app = create_app(settings)
    options = getattr(request, "param", {})
    app.conf.worker_send_task_events = options.get("events", False)
    app.conf.genserve_short_strategy = options.get("short", True)  # GENSERVE_WORKER__SHORT_STRATEGY
    w = Worker(app, TaskPublisher(app, None), settings.queue_for("vae"),
               redis.Redis.from_url(redis_url))

    def on_received(sender: Any = None, request: Any = None, **_: Any) -> None:
        w.seen.append(type(request).__name__)

    def on_prerun(task_id: str = "", **_: Any) -> None:
        w.signalled.append(f"prerun {task_id}")

    def on_postrun(task_id: str = "", state: str = "", **_: Any) -> None:
        w.signalled.append(f"postrun {task_id} {state}")

    receivers = ((task_received, on_received), (task_prerun, on_prerun), (task_postrun, on_postrun))
    for signal, receiver in receivers:
        signal.connect(receiver, weak=False)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, queues=[w.queue], loglevel="WARNING"):
            yield w
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver)


def test_a_plain_message_takes_the_short_path_with_the_same_signals_and_answer(worker: Worker):
    task_id = worker.send()
    result = worker.meta(task_id)
    assert result["status"] == "SUCCESS" and result["task_id"] == task_id
    (outcome,) = result["result"]["results"]
    assert outcome["ok"], outcome
    assert worker.seen == ["Received"]
    assert worker.signalled == [f"prerun {task_id}", f"postrun {task_id} SUCCESS"]
    assert worker.settled()
    assert worker.app.AsyncResult(task_id).get(timeout=5)["results"][0]["ok"]  # Celery reads what it stored


def test_expired_and_keyword_messages_go_celerys_way(worker: Worker):
    late = worker.send(deadline_s=-1.0)
    # Celery's strategy stores REVOKED (the gateway answers DEADLINE_EXCEEDED) before any signal
    assert worker.meta(late)["status"] == "REVOKED"
    assert worker.seen == [] and worker.signalled == []
    assert worker.settled()
    task_id = worker.send_raw([], {"payload": payload()})  # not one positional argument
    assert worker.meta(task_id)["status"] == "SUCCESS"
    assert worker.seen == ["Request"]
    assert worker.settled()


def test_a_task_that_raises_is_stored_as_failure_and_acked(worker: Worker):
    task_id = worker.send_raw([{"model": "vae", "op": "generate_images"}], {})  # no "requests": the body raises
    result = worker.meta(task_id)
    assert result["status"] == "FAILURE"
    assert result["result"]["exc_type"] == "KeyError"
    assert worker.seen == ["Received"]
    assert worker.signalled == [f"prerun {task_id}", f"postrun {task_id} FAILURE"]
    assert worker.settled()


@pytest.mark.parametrize("worker", [{"events": True}], indirect=True)
def test_with_task_events_on_every_message_goes_celerys_way(worker: Worker):
    task_id = worker.send()
    assert worker.meta(task_id)["status"] == "SUCCESS"
    assert worker.seen == ["Request"]  # task-received/started/succeeded events are Celery's to send
    assert worker.settled()


@pytest.mark.parametrize("worker", [{"short": False}], indirect=True)
def test_turned_off_every_message_goes_celerys_way(worker: Worker):
    task_id = worker.send()
    assert worker.meta(task_id)["status"] == "SUCCESS"
    assert worker.seen == ["Request"]
    assert worker.settled()
