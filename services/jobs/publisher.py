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


class CeleryChunkPublisher:
    def __init__(self, app: Any, url: str) -> None:
        import redis
        from kombu.serialization import dumps

        self._app = app
        self._client = redis.Redis.from_url(url)
        self._dumps = dumps
        self._origin = f"genserve-gateway@{socket.gethostname()}:{os.getpid()}"

    def encode(self, queue: str, payload: ChunkPayload) -> bytes:
        task_id = uuid.uuid4().hex
        message = self._app.amqp.as_task_v2(
            task_id, CHUNK_TASK_NAME, args=[dict(payload)], kwargs={}, origin=self._origin,
            argsrepr=f"[<job {payload['job']} chunk {payload['chunk']}>]", kwargsrepr="{}")
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

    def _one(self, payload: dict[str, Any]) -> None:
        try:
            if self._run(payload) == "retry":
                self._pool.submit(self._one, payload)
        except Exception:
            log.exception("chunk %s of job %s failed in the embedded runner", payload["chunk"], payload["job"])

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
