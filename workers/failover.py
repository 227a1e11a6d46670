"""Worker failover: a dead worker's messages go back to their queue within seconds.

kombu's Redis transport keeps every message a worker took in the `unacked` hash until it is
acked, and its restore scan puts one back on its queue only once its delivery time
(`unacked_index`) is older than the visibility timeout (30 s by default; live workers renew
it, workers/leases.py). A SIGKILLed worker's batch therefore waited that long, and clients
with shorter deadlines got DEADLINE_EXCEEDED although a live worker sat idle.

Here each worker process writes itself as the owner of each message it receives into one
`owners` hash (tag -> holder id; one HSET as the message arrives, repeated by every beat) and
beats: every `interval` seconds it sets its `alive` key (TTL `ttl_s`). Every worker also sweeps: an owner entry whose holder's `alive` key
is gone belongs to a dead worker, so the sweeper claims it (a Lua script: still that owner,
holder still dead -> HDEL, atomically, so only one sweeper wins) and restores the message with
kombu's own `restore_by_tag` (one WATCH/MULTI transaction: HGET unacked, HDEL, ZREM, RPUSH to
the queue's consuming end, so it is taken next). Entries whose message was acked are dropped.

Why no work runs twice at once: a message is restored only while its owner is dead; a
redelivered message is taken by a live worker that writes itself as the new owner at its next
beat (`interval` << `ttl_s`). A worker that stops cleanly removes its `alive` key and owner
entries after Celery has restored its prefetched messages, so nothing is restored behind it;
whatever it left is still covered by the visibility timeout.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any, Callable

from genserve.protocol import consumers_key
from genserve.workers import receipts

log = logging.getLogger(__name__)

UNACKED = "unacked"  # kombu's default `unacked_key`
UNACKED_INDEX = "unacked_index"  # kombu's default `unacked_index_key`: tag -> delivery time
ORPHAN = "orphan"  # the owner a sweeper writes while it restores an ownerless message

# KEYS: owners hash; ARGV: tag, this holder's id, the alive-key prefix.
# 1: this holder owns the tag now; 0: another holder that is alive owns it (a duplicate copy).
OWN = """
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if holder and holder ~= ARGV[2] and redis.call('EXISTS', ARGV[3] .. holder) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: owners hash, alive key of the dead holder; ARGV: tag, holder id.
# 1: claimed (the caller restores it); 0: not this holder's any more, or the holder is alive.
CLAIM = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""


def keys(prefix: str) -> tuple[str, str]:
    """(owners hash, alive key prefix) of the workers behind queue prefix `prefix`."""
    return f"{prefix}:failover:owners", f"{prefix}:failover:alive:"


class Failover:
    """This process's heartbeat, and the sweep that restores dead holders' messages."""

    def __init__(self, client: Any, prefix: str, held: Callable[[], list[str]],
                 restore: Callable[[str], None], ttl_s: float = 5.0, holder: str | None = None,
                 queues: Callable[[], list[str]] | None = None, processes: int = 1) -> None:
        self._client = client
        self._queues = queues or (lambda: [])  # online queues consumed now, announced each beat
        self._processes = processes  # processes behind this holder that run its tasks
        self._held = held  # tags of the messages this process holds (LeaseKeeper.held)
        self._restore = restore  # tag -> back on its queue (kombu's restore_by_tag)
        self.prefix = prefix
        self.owners, self._alive = keys(prefix)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.ttl_s = float(ttl_s)
        self.interval_s = max(0.1, self.ttl_s / 5)  # several beats per TTL: one late beat is no death
        self._claim = client.register_script(CLAIM)
        self._own = client.register_script(OWN)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="genserve-failover", daemon=True)

    def start(self) -> Failover:
        self.beat()
        self._thread.start()
        return self

    def own(self, tag: str) -> bool:
        """Owner of `tag` now, as the message arrives (a beat could come too late: a worker
        killed between receiving a message and its next beat would otherwise leave it to the
        visibility timeout). False: another worker that is alive owns it, so this is a second
        copy of a message being run there (the gateway re-sent it while that worker was
        stalled between taking it and recording it, or a restore scan re-queued it): the
        caller must not run it."""
        return bool(self._own(keys=[self.owners], args=[tag, self.holder, self._alive]))

    def beat(self) -> None:
        """One heartbeat: alive for `ttl_s` more, owner of every message held (unless another
        live worker owns it: a duplicate copy held here only until it is skipped)."""
        tags = self._held()
        pipe = self._client.pipeline(transaction=True)
        pipe.set(self._alive + self.holder, 1, px=int(self.ttl_s * 1000))
        for tag in tags:
            self._own(keys=[self.owners], args=[tag, self.holder, self._alive], client=pipe)
        now = time.time()
        for queue in self._queues():  # a consumer of each queue until one TTL from now
            pipe.zadd(consumers_key(queue), {self._member: now + self.ttl_s})
            pipe.zremrangebyscore(consumers_key(queue), "-inf", now - 60)  # long-dead ones
        pipe.execute()

    @property
    def _member(self) -> str:
        return f"{self.holder}|{self._processes}"

    def sweep(self) -> list[str]:
        """Restore every message whose holder is dead, and every orphan; returns the restored tags."""
        return self._sweep_dead() + self.sweep_orphans()

    def sweep_orphans(self, max_tags: int = 100) -> list[str]:
        """Restore messages of this prefix's queues that sit in `unacked` with no owner for
        longer than two TTLs: their worker died between kombu recording the message
        (HSET unacked) and Celery announcing it (task_received, where it is owned), so no
        holder will ever be found dead for them and they would wait for the visibility
        timeout (seen as calls that waited to their deadline in the soak). Every worker of a
        prefix owns what it receives, so a live one's message is never ownerless that long."""
        cutoff = time.time() - max(2.0, 2 * self.ttl_s)
        tags = [t.decode() for t in self._client.zrangebyscore(UNACKED_INDEX, "-inf", cutoff, start=0, num=max_tags)]
        if not tags:
            return []
        pipe = self._client.pipeline(transaction=False)
        for tag in tags:
            pipe.hexists(self.owners, tag)
        unowned = [tag for tag, owned in zip(tags, pipe.execute()) if not owned]
        restored = []
        for tag, raw in zip(unowned, self._client.hmget(UNACKED, unowned) if unowned else []):
            try:
                routing_key = str(json.loads(raw)[2]) if raw is not None else ""
            except (ValueError, IndexError, TypeError):
                continue
            if not routing_key.startswith(self.prefix + "."):
                continue  # another deployment's (or app's) message on the same Redis
            # HSETNX: one sweeper wins; the worker that receives the restored message owns it
            # over the tombstone (ORPHAN is never alive), and a failed restore is retried by
            # the dead-holder pass
            if self._client.hsetnx(self.owners, tag, ORPHAN):
                self._restore(tag)
                restored.append(tag)
        if restored:
            log.warning("restored %d ownerless message(s) (their worker died as it received them): %s",
                        len(restored), ", ".join(restored))
        return restored

    def _sweep_dead(self) -> list[str]:
        owners = {k.decode(): v.decode() for k, v in self._client.hgetall(self.owners).items()}
        if not owners:
            return []
        holders = sorted(set(owners.values()))
        pipe = self._client.pipeline(transaction=False)
        for holder in holders:
            pipe.exists(self._alive + holder)
        dead = {h for h, alive in zip(holders, pipe.execute()) if not alive}
        restored = []
        for tag, holder in owners.items():
            if holder in dead and self._claim(keys=[self.owners, self._alive + holder], args=[tag, holder]):
                if self._client.hexists(UNACKED, tag):
                    self._restore(tag)
                    restored.append(tag)
        if restored:
            log.warning("restored %d message(s) of dead worker(s) %s: %s", len(restored),
                        ", ".join(sorted({owners[t] for t in restored})), ", ".join(restored))
        return restored

    def close(self) -> None:
        """Stop beating and forget this holder (a clean exit: nothing of ours to restore)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        try:
            mine = [k for k, v in self._client.hgetall(self.owners).items() if v.decode() == self.holder]
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(self._alive + self.holder)
            for queue in self._queues():
                pipe.zrem(consumers_key(queue), self._member)
            if mine:
                pipe.hdel(self.owners, *mine)
            pipe.execute()
        except Exception as exc:  # Redis away at exit: the entries expire into a harmless sweep
            log.warning("failover: could not unregister %s: %s", self.holder, exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.beat()
                self.sweep()
            except Exception as exc:  # Redis away: the next pass tries again
                log.warning("failover heartbeat/sweep failed: %s", exc)


def kombu_restorer(app: Any) -> Callable[[str], None]:
    """tag -> kombu's atomic restore of that unacked message to its queue, on a connection of
    its own (used by the failover thread only)."""
    state: dict[str, Any] = {}

    def restore(tag: str) -> None:
        if "channel" not in state:
            connection = app.connection_for_write()
            connection.ensure_connection(max_retries=3)
            state["connection"], state["channel"] = connection, connection.default_channel
        try:
            state["channel"].qos.restore_by_tag(tag, leftmost=False)
        except Exception:
            state.clear()  # reconnect on the next call
            raise

    return restore


DUPLICATES: set[str] = set()  # ids of received tasks another live worker runs (solo and threads pools)


def take_duplicate(task_id: str) -> bool:
    """Whether this received task is a second copy that must not run (forgets it)."""
    if task_id in DUPLICATES:
        DUPLICATES.discard(task_id)
        return True
    return False


def install(app: Any, broker_url: str, prefix: str, held: Callable[[], list[str]], ttl_s: float,
            queues: Callable[[], list[str]] | None = None, processes: int = 1) -> Failover:
    """Start this worker process's heartbeat and sweep (genserve worker); `queues` are the
    online queues it consumes now, announced with `processes` as their consumers."""
    import redis
    from celery.signals import task_received

    failover = Failover(redis.Redis.from_url(broker_url), prefix, held, kombu_restorer(app), ttl_s,
                        queues=queues, processes=processes).start()
    receipts.configure_failover(*keys(prefix), failover.holder)

    def received(sender: Any = None, request: Any = None, **_: Any) -> None:
        tag = getattr(getattr(request, "message", None), "delivery_tag", None)
        if receipts.received(str(getattr(request, "id", ""))):
            return  # claimed in its receipt (workers/receipts.py), read when it has run
        if tag is not None:
            try:
                if not failover.own(str(tag)):
                    log.warning("message %s (task %s) is run by another live worker: this copy is skipped",
                                tag, getattr(request, "id", "?"))
                    DUPLICATES.add(str(getattr(request, "id", "")))
            except Exception as exc:  # Redis away: the next beat owns it
                log.warning("failover: could not own message %s: %s", tag, exc)

    task_received.connect(received, weak=False, dispatch_uid="genserve-failover")
    return failover
