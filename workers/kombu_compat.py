"""Fixes for kombu's Redis transport when the broker goes away under a busy worker.

When the connection drops while messages are unacked, Celery closes the channel and kombu
restores them on that channel (`QoS.restore_unacked`). The connection is already released
then, so kombu fails with `AttributeError: 'NoneType' object has no attribute 'hostname'`,
which Celery treats as unrecoverable: the worker shuts down instead of reconnecting, and
consumption never resumes after Redis comes back (tests/services/test_redis_restart.py).

Nothing can be restored over a lost connection anyway: the messages are still in Redis's
`unacked` hash, where the visibility scan (and workers/failover.py for dead workers) puts them
back on their queues. So the restore is skipped with a warning and the worker reconnects.

The same happens to an ack: a task that finishes after the connection was released acks on a
channel whose connection is None (`'NoneType' object has no attribute 'client'`), and Celery
shuts the worker down (seen in 1 of 3 runs of the in-flight Redis-restart test). The tag is
kept and its ack (ZREM + HDEL) sent with the next ack that gets through, after the
reconnect; until then the message stays in `unacked`, and if nothing else is acked within a
visibility timeout it is restored and runs once more (at least once; seeded work gives the
same bytes).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


_unsent_acks: set[str] = set()  # tags whose ack failed on a released connection
_unsent_lock = threading.Lock()


def tolerate_restore_on_a_lost_connection() -> None:
    """Patch kombu's Redis QoS.restore_unacked and QoS.ack once per process (idempotent)."""
    from kombu.transport import redis as kombu_redis
    from kombu.transport import virtual

    original = kombu_redis.QoS.restore_unacked
    if getattr(original, "genserve_patched", False):
        return

    def restore_unacked(self: Any, client: Any = None) -> Any:
        try:
            return original(self, client)
        except AttributeError as exc:  # the channel's connection was released: the broker is gone
            log.warning("broker connection lost: %d unacknowledged message(s) stay in Redis and are "
                        "restored by the visibility scan (%s)", len(self._delivered), exc)
            self._delivered.clear()
            return None

    def ack(self: Any, delivery_tag: Any) -> None:
        with _unsent_lock:
            late = list(_unsent_acks)
        try:
            pipe = self._remove_from_indices(delivery_tag)
            for tag in late:
                self._remove_from_indices(tag, pipe)
            pipe.execute()
        except AttributeError as exc:  # the channel's connection was released: the broker is gone
            log.warning("broker connection lost: the ack of message %s is sent after the reconnect (%s)",
                        delivery_tag, exc)
            with _unsent_lock:
                _unsent_acks.add(delivery_tag)
        else:
            if late:
                log.warning("acked %d message(s) whose ack the lost connection had kept", len(late))
                with _unsent_lock:
                    _unsent_acks.difference_update(late)
        virtual.QoS.ack(self, delivery_tag)  # this channel forgets it either way

    restore_unacked.genserve_patched = True  # type: ignore[attr-defined]
    kombu_redis.QoS.restore_unacked = restore_unacked
    kombu_redis.QoS.ack = ack
