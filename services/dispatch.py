"""The dispatcher: a validated request -> its (model, op) batcher -> the backend -> its outcome.

It owns one `Batcher` per (model version, op) (services/batcher.py, the one home of gateway-side
grouping), refuses work past the queue-depth and pending limits, and turns a failed outcome
into the matching error. Where batches go is the backend's business (services/backends/).
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from genserve.errors import DeadlineExceededError, from_code
from genserve.logs import request_id
from genserve.protocol import UNGROUPED_OPS, Op, Outcome, TaskResult
from genserve.repository import Manifest
from genserve.services.backends import Backend
from genserve.services.batcher import Batcher, BatcherStats
from genserve.services.metrics import GatewayMetrics
from genserve.settings import Settings


def default_backend(settings: Settings) -> Backend:
    """Embedded without a broker URL, Celery with one (imported lazily: each pulls in its side)."""
    if settings.embedded:
        from genserve.services.backends.local import LocalBackend

        return LocalBackend(settings)
    from genserve.services.backends.celery import CeleryBackend

    return CeleryBackend(settings)


class Dispatcher:
    """Routes validated requests to a per-(model, op) batcher and awaits their outcomes."""

    def __init__(self, settings: Settings, backend: Backend | None = None, metrics: GatewayMetrics | None = None) -> None:
        self.settings = settings
        self.backend: Backend = backend or default_backend(settings)
        self.metrics = metrics or GatewayMetrics()  # services/metrics.py: what the batchers report
        self._batchers: dict[tuple[str, str], Batcher] = {}
        self._submitting = 0  # submit() calls under way, across models

    def batchers(self) -> dict[tuple[str, str], Batcher]:
        """(model version, op) -> its batcher, for the metrics' gauges."""
        return dict(self._batchers)

    def stats(self, ref: str) -> list[BatcherStats]:
        return [b.stats for (r, _), b in self._batchers.items() if r == ref]

    async def submit(self, manifest: Manifest, op: Op, request: dict[str, Any], samples: int, timeout_s: float) -> Outcome:
        """The worker's outcome for one request; raises the mapped error on failure."""
        queue = self.settings.queue_for(manifest.name)
        await self.backend.check_capacity(queue)
        if request_id.get():  # the RPC's id, for the worker's log lines (genserve/logs.py)
            request = {**request, "request_id": request_id.get()}
        batcher = self._batcher(manifest.ref, queue, op)
        batcher.max_inflight = self.inflight_limit(queue)
        self._submitting += 1
        try:
            outcome = await self._alone(batcher, manifest.ref, op, request, samples)
            if outcome is None:
                future = batcher.submit(request, samples, time.time() + timeout_s)
                if not await _until(future, timeout_s):
                    raise DeadlineExceededError(
                        f"no result from {manifest.ref} within the deadline ({timeout_s:.3f} s); "
                        "its workers may be busy or down"
                    )
                outcome = future.result()
        finally:
            self._submitting -= 1
        if not outcome["ok"]:
            raise from_code(outcome["code"], outcome["message"])
        return outcome

    async def _alone(self, batcher: Batcher, ref: str, op: Op, request: dict[str, Any], samples: int) -> Outcome | None:
        """A lone request that the backend runs on the event loop (embedded mode, small, its
        model loaded) is run here and now, without the batcher's future, task and loop
        iterations (about 50 us of the gateway's CPU per request, measured in-process). One
        yield first lets every RPC that is ready reach this point: if any did, or anything
        is queued or in flight, the request goes through the batcher and they group. None:
        not run here."""
        inline = getattr(self.backend, "inline", None)
        if inline is None or not batcher.idle or self._submitting != 1 or not inline(ref, str(op), samples):
            return None
        await asyncio.sleep(0)
        if self._submitting != 1 or not batcher.idle:
            return None
        return batcher.run_alone(request, samples, functools.partial(self.backend.run_inline, ref, str(op)))

    def inflight_limit(self, queue: str) -> int:
        """Messages of one batcher in flight at once: `batching.max_inflight_batches`, or with
        0 (auto) one per worker process consuming the queue, so that every worker has a batch,
        shared among the gateways sending to it (with none known: 1). One more than that, waiting in Redis for the first worker to
        finish, measured no better with one worker: batches get smaller and each costs the
        worker more (bench notes in the README)."""
        configured = self.settings.batching.max_inflight_batches
        if configured > 0:
            return configured
        return min(max(1, self.backend.consumers(queue)), self.AUTO_INFLIGHT_MAX)

    AUTO_INFLIGHT_MAX = 64  # auto never goes past this many messages in flight

    def _batcher(self, ref: str, queue: str, op: Op) -> Batcher:
        key = (ref, str(op))
        if key not in self._batchers:
            async def send(requests: list[dict[str, Any]], deadline: float, samples: int) -> TaskResult:
                return await self.backend.run(ref, queue, str(op), requests, deadline, samples)

            batching = self.settings.batching
            if op in UNGROUPED_OPS:
                batching = batching.model_copy(update={"enabled": False})
            self._batchers[key] = Batcher(f"{ref}/{op}", send, batching,
                                          self.settings.gateway.max_pending_requests,
                                          observer=self.metrics.observer(ref, str(op)))
        return self._batchers[key]

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self._batchers.values()))
        await self.backend.close()


async def _until(future: asyncio.Future, timeout_s: float) -> bool:
    """Await `future` itself (no `wait_for` around it: one turn of the event loop less per
    answer); at the timeout it is cancelled (the batcher frees its place) and False returned.
    A cancellation of the caller propagates as usual."""
    expired = False

    def expire() -> None:
        nonlocal expired
        if not future.done():
            expired = True
            future.cancel()

    timer = asyncio.get_running_loop().call_later(timeout_s, expire)
    try:
        await future
    except asyncio.CancelledError:
        if not expired:
            raise
        return False
    finally:
        timer.cancel()
    return True
