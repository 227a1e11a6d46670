"""Message leases: a task that runs longer than the visibility timeout is not handed out twice.

Celery on Redis acknowledges late (kombu's Redis transport): a message a worker took stays in
the `unacked` hash, its delivery time in the `unacked_index` sorted set, and any worker's
restore scan puts it back on its queue once that time is older than the visibility timeout.
That is what makes a crash lose nothing (tests/services/test_reliability.py), but on its own
it also re-queues a message whose task is merely slow: a 600-token generation, a batch of
thousands of images. Another worker (or, with the threads pool, the same one) would then run
it a second time.

So a worker renews the lease of every message it holds: each `interval` seconds one
pipelined `ZADD unacked_index XX <now> <tag>` per held message moves its delivery time to
now. XX never re-adds a message that has been acked meanwhile; a tag no longer in the index
(acked, or restored by a scan) is forgotten. A worker that dies stops renewing, and its
messages come back one visibility timeout later, as before. A lease is not renewed past the
task's expiry (its deadline) plus one visibility timeout, so a task stuck forever does not
hold its message forever.

The tags come from Celery's `task_received` signal, in the process that consumes the message
(the parent with the prefork pool), so every pool and every publisher is covered.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

UNACKED_INDEX = "unacked_index"  # kombu's default `unacked_index_key`


class LeaseKeeper:
    """Renews the `unacked_index` entries of the messages this process holds."""

    def __init__(self, client: Any, visibility_timeout_s: float, key: str = UNACKED_INDEX) -> None:
        self._client = client
        self._key = key
        self._visibility = float(visibility_timeout_s)
        self.interval_s = max(0.2, self._visibility / 3)
        self._held: dict[str, float] = {}  # tag -> renew until (wall clock)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="genserve-leases", daemon=True)
        self._thread.start()

    def hold(self, tag: str, expires: float | None = None) -> None:
        """Keep renewing `tag` until it is acked, or until `expires` + one visibility timeout."""
        until = (expires if expires is not None else time.time() + 3600) + self._visibility
        with self._lock:
            self._held[tag] = until

    def release(self, tag: str) -> None:
        """Stop renewing `tag`: its task has finished. If its ack then fails (the broker
        connection was lost meanwhile), the message comes back one visibility timeout later
        instead of being renewed until its deadline (an hour for messages without one)."""
        with self._lock:
            self._held.pop(tag, None)

    def held(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def renew(self) -> int:
        """One renewal pass; returns how many leases were moved to now."""
        now = time.time()
        with self._lock:
            for tag in [t for t, until in self._held.items() if until < now]:
                log.warning("message %s held past its deadline: no longer renewing its lease", tag)
                del self._held[tag]
            tags = list(self._held)
        if not tags:
            return 0
        pipe = self._client.pipeline(transaction=False)
        for tag in tags:
            pipe.zadd(self._key, {tag: now}, xx=True, ch=True)
        changed = pipe.execute()
        gone = [tag for tag, n in zip(tags, changed) if not n]
        with self._lock:
            for tag in gone:
                self._held.pop(tag, None)
        return len(tags) - len(gone)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.renew()
            except Exception as exc:  # Redis away: the next pass tries again
                log.warning("renewing message leases failed: %s", exc)


def _expiry(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


def install(broker_url: str, visibility_timeout_s: float, key: str = UNACKED_INDEX) -> LeaseKeeper:
    """Start renewing the lease of every message this worker process receives."""
    import redis
    from celery.signals import task_postrun, task_received

    keeper = LeaseKeeper(redis.Redis.from_url(broker_url), visibility_timeout_s, key)

    tags: dict[str, str] = {}  # task id -> delivery tag, to release when the task finishes

    def received(sender: Any = None, request: Any = None, **_: Any) -> None:
        tag = getattr(getattr(request, "message", None), "delivery_tag", None)
        if tag is not None:
            keeper.hold(str(tag), _expiry(getattr(request, "expires", None)))
            tags[str(getattr(request, "id", ""))] = str(tag)

    def finished(sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        # solo and threads pools: the task ran in this process (prefork children have no keeper)
        tag = tags.pop(str(task_id), None)
        if tag is not None:
            keeper.release(tag)

    task_received.connect(received, weak=False, dispatch_uid="genserve-leases")
    task_postrun.connect(finished, weak=False, dispatch_uid="genserve-leases-release")
    return keeper
