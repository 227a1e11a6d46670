"""Gateway-side batching (services/batcher.py) driven by asyncio and a fake `send`.

Each test runs its own event loop with asyncio.run. The fake worker records every batch it
is sent and answers it; a request marked "hold" keeps its batch in flight (occupying a slot)
until the test releases it, which makes the slot states deterministic without sleeping.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from genserve.errors import ModelNotReadyError, QueueFullError
from genserve.services.batcher import Batcher
from genserve.settings import BatchingSettings

# A delay no test waits for: a request held back by it would hang the test.
LONG_DELAY_MS = 10_000.0


class FakeWorker:
    """A `send` coroutine that records batches and answers each request with its own outcome."""

    def __init__(self, provider: str = "CPUExecutionProvider", chunk: int = 4) -> None:
        self.batches: list[list[str]] = []  # request ids of each batch, in send order
        self.deadlines: list[float] = []
        self.sent_at: dict[str, float] = {}  # request id -> loop time its batch was sent
        self.inflight = 0
        self.max_inflight = 0
        self.provider = provider
        self.chunk = chunk  # rows per reported ONNX Runtime call
        self._gates: defaultdict[object, asyncio.Event] = defaultdict(asyncio.Event)

    def release(self, gate: object = True) -> None:
        """Let batches held at `gate` (request field "hold", True by default) finish."""
        self._gates[gate].set()

    async def __call__(self, requests: list[dict[str, Any]], deadline: float, samples: int = 0) -> dict[str, Any]:
        ids = [r["id"] for r in requests]
        self.batches.append(ids)
        self.deadlines.append(deadline)
        self.sent_at.update((i, asyncio.get_running_loop().time()) for i in ids)
        self.inflight += 1
        self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            for r in requests:
                if r.get("hold"):
                    await self._gates[r["hold"]].wait()
            for r in requests:
                if "raise" in r:
                    raise r["raise"]
            rows = sum(r.get("n", 1) for r in requests)
            calls = [min(self.chunk, rows - start) for start in range(0, rows, self.chunk)]
            results = [self._outcome(r) for r in requests]
            if any(r.get("drop_result") for r in requests):
                results = results[:-1]
            return {"results": results, "provider": self.provider, "calls": calls}
        finally:
            self.inflight -= 1

    @staticmethod
    def _outcome(request: dict[str, Any]) -> dict[str, Any]:
        if "fail_code" in request:
            return {
                "ok": False,
                "code": request["fail_code"],
                "message": f"request {request['id']} failed",
            }
        return {"ok": True, "id": request["id"]}


def batcher(send: FakeWorker, max_pending: int = 1000, **knobs: Any) -> Batcher:
    knobs.setdefault("max_queue_delay_ms", LONG_DELAY_MS)
    # No linger unless a test asks for it: the linger lasts half the last batch's measured
    # (wall-clock) round trip, which settle() does not wait for; on a loaded machine a
    # request would then stay queued past settle() only because that round trip was slow.
    knobs.setdefault("max_linger_ms", 0.0)
    return Batcher("vae:1/generate_images", send, BatchingSettings(**knobs), max_pending)


def submit(
    b: Batcher, rid: str, n: int = 1, deadline: float = 1000.0, **fields: Any
) -> asyncio.Future:
    return b.submit({"id": rid, "n": n, **fields}, n, deadline)


async def settle(rounds: int = 10) -> None:
    """Let callbacks and tasks that are ready run (no wall-clock waiting)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def finish(*futures: asyncio.Future) -> list[Any]:
    """The futures' results or exceptions; the timeout only guards against a hang."""
    return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), timeout=10)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def test_lone_request_is_sent_at_once() -> None:
    """At low load a request is sent on the next loop iteration, not after max_queue_delay_ms."""

    async def scenario() -> None:
        worker = FakeWorker()
        b = batcher(worker)
        future = submit(b, "a")
        await settle()
        assert worker.batches == [["a"]]
        assert future.done() and future.result() == {"ok": True, "id": "a"}

    run(scenario)


def test_requests_of_one_loop_iteration_share_a_batch() -> None:
    """Requests submitted in the same loop iteration at low load go out as one batch."""

    async def scenario() -> None:
        worker = FakeWorker()
        b = batcher(worker)
        futures = [submit(b, str(i)) for i in range(3)]
        assert [r["id"] for r in await finish(*futures)] == ["0", "1", "2"]
        assert worker.batches == [["0", "1", "2"]]

    run(scenario)


def test_in_flight_batches_are_capped_at_max_inflight_batches() -> None:
    """With both slots busy a third batch waits; it goes when a slot frees."""

    async def scenario() -> None:
        worker = FakeWorker()
        b = batcher(worker, max_inflight_batches=2)
        first = [submit(b, "a", hold=True)]
        await settle()
        first.append(submit(b, "b", hold=True))
        await settle()
        third = submit(b, "c")
        await settle()
        assert worker.batches == [["a"], ["b"]] and not third.done()
        worker.release()
        await finish(third, *first)
        assert worker.batches == [["a"], ["b"], ["c"]] and worker.max_inflight == 2

    run(scenario)


def test_busy_slot_groups_waiting_requests_up_to_max_batch_samples() -> None:
    """Requests that waited for a slot form batches of at most max_batch_samples; none is split."""

    async def scenario() -> None:
        worker = FakeWorker()
        b = batcher(worker, max_inflight_batches=1, max_batch_samples=8)
        held = submit(b, "a", hold=True)
        await settle()
        waiting = [
            submit(b, "b", 3),
            submit(b, "c", 3),
            submit(b, "d", 3),
            submit(b, "e", 5),
            submit(b, "f", 10),
        ]
        await settle()
        assert worker.batches == [["a"]]  # everyone else waits for the only slot
        worker.release()
        outcomes = await finish(held, *waiting)
        assert [o["id"] for o in outcomes] == ["a", "b", "c", "d", "e", "f"]
        # b+c = 6 (d would make 9 > 8), d+e = 8, f alone although 10 > 8: a request is never split
        assert worker.batches == [["a"], ["b", "c"], ["d", "e"], ["f"]]
        assert b.stats.samples_per_batch == Counter({1: 1, 6: 1, 8: 1, 10: 1})
        assert b.stats.requests_per_batch == Counter({1: 2, 2: 2})

    run(scenario)


def test_waiting_request_is_forced_out_after_max_queue_delay() -> None:
    """With no slot free, waiting requests go together once max_queue_delay_ms has passed."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        worker = FakeWorker()
        b = batcher(worker, max_inflight_batches=1, max_queue_delay_ms=30)
        held = submit(b, "a", hold=True)
        await settle()
        submitted = loop.time()
        waiting = [submit(b, "b"), submit(b, "c")]
        outcomes = await finish(*waiting)
        assert [o["id"] for o in outcomes] == ["b", "c"]
        assert worker.batches == [["a"], ["b", "c"]] and not held.done()  # the slot never freed
        assert worker.sent_at["b"] - submitted >= 0.030 - 0.002  # it did wait for a slot first
        worker.release()
        await finish(held)

    run(scenario)


def test_request_arriving_after_the_previous_waiter_left_gets_its_full_wait() -> None:
    """A newcomer is not forced out early by the timer of a waiter that already left the queue."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        worker = FakeWorker()
        b = batcher(worker, max_inflight_batches=1, max_queue_delay_ms=60)
        first = submit(b, "a", hold="a")
        await settle()
        second = submit(b, "b", hold="b")  # waits for the slot: a 60 ms timer is armed for it
        worker.release("a")
        await settle()
        # b left the queue through the freed slot, not through its timer
        assert worker.batches == [["a"], ["b"]] and first.done()
        await asyncio.sleep(0.03)
        arrived = loop.time()
        newcomer = submit(b, "c")  # b still holds the only slot
        await finish(newcomer)
        assert not second.done()
        assert worker.sent_at["c"] - arrived >= 0.060 - 0.002  # not b's timer, 30 ms early
        worker.release("b")
        await finish(second)

    run(scenario)


def test_disabled_batching_sends_each_request_alone_without_a_cap() -> None:
    """enabled=False: one request per send, all sent at once however many are in flight."""

    async def scenario() -> None:
        worker = FakeWorker()
        b = batcher(worker, enabled=False, max_inflight_batches=1, max_batch_samples=256)
        futures = [submit(b, str(i), n=3, hold=True) for i in range(5)]
        await settle()
        assert worker.batches == [["0"], ["1"], ["2"], ["3"], ["4"]] and worker.inflight == 5
        worker.release()
        assert [o["id"] for o in await finish(*futures)] == ["0", "1", "2", "3", "4"]
        assert b.stats.requests_per_batch == Counter({1: 5})
        assert b.stats.samples_per_batch == Counter({3: 5})

    run(scenario)


def test_failed_send_fails_every_request_of_that_batch_only() -> None:
    """A send that raises fails each request of its batch with that exception; others succeed."""

    async def scenario() -> None:
        worker = FakeWorker()
        b = batcher(worker, max_inflight_batches=2, max_batch_samples=2)
        boom = ConnectionError("broker went away")
        futures = [
            submit(b, "0", **{"raise": boom}),
            submit(b, "1"),
            submit(b, "2"),
            submit(b, "3"),
        ]
        outcomes = await finish(*futures)
        assert worker.batches == [["0", "1"], ["2", "3"]]
        assert outcomes[0] is boom and outcomes[1] is boom
        assert outcomes[2] == {"ok": True, "id": "2"} and outcomes[3] == {"ok": True, "id": "3"}

    run(scenario)


def test_per_request_failure_reaches_only_that_request() -> None:
    """A worker outcome with ok=False reaches its own request; neighbours get their results."""

    async def scenario() -> None:
        worker = FakeWorker()
        b = batcher(worker)
        futures = [submit(b, "0"), submit(b, "1", fail_code="INVALID_ARGUMENT"), submit(b, "2")]
        outcomes = await finish(*futures)
        assert worker.batches == [["0", "1", "2"]]
        assert outcomes == [
            {"ok": True, "id": "0"},
            {"ok": False, "code": "INVALID_ARGUMENT", "message": "request 1 failed"},
            {"ok": True, "id": "2"},
        ]

    run(scenario)


def test_result_count_mismatch_fails_the_whole_batch() -> None:
    """A worker answer with fewer outcomes than requests fails every request of the batch."""

    async def scenario() -> None:
        b = batcher(FakeWorker())
        outcomes = await finish(submit(b, "0"), submit(b, "1", drop_result=True))
        assert all(isinstance(o, RuntimeError) for o in outcomes)
        assert str(outcomes[0]) == "worker returned 1 results for 2 requests"

    run(scenario)


def test_queue_full_names_the_limit_and_clears_when_requests_finish() -> None:
    """At max_pending, submit raises QueueFullError naming the limit; finishing frees room."""

    async def scenario() -> None:
        worker = FakeWorker()
        b = batcher(worker, max_pending=2)
        held = [submit(b, "0", hold=True), submit(b, "1", hold=True)]
        with pytest.raises(QueueFullError) as info:
            submit(b, "2")
        assert str(info.value) == (
            "vae:1/generate_images: 2 requests already pending in this gateway "
            "(limit 2); retry with backoff"
        )
        worker.release()
        await finish(*held)
        assert (await finish(submit(b, "3"), submit(b, "4")))[1] == {"ok": True, "id": "4"}

    run(scenario)


def test_cancelled_request_is_dropped_before_its_batch_forms() -> None:
    """A request cancelled while waiting is never sent and frees its pending slot."""

    async def scenario() -> None:
        worker = FakeWorker()
        b = batcher(worker, max_pending=3, max_inflight_batches=1)
        held = submit(b, "a", hold=True)
        await settle()
        gone, kept = submit(b, "b"), submit(b, "c")
        gone.cancel()
        worker.release()
        await finish(held, kept)
        assert worker.batches == [["a"], ["c"]]
        assert b.stats.requests_per_batch == Counter({1: 2})
        # all three pending slots are free again
        assert len(await finish(*(submit(b, str(i)) for i in range(3)))) == 3

    run(scenario)


def test_batch_deadline_is_the_latest_of_its_requests() -> None:
    """send gets the latest deadline of the batch, so no request's deadline is cut short."""

    async def scenario() -> None:
        worker = FakeWorker()
        b = batcher(worker)
        await finish(
            submit(b, "0", deadline=100.0),
            submit(b, "1", deadline=300.0),
            submit(b, "2", deadline=200.0),
        )
        assert worker.deadlines == [300.0]

    run(scenario)


def test_stats_count_batches_onnx_calls_and_provider() -> None:
    """Stats record requests and samples per batch, ONNX call sizes and the last provider."""

    async def scenario() -> None:
        worker = FakeWorker(provider="CUDAExecutionProvider", chunk=4)
        b = batcher(worker)
        await finish(submit(b, "0", n=3), submit(b, "1", n=7))  # 10 rows: calls of 4, 4, 2
        await finish(submit(b, "2", n=2))
        assert b.stats.requests_per_batch == Counter({2: 1, 1: 1})
        assert b.stats.samples_per_batch == Counter({10: 1, 2: 1})
        assert b.stats.onnx_calls == Counter({4: 2, 2: 2})
        assert b.stats.provider == "CUDAExecutionProvider"
        worker.provider = ""  # a result without a provider keeps the last one reported
        await finish(submit(b, "3"))
        assert b.stats.provider == "CUDAExecutionProvider"

    run(scenario)


def test_close_fails_in_flight_requests_with_cancellation() -> None:
    """close() cancels in-flight sends and their requests end with CancelledError, not hanging."""

    async def scenario() -> None:
        b = batcher(FakeWorker())
        future = submit(b, "0", hold=True)
        await settle()
        await b.close()
        assert future.done() and isinstance(future.exception(), asyncio.CancelledError)

    run(scenario)


def test_close_fails_queued_requests_as_unavailable_and_sends_nothing_more() -> None:
    """Requests still queued at close() fail with ModelNotReadyError and are never sent."""

    async def scenario() -> None:
        worker = FakeWorker()
        b = batcher(worker, max_inflight_batches=1)
        held = submit(b, "a", hold=True)
        await settle()
        queued = submit(b, "b")
        await b.close()
        await settle()
        assert worker.batches == [["a"]]
        assert isinstance(queued.exception(), ModelNotReadyError)
        assert "shutting down" in str(queued.exception())
        assert isinstance(held.exception(), asyncio.CancelledError)
        with pytest.raises(ModelNotReadyError):
            submit(b, "c")

    run(scenario)


def test_cancelled_requests_free_their_places_queued_or_in_flight() -> None:
    """Cancelling frees the pending place at once: a queued request leaves the queue, and a batch
    in flight whose requests all gave up is cancelled (its send stops), pending back to 0."""

    async def scenario() -> None:
        worker = FakeWorker()
        b = batcher(worker, max_pending=4, max_inflight_batches=1)
        sent = [submit(b, "a", hold=True), submit(b, "b", hold=True)]
        await settle()
        queued = [submit(b, "c"), submit(b, "d")]
        assert b.pending == 4 and worker.inflight == 1
        for future in queued:
            future.cancel()
        await settle()
        assert b.pending == 2
        for future in sent:
            future.cancel()
        await settle()
        assert b.pending == 0 and b.inflight == 0 and worker.inflight == 0
        assert worker.batches == [["a", "b"]]
        assert [r["id"] for r in await finish(*(submit(b, str(i)) for i in range(4)))] == ["0", "1", "2", "3"]

    run(scenario)


def test_after_a_batch_of_several_the_first_returning_client_waits_for_the_others() -> None:
    """A batch of 3 came back: its clients' next requests share one batch instead of the first
    going alone and the other two waiting a whole round trip for it."""

    async def scenario() -> None:
        worker = FakeWorker()
        b = batcher(worker, max_inflight_batches=1, max_linger_ms=500)
        first = [submit(b, str(i), hold="first") for i in range(3)]
        await settle()
        await asyncio.sleep(0.05)  # a round trip long enough for the linger to matter
        worker.release("first")
        await finish(*first)
        again = [submit(b, "a")]
        await asyncio.sleep(0.005)  # the others come back a moment later
        assert worker.batches == [["0", "1", "2"]]  # "a" lingers for them
        again += [submit(b, "b"), submit(b, "c")]
        await finish(*again)
        assert worker.batches == [["0", "1", "2"], ["a", "b", "c"]]

    run(scenario)


def test_a_batch_keeps_running_while_one_of_its_requests_still_waits() -> None:
    """One request of a batch cancelled: the batch is not cancelled, the other gets its result."""

    async def scenario() -> None:
        worker = FakeWorker()
        b = batcher(worker, max_inflight_batches=1)
        gone, kept = submit(b, "a", hold=True), submit(b, "b", hold=True)
        await settle()
        gone.cancel()
        await settle()
        worker.release()
        assert (await finish(kept))[0]["id"] == "b" and b.pending == 0

    run(scenario)


def test_linger_ends_after_half_the_round_trip_when_the_others_do_not_come() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        worker = FakeWorker()
        b = batcher(worker, max_inflight_batches=1, max_linger_ms=500)
        first = [submit(b, str(i), hold="first") for i in range(2)]
        await settle()
        await asyncio.sleep(0.04)
        worker.release("first")
        await finish(*first)
        arrived = loop.time()
        await finish(submit(b, "alone"))
        waited = worker.sent_at["alone"] - arrived
        assert 0.015 <= waited <= 0.2  # about half the ~40 ms round trip, far below 500 ms

    run(scenario)


def test_no_linger_after_a_batch_of_one_or_with_linger_off() -> None:
    """Concurrency 1 is never held back: the last batch carried one request."""

    async def scenario() -> None:
        for knobs in ({"max_linger_ms": 500}, {"max_linger_ms": 0}):
            worker = FakeWorker()
            b = batcher(worker, max_inflight_batches=1, **knobs)
            first = submit(b, "a", hold=True)
            await asyncio.sleep(0.03)
            worker.release()
            await finish(first)
            second = submit(b, "b")
            await settle()
            assert worker.batches == [["a"], ["b"]] and second.done()
            if knobs["max_linger_ms"] == 0:
                many = [submit(b, str(i), hold="x") for i in range(3)]
                await settle()
                await asyncio.sleep(0.03)
                worker.release("x")
                await finish(*many)
                lone = submit(b, "lone")
                await settle()
                assert worker.batches[-1] == ["lone"] and lone.done()

    run(scenario)


def test_requests_that_waited_linger_for_the_returning_clients_within_max_queue_delay() -> None:
    """A batch of 2 comes back while 2 others wait for the slot: those wait a moment more for
    the first two clients, and all four share the next batch (no alternating halves); the
    oldest never waits past max_queue_delay_ms."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        worker = FakeWorker()
        b = batcher(worker, max_inflight_batches=1, max_linger_ms=500, max_queue_delay_ms=2000)
        first = [submit(b, "a", hold="first"), submit(b, "b", hold="first")]
        await settle()
        waiting = [submit(b, "c"), submit(b, "d")]
        await asyncio.sleep(0.2)  # a 200 ms round trip: the linger lasts 100 ms, far above a stall
        worker.release("first")
        await finish(*first)
        await asyncio.sleep(0.005)
        assert worker.batches == [["a", "b"]]  # c and d linger for a and b's clients
        back = [submit(b, "a2"), submit(b, "b2")]
        await finish(*waiting, *back)
        assert worker.batches == [["a", "b"], ["c", "d", "a2", "b2"]]

        capped = batcher(FakeWorker(), max_inflight_batches=1, max_linger_ms=500, max_queue_delay_ms=10)
        held = [submit(capped, "x", hold=True), submit(capped, "y", hold=True)]
        await settle()
        started = loop.time()
        late = submit(capped, "z")  # waits for the slot; then may linger, but not past 10 ms in all
        await asyncio.sleep(0.05)
        assert late.done()  # the forced flush after max_queue_delay_ms sent it
        assert loop.time() - started < 0.2
        capped._send.release()
        await finish(*held)

    run(scenario)
