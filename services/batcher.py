"""Gateway-side batching: concurrent requests for one (model, op) become one task message.

A Celery message costs about 3 ms of CPU across client, broker and worker, so one message
per request caps the service near 300 requests/s; grouping here divides that cost by the
batch size. The policy needs no tuning at low load:

- while fewer than `max_inflight_batches` messages of this model are in flight, whatever is
  waiting is sent at once (at concurrency 1 a request is never held back);
- otherwise requests wait for a slot and the next batch takes everything that waited, up
  to `max_batch_samples` samples;
- no request waits longer than `max_queue_delay_ms` for a slot: then its batch goes anyway;
- when a slot is free but fewer requests wait than were outstanding when the last batch
  came back (its requests and those waiting then), the batch lingers for the rest, at most
  `max_linger_ms` after that return and half that batch's round trip, and never past
  `max_queue_delay_ms` for the oldest. A batch's answers bring its clients back within a
  moment; without the linger the first of them goes alone and the others wait a whole
  round trip for it (batches of 1, 7, 1, 7 at concurrency 8), or two halves of the clients
  settle into alternate batches (4, 4). After a lone request's batch nothing lingers, so at
  concurrency 1 a request is still never held back.

Every request taken gets its own outcome, or the exception that failed its whole batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from genserve.errors import ModelNotReadyError, QueueFullError
from genserve.protocol import TaskResult
from genserve.settings import BatchingSettings

# Sends one batch: (requests, latest deadline as a wall-clock time, total samples) -> task result.
SendBatch = Callable[[list[dict[str, Any]], float, int], Awaitable[TaskResult]]


@dataclass(eq=False)
class Waiting:
    request: dict[str, Any]
    samples: int
    deadline: float  # wall-clock seconds
    enqueued: float  # loop time
    future: asyncio.Future = field(repr=False)
    batch: list[Waiting] | None = field(default=None, repr=False)  # set when its batch is sent
    task: asyncio.Task | None = field(default=None, repr=False)  # the task sending that batch


@dataclass
class BatcherStats:
    """What the batcher formed: requests per message and samples per message."""

    requests_per_batch: Counter = field(default_factory=Counter)
    samples_per_batch: Counter = field(default_factory=Counter)
    onnx_calls: Counter = field(default_factory=Counter)  # rows per ONNX Runtime call, from workers
    provider: str = ""  # execution provider the workers last reported


class Batcher:
    """Groups the requests of one (model, op) into batches and sends them."""

    def __init__(self, name: str, send: SendBatch, settings: BatchingSettings, max_pending: int,
                 observer: Any = None) -> None:
        self.name = name
        self._observer = observer  # services.metrics.BatchObserver: each message sent, each result
        self._send = send
        self._max_samples = settings.max_batch_samples if settings.enabled else 1
        self._max_delay = settings.max_queue_delay_ms / 1000.0
        # With batching off every request is its own message, sent at once.
        self._batching = settings.enabled
        self._max_inflight = max(1, settings.max_inflight_batches) if settings.enabled else 1 << 30
        self._max_pending = max_pending
        self._max_linger = settings.max_linger_ms / 1000.0 if settings.enabled else 0.0
        self._expected = 1  # outstanding when the last batch came back: the next one's size
        self._round_trip = 0.0  # seconds, the last batch's
        self._returned = 0.0  # loop time the last batch came back
        self._linger: asyncio.TimerHandle | None = None
        self._queue: deque[Waiting] = deque()
        self._inflight = 0
        self._pending = 0  # requests queued or in flight
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task] = set()
        self.stats = BatcherStats()
        self._closed = False

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def max_inflight(self) -> int:
        return self._max_inflight

    @max_inflight.setter
    def max_inflight(self, limit: int) -> None:
        """A new limit (the dispatcher's, as workers come and go); no effect with batching off."""
        if self._batching and limit != self._max_inflight:
            self._max_inflight = max(1, limit)
            if self._queue and not self._closed:
                self._schedule()  # a raised limit frees slots for what waits now

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, request: dict[str, Any], samples: int, deadline: float) -> asyncio.Future:
        if self._closed:
            raise ModelNotReadyError(f"{self.name}: the gateway is shutting down")
        if self._pending >= self._max_pending:
            raise QueueFullError(
                f"{self.name}: {self._pending} requests already pending in this gateway "
                f"(limit {self._max_pending}); retry with backoff"
            )
        loop = asyncio.get_running_loop()
        waiting = Waiting(request, samples, deadline, loop.time(), loop.create_future())
        self._queue.append(waiting)
        self._pending += 1
        waiting.future.add_done_callback(lambda _, w=waiting: self._cancelled(w))
        self._schedule()
        return waiting.future

    @property
    def idle(self) -> bool:
        """Nothing queued or in flight."""
        return self._pending == 0

    def run_alone(self, request: dict[str, Any], samples: int, run: Callable[[dict[str, Any]], TaskResult]) -> Any:
        """Run one request right now, synchronously, as a batch of its own (`run`: requests
        -> task result); counted like any batch. For a caller that found the batcher idle
        and nobody else waiting (the embedded mode's lone request, services/dispatch.py)."""
        self.stats.requests_per_batch[1] += 1
        self.stats.samples_per_batch[samples] += 1
        if self._observer is not None:
            self._observer.sent([0.0], samples)
        started = time.perf_counter()
        result = run(request)
        if self._observer is not None:
            self._observer.finished(time.perf_counter() - started)
        self.stats.onnx_calls.update(result.get("calls", []))
        self.stats.provider = result.get("provider") or self.stats.provider
        (outcome,) = result["results"]
        return outcome

    def _cancelled(self, waiting: Waiting) -> None:
        """A client gave up (cancel, deadline): free its place now, not when its batch returns.
        Still queued: it leaves the queue. In flight: once every request of its batch has given
        up, the send is cancelled (the message left in Redis expires at its deadline)."""
        if not waiting.future.cancelled():
            return
        if waiting.batch is None:
            if waiting in self._queue:
                self._queue.remove(waiting)
                self._pending -= 1
        elif waiting.task is not None and all(w.future.cancelled() for w in waiting.batch):
            waiting.task.cancel()

    def _schedule(self) -> None:
        if not self._queue or self._closed:
            return
        loop = asyncio.get_running_loop()
        if self._inflight < self._max_inflight:
            if self._flush_scheduled:
                return
            linger = min(self._max_linger, self._round_trip / 2)
            if linger > 0 and len(self._queue) < self._expected and self._queued_samples() < self._max_samples:
                if self._linger is None:  # the rest of the last batch's clients are on their way
                    head = self._queue[0].enqueued
                    at = min(max(head, self._returned) + linger, head + self._max_delay)
                    self._linger = loop.call_at(at, self._flush, False)
                return
            # call_soon, not now: requests arriving in this loop iteration join the batch.
            self._flush_scheduled = True
            loop.call_soon(self._flush, False)
        elif self._timer is None:
            wait = max(0.0, self._queue[0].enqueued + self._max_delay - loop.time())
            self._timer = loop.call_later(wait, self._flush, True)

    def _queued_samples(self) -> int:
        return sum(w.samples for w in self._queue)

    def _flush(self, forced: bool) -> None:
        self._flush_scheduled = False
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._timer is not None:
            # The timer was armed for the head of the queue then; that request may be sent by
            # now, so _schedule re-arms it for the new head instead of forcing out a newcomer.
            self._timer.cancel()
            self._timer = None
        while self._queue and (forced or self._inflight < self._max_inflight):
            batch = self._take()
            if batch:
                self._start(batch)
            forced = False
        self._schedule()

    def _take(self) -> list[Waiting]:
        batch: list[Waiting] = []
        samples = 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # the client gave up (deadline, cancel): drop it
                self._queue.popleft()
                self._pending -= 1
                continue
            if batch and samples + head.samples > self._max_samples:
                break
            batch.append(self._queue.popleft())
            samples += head.samples
        return batch

    def _start(self, batch: list[Waiting]) -> None:
        self._inflight += 1
        self.stats.requests_per_batch[len(batch)] += 1
        self.stats.samples_per_batch[sum(w.samples for w in batch)] += 1
        if self._observer is not None:
            now = asyncio.get_running_loop().time()
            self._observer.sent([now - w.enqueued for w in batch], sum(w.samples for w in batch))
        task = asyncio.get_running_loop().create_task(self._run(batch))
        for waiting in batch:
            waiting.batch, waiting.task = batch, task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[Waiting]) -> None:
        sent = time.perf_counter()
        try:
            result = await self._send([w.request for w in batch], max(w.deadline for w in batch),
                                      sum(w.samples for w in batch))
            self._round_trip = time.perf_counter() - sent
            self._expected = len(batch) + len(self._queue)
            self._returned = asyncio.get_running_loop().time()
            if self._observer is not None:
                self._observer.finished(self._round_trip)
            outcomes = result["results"]
            if len(outcomes) != len(batch):
                raise RuntimeError(f"worker returned {len(outcomes)} results for {len(batch)} requests")
            self.stats.provider = result.get("provider") or self.stats.provider
            self.stats.onnx_calls.update(result.get("calls", []))
            for waiting, outcome in zip(batch, outcomes):
                if not waiting.future.done():
                    waiting.future.set_result(outcome)
        except BaseException as exc:  # the whole batch failed: fail each request explicitly
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError) and self._closed:
                raise  # close() cancelled it; a batch whose clients all left just ends
        finally:
            self._inflight -= 1
            self._pending -= len(batch)
            self._schedule()

    async def close(self) -> None:
        """Stop: queued requests fail with UNAVAILABLE, in-flight batches are cancelled."""
        self._closed = True
        for handle in (self._timer, self._linger):
            if handle is not None:
                handle.cancel()
        self._timer = self._linger = None
        while self._queue:
            waiting = self._queue.popleft()
            self._pending -= 1
            if not waiting.future.done():
                waiting.future.set_exception(ModelNotReadyError(f"{self.name}: the gateway is shutting down"))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
