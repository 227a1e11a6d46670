"""The worker's result backend against a real Redis: Celery's key, meta and channel, one script."""

from __future__ import annotations

import uuid

import msgpack
import redis

from genserve.settings import Settings
from genserve.workers.app import create_app
from genserve.workers.results import ResultBackend


def _app(redis_url: str):
    return create_app(Settings(broker_url=redis_url, queue_prefix=f"test-{uuid.uuid4().hex[:8]}"))


def test_the_app_uses_it_and_results_read_back_through_celery(redis_url: str):
    app = _app(redis_url)
    assert isinstance(app.backend, ResultBackend)
    task_id = uuid.uuid4().hex
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    key = app.backend.get_key_for_task(task_id)
    pubsub.subscribe(key)
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    app.backend.mark_as_done(task_id, {"results": [{"ok": True}]})
    published = pubsub.get_message(timeout=2)
    assert published is not None and published["type"] == "message"
    meta = msgpack.unpackb(published["data"])
    assert meta["status"] == "SUCCESS" and meta["result"] == {"results": [{"ok": True}]}
    assert meta["task_id"] == task_id
    assert client.get(key) == published["data"]
    assert 0 < client.ttl(key) <= app.conf.result_expires
    assert app.AsyncResult(task_id).get(timeout=2) == {"results": [{"ok": True}]}  # Celery reads it
    pubsub.close()


def test_a_success_is_never_overwritten(redis_url: str):
    """As Celery's own backend: a redelivered task's later result does not replace a SUCCESS."""
    app = _app(redis_url)
    task_id = uuid.uuid4().hex
    app.backend.mark_as_done(task_id, {"first": True})
    app.backend.mark_as_failure(task_id, RuntimeError("second run"))
    app.backend.mark_as_done(task_id, {"first": False})
    assert app.AsyncResult(task_id).get(timeout=2) == {"first": True}


def test_a_failure_is_stored_and_may_be_replaced_by_a_success(redis_url: str):
    app = _app(redis_url)
    task_id = uuid.uuid4().hex
    app.backend.mark_as_failure(task_id, RuntimeError("first run"))
    assert app.backend.get_task_meta(task_id)["status"] == "FAILURE"
    app.backend._cache.clear()
    app.backend.mark_as_done(task_id, {"second": True})
    assert app.backend.get_task_meta(task_id)["status"] == "SUCCESS"


def test_a_json_success_is_recognised_too(redis_url: str):
    app = _app(redis_url)
    task_id = uuid.uuid4().hex
    client = redis.Redis.from_url(redis_url)
    key = app.backend.get_key_for_task(task_id)
    client.set(key, b'{"status": "SUCCESS", "result": 1, "task_id": "%s"}' % task_id.encode())
    app.backend.mark_as_done(task_id, 2)
    assert b'"result": 1' in client.get(key)


def test_a_result_is_stored_after_redis_forgot_the_script_and_after_a_dropped_connection(redis_url: str):
    """The store runs EVALSHA on the thread's own connection: Redis without the script (a
    restart, SCRIPT FLUSH) gets EVAL instead; a dropped connection is made again."""
    app = _app(redis_url)
    client = redis.Redis.from_url(redis_url)
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    app.backend.mark_as_done(first, {"n": 1})
    client.script_flush()
    app.backend.mark_as_done(second, {"n": 2})
    assert app.AsyncResult(first).get(timeout=2) == {"n": 1} and app.AsyncResult(second).get(timeout=2) == {"n": 2}
    own = app.backend._connection()
    client.client_kill_filter(_id=_id_of(client, own))
    third = uuid.uuid4().hex
    app.backend.mark_as_done(third, {"n": 3})  # ensure's retry policy: a new connection
    assert app.AsyncResult(third).get(timeout=2) == {"n": 3}


def _id_of(client: redis.Redis, connection) -> str:
    """The CLIENT LIST id of `connection` (matched by its local port)."""
    port = connection._sock.getsockname()[1]
    (entry,) = [c for c in client.client_list() if c["addr"].endswith(f":{port}")]
    return entry["id"]
