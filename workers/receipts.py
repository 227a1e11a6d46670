"""A worker's per-message bookkeeping on the broker, in as few round trips as it can be.

Between taking an online task message (BRPOP) and answering it, a stock Celery worker on
Redis waits for four more round trips: kombu records the message as unacked (ZADD + HSET),
failover claims it (workers/failover.py `own`), the result is stored and announced
(workers/results.py), and kombu acks (ZREM + HDEL). On a loaded machine each one is a
wake-up of Redis and of the worker; `bench/hops.py` measured about 0.5 ms apiece. Here:

- **receipt**: the unacked record and the owner claim are one script (`RECEIVE`), written
  to Redis as the message arrives but not waited for: its reply is read (`settle`) only
  when the task has run, before its result is stored, and by then it is in the socket.
  What a SIGKILL can lose is unchanged: the script's bytes leave the worker at the moment
  kombu's pipeline left it (a killed process's sent bytes still reach Redis); a worker
  killed before that has taken a message nobody else can see, as with kombu, and the
  gateway's watch (services/redelivery.py) sends it again.
- **ack with the result**: when the result backend is the broker's Redis (the default: one
  URL), the result script also removes the message from `unacked` and `unacked_index`, in
  the same atomic step (workers/results.py); kombu's ack that follows then only forgets the
  message in memory. A result is never stored without its message being acked, and never
  acked without its result stored.

Only genserve's own online task messages take this path; anything else (batch-job chunks,
other tasks) goes through kombu's code unchanged. Prefork children store results in
another process than the one that received: there `tag_of` knows nothing and the ack stays
kombu's.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any

from genserve.protocol import TASK_NAME

log = logging.getLogger(__name__)

# KEYS: unacked_index, unacked, owners (or "" without failover). ARGV: tag, delivery time,
# the message as kombu stores it, holder id, alive-key prefix.
# 1: recorded, and owned by this holder (or no failover); 0: recorded, but another live holder
# owns it (a second copy: the caller must not answer it, see workers/failover.py).
RECEIVE = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if KEYS[3] == '' then return 1 end
local holder = redis.call('HGET', KEYS[3], ARGV[1])
if holder and holder ~= ARGV[4] and redis.call('EXISTS', ARGV[5] .. holder) == 1 then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
return 1
"""

_lock = threading.RLock()
_state: dict[str, Any] = {"owners": "", "alive": "", "holder": "", "ack_with_result": False, "pid": 0}
_pending: deque[tuple[Any, str, str]] = deque()  # (connection, task id, tag), replies not read yet
# task id -> (delivery tag, unacked_index key, unacked key), of messages received, not answered
_tags: dict[str, tuple[str, str, str]] = {}
_task_of: dict[str, str] = {}  # delivery tag -> task id, the same entries the other way
_duplicates: set[str] = set()  # task ids whose copy another live worker runs
_acked: set[str] = set()  # delivery tags the result script acked already
_connections: dict[int, Any] = {}  # id(QoS) -> its dedicated connection for receipts


def configure_failover(owners: str, alive: str, holder: str) -> None:
    """Claim ownership of each message in its receipt (workers/failover.py's keys and id)."""
    _state.update(owners=owners, alive=alive, holder=holder)


def ack_with_result(enabled: bool) -> None:
    """Let the result script ack (the result backend is the broker's Redis and database)."""
    _state["ack_with_result"] = enabled


def install() -> None:
    """Patch kombu's Redis QoS.append and QoS.ack once per process (idempotent)."""
    from kombu.transport import redis as kombu_redis
    from kombu.transport import virtual

    append, ack = kombu_redis.QoS.append, kombu_redis.QoS.ack
    if getattr(append, "genserve_receipts", False):
        return
    _state["pid"] = os.getpid()  # a forked child shares the connection's socket: not for it

    def patched_append(self: Any, message: Any, delivery_tag: Any) -> None:
        task_id = _online_task_id(message)
        if task_id is None or self.channel.global_keyprefix or os.getpid() != _state["pid"]:
            return append(self, message, delivery_tag)
        tag = str(delivery_tag)
        delivery = message.delivery_info
        from kombu.utils.json import dumps

        stored = dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        with _lock:
            _read_ready()
            try:
                connection = _connection(self)
                connection.send_command("EVAL", RECEIVE, 3, self.unacked_index_key, self.unacked_key,
                                        _state["owners"], tag, time.time(), stored, _state["holder"],
                                        _state["alive"])
            except Exception as exc:  # a broken dedicated connection: kombu's own (waited) path
                log.warning("receipt of message %s not sent (%s); recording it the blocking way", tag, exc)
                _broken(_connections.get(id(self)), exc)
                return append(self, message, delivery_tag)
            _pending.append((connection, task_id, tag))
            _tags[task_id] = (tag, self.unacked_index_key, self.unacked_key)
            _task_of[tag] = task_id
        virtual.QoS.append(self, message, delivery_tag)

    def patched_ack(self: Any, delivery_tag: Any) -> None:
        with _lock:
            acked = str(delivery_tag) in _acked
            _acked.discard(str(delivery_tag))
            _tags.pop(_task_of.pop(str(delivery_tag), ""), None)  # answered without the script
        if acked:  # the result script removed it from unacked already
            virtual.QoS.ack(self, delivery_tag)
        else:
            ack(self, delivery_tag)

    restore = kombu_redis.QoS.restore_unacked

    def patched_restore_unacked(self: Any, client: Any = None) -> Any:
        with _lock:  # shutdown restores what was received: its receipts must be in Redis first
            _read_all()
        return restore(self, client)

    patched_append.genserve_receipts = True  # type: ignore[attr-defined]
    kombu_redis.QoS.append = patched_append
    kombu_redis.QoS.ack = patched_ack
    kombu_redis.QoS.restore_unacked = patched_restore_unacked


def settle(task_id: str) -> bool:
    """Read the receipts sent so far; True when this task's message is a second copy that
    another live worker runs (forgotten then: the caller skips it)."""
    if os.getpid() != _state["pid"]:
        return False
    with _lock:
        _read_all()
        if task_id in _duplicates:
            _duplicates.discard(task_id)
            return True
    return False


def received(task_id: str) -> bool:
    """Whether this task's message took the receipt path (its owner claim is in the receipt)."""
    return task_id in _tags


def take_tag(task_id: str) -> tuple[str, str, str] | None:
    """(delivery tag, unacked_index, unacked) of a received task whose result the result
    script may ack, once; None where kombu acks (no receipt, another process, not enabled)."""
    if not _state["ack_with_result"] or os.getpid() != _state["pid"]:
        return None
    with _lock:
        receipt = _tags.pop(task_id, None)
        if receipt is not None:
            _task_of.pop(receipt[0], None)
        return receipt


def acked_by_result(tag: str) -> None:
    """The result script acked `tag`: kombu's ack that follows only forgets it in memory."""
    with _lock:
        _acked.add(tag)


def _online_task_id(message: Any) -> str | None:
    headers = getattr(message, "headers", None) or {}
    if headers.get("task") != TASK_NAME:
        return None
    task_id = headers.get("id")
    return str(task_id) if task_id else None


def _connection(qos: Any) -> Any:
    connection = _connections.get(id(qos))
    if connection is None:
        connection = qos.channel.client.connection_pool.make_connection()
        connection.connect()
        _connections[id(qos)] = connection
    return connection


def _read_ready() -> None:
    """Read the replies that have arrived, without waiting (keeps the backlog short)."""
    while _pending:
        connection = _pending[0][0]
        try:
            if not connection.can_read(timeout=0):
                return
        except Exception as exc:
            _broken(connection, exc)
            continue
        _read_one()


def _read_all() -> None:
    while _pending:
        _read_one()


def _read_one() -> None:
    connection, task_id, tag = _pending[0]
    try:
        owned = connection.read_response()
    except Exception as exc:
        _broken(connection, exc)
        return
    _pending.popleft()
    if isinstance(owned, Exception):  # a script error: Redis did not record it
        log.warning("receipt of message %s failed in Redis: %s", tag, owned)
    elif not owned:
        log.warning("message %s (task %s) is run by another live worker: this copy is skipped", tag, task_id)
        _duplicates.add(task_id)


def _broken(connection: Any, exc: Exception) -> None:
    """Replies lost with their connection: whether those messages were recorded is unknown
    (a worker that dies now leaves them to the gateway's watch); each runs as owned."""
    if connection is None:
        return
    kept = [entry for entry in _pending if entry[0] is not connection]
    if len(kept) < len(_pending):
        log.warning("receipts connection lost (%s): %d message(s) may be unrecorded", exc, len(_pending) - len(kept))
    _pending.clear()
    _pending.extend(kept)
    for key, value in list(_connections.items()):
        if value is connection:
            del _connections[key]
    try:
        connection.disconnect()
    except Exception:
        pass

