"""Where the dispatcher's batches go: one backend per deployment mode, the same worker code behind both.

- `celery.CeleryBackend` (distributed): a Celery task message on the model's queue, the result
  read back from the Redis result backend's publish.
- `local.LocalBackend` (embedded): no broker; the worker's code on a thread pool in the gateway.
"""

from __future__ import annotations

from typing import Any, Protocol

from genserve.protocol import TaskResult


class Backend(Protocol):
    """Runs one batch (a task message's worth of requests) and reports its health.

    `streams` is the gateway's end of token streams in that mode (services/streams.py).
    """

    streams: Any

    # samples: the batch's total (images, rows), for backends that choose where it runs by size
    async def run(self, ref: str, queue: str, op: str, requests: list[dict[str, Any]], deadline: float,
                  samples: int = 0) -> TaskResult: ...
    async def check_capacity(self, queue: str) -> None: ...
    # this gateway's share of the worker processes consuming the queue (0: unknown, no queue)
    def consumers(self, queue: str) -> int: ...
    async def ping(self) -> bool: ...
    async def close(self) -> None: ...
