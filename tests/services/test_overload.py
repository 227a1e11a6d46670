"""Overload, deadlines and shutdown with real parts: admission per model with an exact count of
refusals, expired work never run, graceful gateway stop."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genserve.v1 import inference_pb2
from tests.conftest import WorkerProcess, distributed_settings
from tests.support import GatewayThread

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_burst_past_the_admission_limit_gets_exactly_the_excess_refused(repo: Path, redis_url: str):
    """Limit 5 per model, a burst of 20 with no worker yet: exactly 15 RESOURCE_EXHAUSTED, each
    at once; the 5 admitted all complete once a worker starts; another model is unaffected."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    settings = distributed_settings(repo, redis_url, prefix)
    settings.gateway.max_pending_requests = 5
    settings.batching.max_inflight_batches = 8
    with GatewayThread(settings) as gw:
        request = inference_pb2.GenerateImagesRequest(model="vae", count=1, seed=3)
        futures = [gw.inference.GenerateImages.future(request, timeout=60) for _ in range(20)]
        time.sleep(1.0)
        refused = [f for f in futures if f.done() and f.exception() is not None]
        assert len(refused) == 15
        assert all(f.exception().code() == grpc.StatusCode.RESOURCE_EXHAUSTED for f in refused)
        assert "limit 5" in refused[0].exception().details()
        other = gw.inference.GenerateImages.future(inference_pb2.GenerateImagesRequest(model="cvae", count=1, label=2), timeout=60)
        worker = WorkerProcess(repo, redis_url, prefix)
        try:
            accepted = [f.result(timeout=60) for f in futures if f not in refused]
            assert other.result(timeout=60).seed >= 0
        finally:
            worker.stop()
    assert len(accepted) == 5 and len({a.images.data for a in accepted}) == 1  # same seed, same bytes


def test_request_whose_deadline_passes_in_the_queue_is_never_run(repo: Path, redis_url: str):
    """No worker: the client gets DEADLINE_EXCEEDED; a worker started later discards the
    expired message (Celery `expires` = the deadline) instead of running it."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    with GatewayThread(distributed_settings(repo, redis_url, prefix)) as gw:
        request = inference_pb2.GenerateImagesRequest(model="vae", count=3, seed=11)
        with pytest.raises(grpc.RpcError) as info:
            gw.inference.GenerateImages(request, timeout=1.0)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert client.llen(f"{prefix}.vae") == 1  # still queued, expired
        worker = WorkerProcess(repo, redis_url, prefix, "--log-level", "INFO")
        try:
            deadline = time.monotonic() + 60
            while client.llen(f"{prefix}.vae") and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)
        finally:
            worker.stop(keep_log=True)
    log = worker.output()
    assert client.llen(f"{prefix}.vae") == 0
    assert "expired" in log.lower() or "revoked" in log.lower(), log[-2000:]
    assert "succeeded" not in log  # nothing ran


def test_graceful_stop_finishes_in_flight_calls_and_refuses_new_ones(repo: Path, redis_url: str):
    """stop(grace, drain): health turns NOT_SERVING at once while calls are still answered
    during the drain; then calls made get UNAVAILABLE, and the call in flight all along still
    succeeds whole."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(repo, redis_url, prefix)
    try:
        gw = GatewayThread(distributed_settings(repo, redis_url, prefix)).__enter__()
        gw.wait_for_model("vae")
        slow = inference_pb2.GenerateImagesRequest(model="vae", count=4096, seed=5,
                                                   encoding=inference_pb2.IMAGE_ENCODING_TENSOR_AND_PNG)
        pending = gw.inference.GenerateImages.future(slow, timeout=60)
        time.sleep(0.3)
        health = health_pb2_grpc.HealthStub(gw.channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        stopping = asyncio.run_coroutine_threadsafe(gw.gateway.stop(30, drain_s=1.5), gw.loop)
        time.sleep(0.2)
        # draining: health already says NOT_SERVING, a call still gets its answer
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
        during = gw.inference.GenerateImages(inference_pb2.GenerateImagesRequest(model="vae", count=1, seed=1), timeout=5)
        assert len(during.images.data) > 0
        time.sleep(1.6)  # past the drain: the server refuses new calls
        late = grpc.insecure_channel(gw.address)
        from genserve.v1 import inference_pb2_grpc

        with pytest.raises(grpc.RpcError) as info:
            inference_pb2_grpc.InferenceServiceStub(late).GenerateImages(
                inference_pb2.GenerateImagesRequest(model="vae", count=1), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert len(pending.result(timeout=60).png) == 4096
        stopping.result(timeout=60)
        del health
        gw.channel.close()
        gw.loop.call_soon_threadsafe(gw.loop.stop)
        gw.thread.join(timeout=10)
    finally:
        worker.stop()


def test_health_is_not_serving_as_soon_as_the_stop_begins(repo: Path):
    """The health status flips before the server stops accepting (load balancers drain first)."""
    from genserve.settings import GatewaySettings, Settings

    with GatewayThread(Settings(model_repository=repo, gateway=GatewaySettings(port=0))) as gw:
        gw.call(gw.gateway.set_health(False))
        status = health_pb2_grpc.HealthStub(gw.channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_cancelled_unary_calls_free_their_batcher_places(repo: Path, redis_url: str):
    """No worker, one batch in flight at most: cancelled calls (the one in flight and those queued
    behind it) bring the batcher's pending count back to 0 at once, so the admission limit
    counts only clients still waiting."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    settings = distributed_settings(repo, redis_url, prefix)
    settings.gateway.max_pending_requests = 3
    settings.batching.max_inflight_batches = 1
    with GatewayThread(settings) as gw:
        request = inference_pb2.GenerateImagesRequest(model="vae", count=1, seed=3)
        calls = [gw.inference.GenerateImages.future(request, timeout=60) for _ in range(3)]
        time.sleep(1.0)
        (batcher,) = gw.gateway.dispatcher.batchers().values()
        assert batcher.pending == 3
        for call in calls:
            call.cancel()
        deadline = time.monotonic() + 5
        while batcher.pending or batcher.inflight:
            assert time.monotonic() < deadline, f"pending {batcher.pending} after every call was cancelled"
            time.sleep(0.05)
        again = [gw.inference.GenerateImages.future(request, timeout=60) for _ in range(3)]
        time.sleep(0.5)
        assert not any(f.done() for f in again)  # admitted (not RESOURCE_EXHAUSTED), waiting
        for call in again:
            call.cancel()
    redis.Redis.from_url(redis_url).delete(f"{prefix}.vae")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_gateway_memory_stays_bounded_under_a_burst_far_above_capacity(repo: Path, redis_url: str, tmp_path: Path):
    """A `genserve gateway` process (max_pending 8) and one worker thread, offered 5 s of 256-image
    PNG calls by 96 closed-loop callers that never pause (10x and more what the worker serves;
    about 80x here): the excess is refused RESOURCE_EXHAUSTED at once, every admitted call
    completes with its seed's bytes, and the gateway's peak RSS grows by less than 60 MB."""
    import os
    import socket
    import subprocess
    import sys

    from genserve.v1 import inference_pb2_grpc

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, GENSERVE_QUEUE_PREFIX=prefix, GENSERVE_GATEWAY__MAX_PENDING_REQUESTS="8")
    log = open(tmp_path / "gateway.log", "w+")
    gateway = subprocess.Popen([sys.executable, "-m", "genserve", "gateway", "--repository", str(repo),
                                "--broker-url", redis_url, "--host", "127.0.0.1", "--port", str(port),
                                "--log-level", "WARNING"], env=env, stdout=log, stderr=subprocess.STDOUT)
    worker = WorkerProcess(repo, redis_url, prefix)
    request = inference_pb2.GenerateImagesRequest(model="vae", count=256, seed=21,  # PNG: slow worker, small replies
                                                 encoding=inference_pb2.IMAGE_ENCODING_PNG)
    counts = {"ok": 0, "refused": 0, "wrong": 0, "other": []}

    async def burst() -> float:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            end = time.monotonic() + 60
            while True:  # the gateway and the worker are up
                try:
                    expected = list((await stub.GenerateImages(request, timeout=5)).png)
                    break
                except grpc.aio.AioRpcError:
                    assert time.monotonic() < end, log.read()
                    await asyncio.sleep(0.5)
            for _ in range(20):  # warm: sessions, pools, first batches
                await stub.GenerateImages(request, timeout=10)
            before = _rss_mb(gateway.pid)
            stop = time.monotonic() + 5

            async def caller() -> None:
                while time.monotonic() < stop:
                    try:
                        reply = await stub.GenerateImages(request, timeout=20)
                        counts["ok" if list(reply.png) == expected else "wrong"] += 1
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                            counts["refused"] += 1
                            await asyncio.sleep(0)  # closed loop: straight back, no backoff
                        else:
                            counts["other"].append(exc.code().name)

            peak = [before]

            async def sample() -> None:
                while time.monotonic() < stop + 1:
                    peak[0] = max(peak[0], _rss_mb(gateway.pid))
                    await asyncio.sleep(0.1)

            await asyncio.gather(sample(), *(caller() for _ in range(96)))
            return peak[0] - before

    try:
        growth = asyncio.run(burst())
    finally:
        worker.stop()
        gateway.terminate()
        gateway.wait(timeout=20)
        redis.Redis.from_url(redis_url).delete(f"{prefix}.vae")
    assert counts["other"] == [] and counts["wrong"] == 0, counts
    assert counts["refused"] > 9 * counts["ok"] > 0, counts  # offered 10x or more what was served
    print(f"RSS growth {growth:.1f} MB, {counts}")
    assert growth < 60, f"gateway RSS grew by {growth:.0f} MB; {counts}"
