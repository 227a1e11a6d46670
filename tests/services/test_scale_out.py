"""Scale-out: two gateways and two workers on one queue still batch and stay correct."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from genserve.v1 import inference_pb2
from tests.conftest import WorkerProcess, distributed_settings
from tests.support import GatewayThread

pytestmark = pytest.mark.integration


def test_two_gateways_and_two_workers_batch_and_return_each_seed_its_images(repo: Path, redis_url: str):
    """64 concurrent seeded requests split over two gateways: batched, and byte-exact per seed."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    workers = [WorkerProcess(repo, redis_url, prefix) for _ in range(2)]
    try:
        with GatewayThread(distributed_settings(repo, redis_url, prefix)) as a, \
                GatewayThread(distributed_settings(repo, redis_url, prefix)) as b:
            a.wait_for_model("vae")
            b.wait_for_model("vae")
            seeds = list(range(500, 564))
            futures = [(a if i % 2 else b).inference.GenerateImages.future(
                inference_pb2.GenerateImagesRequest(model="vae", count=1, seed=s), timeout=60)
                for i, s in enumerate(seeds)]
            together = [f.result().images.data for f in futures]
            alone = [a.inference.GenerateImages(inference_pb2.GenerateImagesRequest(model="vae", count=1, seed=s),
                                                timeout=60).images.data for s in seeds[:8]]
            assert together[:8] == alone
            for gw in (a, b):
                sizes = [n for s in gw.gateway.dispatcher.stats("vae:1") for n in s.requests_per_batch]
                assert max(sizes) > 1, "a gateway never batched"
    finally:
        for worker in workers:
            worker.stop()


def test_messages_in_flight_follow_the_worker_processes_that_consume_the_model(repo: Path, redis_url: str):
    """max_inflight_batches 0 (the default, auto): the gateway keeps one message in flight per
    worker process that announces itself on the model's queue (workers/failover.py), shared
    among the gateways sending to it: 2 with two workers, 1 while a second gateway sends too, 4 once a prefork worker with 2 processes joins them, and back down as
    workers stop (a clean stop leaves at once; a killed one when its registration expires)."""
    import time

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    env = {"GENSERVE_WORKER__FAILOVER_TTL_S": "1.5"}
    workers = [WorkerProcess(repo, redis_url, prefix, "--queues", "vae", env=env) for _ in range(2)]
    try:
        with GatewayThread(distributed_settings(repo, redis_url, prefix)) as gw:
            gw.wait_for_model("vae")
            queue = gw.settings.queue_for("vae")
            dispatcher = gw.gateway.dispatcher

            def limit_becomes(expected: int, within_s: float = 20, also: list[GatewayThread] = []) -> None:
                end, seed = time.monotonic() + within_s, 0
                while True:  # each request refreshes the gateway's view (at most 4 times a second)
                    for sender in [gw, *also]:
                        sender.inference.GenerateImages(
                            inference_pb2.GenerateImagesRequest(model="vae", count=1, seed=seed), timeout=30)
                    batcher = dispatcher.batchers().get(("vae:1", "generate_images"))
                    if batcher is not None and batcher.max_inflight == expected == dispatcher.inflight_limit(queue):
                        return
                    assert time.monotonic() < end, (expected, dispatcher.inflight_limit(queue))
                    seed += 1
                    time.sleep(0.1)

            limit_becomes(2)
            with GatewayThread(distributed_settings(repo, redis_url, prefix)) as other:
                other.wait_for_model("vae")
                limit_becomes(1, also=[other])  # two gateways sending: one worker each
            limit_becomes(2)  # the other gateway's traffic has stopped: both workers again
            workers.append(WorkerProcess(repo, redis_url, prefix, "--queues", "vae", "--concurrency", "2",
                                         "--pool", "prefork", env=env))
            limit_becomes(4)
            workers.pop().stop()  # a clean stop unregisters
            limit_becomes(2)
            workers.pop().kill()  # a SIGKILL leaves the registration to expire
            limit_becomes(1)
    finally:
        for worker in workers:
            worker.stop()
