"""Enqueueing a job's chunks: Celery messages on the model's bulk queue, or the embedded pool.

The distributed publisher writes the same messages as Celery's `send_task` (Celery builds
them, `app.amqp.as_task_v2`), LPUSHed in pipelines of a thousand: a 10^8-sample job is about
50,000 chunk messages, and they are in Redis (with its append-only file) before SubmitJob
answers, so nothing depends on the gateway afterwards.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from genserve.protocol import CHUNK_TASK_NAME, ChunkPayload

log = logging.getLogger(__name__)

PIPELINE = 1000  # messages per round trip

# KEYS: queue; ARGV: a string only the job's messages hold. Rebuilds the list without them
# (one pass, atomic: no publish or consume interleaves); returns how many were removed.
_WITHDRAW = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local kept = {}
for _, item in ipairs(items) do
  if not string.find(item, ARGV[1], 1, true) then kept[#kept + 1] = item end
end
local removed = #items - #kept
if removed > 0 then
  redis.call('DEL', KEYS[1])
  for i = 1, #kept, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(kept, i, math.min(i + 999, #kept)))
  end
end
return removed
"""


# KEYS: queue, kombu's unacked hash, its index; ARGV: the job's marker, a cutoff time. The
# chunk numbers of the job's messages waiting in the queue, or held (unacked) by a worker
# whose lease is newer than the cutoff (an older one belongs to a dead worker that nothing
# restored: kombu's restore mutex can be left held by a worker killed mid-restore).
_PENDING = """
local found = {}
local function chunk_of(item)
  local s, e = string.find(item, ARGV[1], 1, true)
  if s then return string.match(item, "^(%d+)", e + 1) end
end
for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local c = chunk_of(item)
  if c then found[#found + 1] = c end
end
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  local c = chunk_of(held[i + 1])
  if c then
    local leased = redis.call('ZSCORE', KEYS[3], held[i])
    if leased and tonumber(leased) >= tonumber(ARGV[2]) then found[#found + 1] = c end
  end
end
return found
"""


def _marker(job_id: str) -> str:
    return f"<job {job_id} chunk "  # in each message's argsrepr header (plain JSON)


class CeleryChunkPublisher:
    def __init__(self, app: Any, url: str) -> None:
        import redis
        from kombu.serialization import dumps

        self._app = app
        self._client = redis.Redis.from_url(url)
        self._dumps = dumps
        self._origin = f"genserve-gateway@{socket.gethostname()}:{os.getpid()}"
        self._withdraw = self._client.register_script(_WITHDRAW)
        self._pending = self._client.register_script(_PENDING)

    def encode(self, queue: str, payload: ChunkPayload) -> bytes:
        task_id = uuid.uuid4().hex
        message = self._app.amqp.as_task_v2(
            task_id, CHUNK_TASK_NAME, args=[dict(payload)], kwargs={}, origin=self._origin,
            argsrepr=f"[{_marker(payload['job'])}{payload['chunk']}>]", kwargsrepr="{}")
        content_type, encoding, body = self._dumps(message.body, serializer="msgpack")
        properties = dict(message.properties)
        properties.update(delivery_mode=2, priority=0, body_encoding="base64", delivery_tag=uuid.uuid4().hex,
                          delivery_info={"exchange": "", "routing_key": queue})
        return json.dumps({"body": base64.b64encode(body).decode(), "content-encoding": encoding,
                           "content-type": content_type, "headers": message.headers,
                           "properties": properties}).encode()

    def publish(self, queue: str, chunks: list[ChunkPayload]) -> None:
        """Blocking (the service calls it on a thread); chunks are consumed in this order."""
        for i in range(0, len(chunks), PIPELINE):
            pipe = self._client.pipeline(transaction=False)
            for payload in chunks[i : i + PIPELINE]:
                pipe.lpush(queue, self.encode(queue, payload))
            pipe.execute()

    def withdraw(self, queue: str, job_id: str) -> int:
        """Take a job's pending chunk messages off its queue (messages a worker holds stay:
        it skips them when it sees the state)."""
        return int(self._withdraw(keys=[queue], args=[_marker(job_id)]))

    def pending(self, queue: str, job_id: str, stale_s: float = 60.0) -> set[int] | None:
        """Chunks of the job that have a message: waiting in `queue`, or held by a worker that
        took or renewed it within `stale_s`."""
        import time

        keys = [queue, "unacked", "unacked_index"]
        return {int(c) for c in self._pending(keys=keys, args=[_marker(job_id), time.time() - stale_s])}

    def close(self) -> None:
        self._client.close()


class LocalChunkPublisher:
    """Embedded mode: chunks run on this process's threads, through the same ChunkRunner."""

    def __init__(self, run: Callable[[dict[str, Any]], str], threads: int = 1) -> None:
        self._run = run
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="genserve-job")

    def publish(self, queue: str, chunks: list[ChunkPayload]) -> None:
        for payload in chunks:
            self._pool.submit(self._one, dict(payload))

    def withdraw(self, queue: str, job_id: str) -> int:
        return 0  # queued chunks see the cancelled state and return at once

    def pending(self, queue: str, job_id: str, stale_s: float = 60.0) -> set[int] | None:
        return None  # unknown: the pool holds them; nothing is lost in this process

    def _one(self, payload: dict[str, Any]) -> None:
        try:
            if self._run(payload) == "retry":
                self._pool.submit(self._one, payload)
        except Exception:
            log.exception("chunk %s of job %s failed in the embedded runner", payload["chunk"], payload["job"])

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
