"""A fix for kombu's Redis transport when the broker goes away under a busy worker.

When the connection drops while messages are unacked, Celery closes the channel and kombu
restores them on that channel (`QoS.restore_unacked`). The connection is already released
then, so kombu fails with `AttributeError: 'NoneType' object has no attribute 'hostname'`,
which Celery treats as unrecoverable: the worker shuts down instead of reconnecting, and
consumption never resumes after Redis comes back (tests/services/test_redis_restart.py).

Nothing can be restored over a lost connection anyway: the messages are still in Redis's
`unacked` hash, where the visibility scan (and workers/failover.py for dead workers) puts them
back on their queues. So the restore is skipped with a warning and the worker reconnects.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def tolerate_restore_on_a_lost_connection() -> None:
    """Patch kombu's Redis QoS.restore_unacked once per process (idempotent)."""
    from kombu.transport import redis as kombu_redis

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

    restore_unacked.genserve_patched = True  # type: ignore[attr-defined]
    kombu_redis.QoS.restore_unacked = restore_unacked
