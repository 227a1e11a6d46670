"""A shorter way from an online task message to its answer, for a worker with the solo pool.

Celery hands each message to the task's *strategy* (`Task.Strategy`), which by default builds
a `Request`, reserves it, hands it to the pool, and the pool runs Celery's tracer around the
task: about 40% of a solo worker's CPU per one-sample message went there (py-spy, concurrency
8), beside the task itself and the result script. In a solo worker the pool runs the task
right there, in the consumer's own loop, so for the common message this strategy does the
same steps itself, in the same order, with nothing in between:

    task_received -> decode (the consumer's accepted content types: pickle stays refused)
    -> task_prerun -> the task's body -> store the result (workers/results.py: the script
    that also acks it in Redis) -> task_postrun -> ack (kombu: the message leaves memory)

Late acknowledgement, the receipts and failover claims, leases and the bulk thread's view
of running online tasks (all hung on those signals) are unchanged; a failure is stored as
FAILURE and acked as Celery does (`task_acks_on_failure_or_timeout`), `Ignore` (a duplicate
copy) is acked without a result. Celery's own strategy still takes every message this one
does not know how to run the same way: an ETA, an expiry already past or a revoked id (it
stores REVOKED, which the gateway answers DEADLINE_EXCEEDED), a rate limit, task events
switched on (Flower sees task-received/started/succeeded), consumer callbacks, callbacks or
chords in the message, other pools (threads for text generation, prefork), and any body it
cannot decode (Celery then reports it its own way).
"""

from __future__ import annotations

import logging
import time
import traceback
from datetime import datetime
from typing import Any, Callable

from celery import signals, states
from celery.app import trace as celery_trace
from celery.exceptions import Ignore
from celery.worker import state as worker_state
from celery.worker.strategy import default

log = logging.getLogger(__name__)

ONLINE = f"{__name__}:online"  # the online task's `Strategy` (workers/tasks.py)


class Received:
    """What the task_received receivers read of a request (workers/leases.py, failover.py)."""

    __slots__ = ("id", "name", "message", "expires", "delivery_info")

    def __init__(self, task_id: str, name: str, message: Any, expires: Any) -> None:
        self.id, self.name, self.message, self.expires = task_id, name, message, expires
        self.delivery_info = message.delivery_info


def expired(expires: Any, now: float | None = None) -> bool:
    """Whether a message's `expires` header (ISO 8601 with an offset, as Celery writes it;
    None: never) is past. A header that does not parse counts as expired, so Celery's own
    strategy decides what it means."""
    if expires is None:
        return False
    try:
        at = expires.timestamp() if isinstance(expires, datetime) else datetime.fromisoformat(str(expires)).timestamp()
    except (TypeError, ValueError):
        return True
    return at <= (time.time() if now is None else now)


def plain_call(decoded: Any) -> Any:
    """The one positional argument of a message body (args, kwargs, embed) that asks for a
    plain call: no keyword arguments, no callbacks, errbacks, chain or chord; else None."""
    try:
        args, kwargs, embed = decoded
    except (TypeError, ValueError):
        return None
    if kwargs or not isinstance(args, (list, tuple)) or len(args) != 1:
        return None
    if embed and any(embed.get(key) for key in ("callbacks", "errbacks", "chain", "chord")):
        return None
    return args[0]


def online(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Callable[..., Any]:
    """The strategy: Celery's default one for what it alone handles, the short path otherwise."""
    fallback = default(task, app, consumer, **kwargs)
    from celery.concurrency.solo import TaskPool as SoloPool

    answer = getattr(task, "answer", None)  # (task id, payload) -> result (workers/tasks.py)
    enabled = app.conf.get("genserve_short_strategy", True)  # GENSERVE_WORKER__SHORT_STRATEGY
    if answer is None or not enabled or not isinstance(consumer.pool, SoloPool):
        return fallback
    name, backend = task.name, task.backend
    eventer = consumer.event_dispatcher
    revoked = consumer.controller.state.revoked
    buckets = consumer.task_buckets
    connection_errors = consumer.connection_errors
    received, prerun, postrun, success = (signals.task_received, signals.task_prerun, signals.task_postrun,
                                          signals.task_success)
    trace_log = celery_trace.logger

    def task_events() -> bool:
        # As Celery's EventDispatcher decides: heartbeats keep it enabled, and only the
        # groups it holds are sent ('task' joins them with task events on, or by remote).
        return bool(eventer is not None and eventer.enabled and task.send_events
                    and (not eventer.groups or "task" in eventer.groups))

    def handler(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any) -> Any:
        headers = message.headers
        task_id = headers.get("id")
        if (body is not None or callbacks or not task_id or headers.get("eta") or task_id in revoked
                or task_events() or buckets.get(name) is not None
                or expired(headers.get("expires"))):
            return fallback(message, body, ack, reject, callbacks)
        try:
            payload = plain_call(message.decode())
        except Exception:  # undecodable or refused content: Celery reports it its own way
            payload = None
        if payload is None:
            return fallback(message, body, ack, reject, callbacks)
        does_info = trace_log.isEnabledFor(logging.INFO)
        if does_info:
            celery_trace.info(celery_trace.LOG_RECEIVED, {"id": task_id, "name": name, "args": "", "kwargs": "",
                                                          "eta": None})
        if received.receivers:
            received.send(sender=consumer, request=Received(task_id, name, message, headers.get("expires")))
        worker_state.total_count[name] += 1  # `celery inspect stats`
        worker_state.all_total_count[0] += 1
        args = (payload,)
        if prerun.receivers:
            prerun.send(sender=task, task_id=task_id, task=task, args=args, kwargs={})
        started = time.monotonic()
        state, result = states.SUCCESS, None
        try:
            try:
                result = answer(task_id, payload)
            except Ignore:
                state = states.IGNORED
            except Exception as exc:
                state = states.FAILURE
                trace_log.error("Task %s[%s] raised unexpected: %r", name, task_id, exc, exc_info=True)
                backend.mark_as_failure(task_id, exc, traceback=traceback.format_exc())
            else:
                backend.store_result(task_id, result, states.SUCCESS)  # with the ack in Redis, where it can
                if success.receivers:
                    success.send(sender=task, result=result, runtime=time.monotonic() - started)
                if does_info:
                    celery_trace.info(celery_trace.LOG_SUCCESS, {
                        "id": task_id, "name": name, "return_value": "...", "runtime": time.monotonic() - started,
                        "args": "", "kwargs": ""})
        finally:
            if postrun.receivers:
                postrun.send(sender=task, task_id=task_id, task=task, args=args, kwargs={}, retval=result,
                             state=state)
        # Stored (or failed, or a duplicate): acknowledged, late, like acks_late. An exception
        # out of storing skipped this: the message stays unacked in Redis and comes back.
        ack(log, connection_errors)
        return None

    handler.genserve_online = True  # type: ignore[attr-defined]
    return handler
