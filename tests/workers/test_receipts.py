"""A worker's per-message bookkeeping (workers/receipts.py), watched with Redis's MONITOR: the
unacked record, the owner claim and the ack happen inside scripts, none as a command of its
own, and nothing is left in `unacked`. With receipts off the same watch sees kombu's
pipelines, which is what shows the watch can tell."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from genserve.v1 import inference_pb2
from tests.conftest import WorkerProcess, distributed_settings
from tests.support import GatewayThread

REQUESTS = 12


def watch(redis_url: str, stop: threading.Event, lines: list[str]) -> None:
    """Every command Redis runs in this test's database, as MONITOR prints it."""
    client = redis.Redis.from_url(redis_url)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    with client.monitor() as monitor:
        listening = monitor.listen()
        while not stop.is_set():
            command = next(listening)
            if command.get("db") == db:
                lines.append(f"{command.get('client_type', '')} {command['command']}")


def bookkeeping(lines: list[str], scripted: bool) -> dict[str, int]:
    """How many ZADD (not the leases' ZADD XX), HSET and ZREM/HDEL of kombu's unacked keys ran
    at top level (`scripted` False) or inside a Lua script (True)."""
    counts = {"record": 0, "ack": 0}
    for line in lines:
        kind, _, command = line.partition(" ")
        if (kind == "lua") != scripted:
            continue
        words = command.split()
        if len(words) < 2:
            continue
        name, key = words[0].upper(), words[1]
        if name == "ZADD" and key == "unacked_index" and words[2].upper() != "XX":
            counts["record"] += 1
        elif name in ("ZREM", "HDEL") and key in ("unacked_index", "unacked"):
            counts["ack"] += 1
    return counts


@pytest.mark.parametrize("receipts", [True, False], ids=["receipts", "kombu"])
def test_record_claim_and_ack_ride_in_scripts_and_nothing_stays_unacked(repo: Path, redis_url: str, receipts: bool):
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(repo, redis_url, prefix, "--queues", "vae",
                           env={"GENSERVE_WORKER__RECEIPTS": str(receipts).lower()})
    lines: list[str] = []
    stop = threading.Event()
    try:
        with GatewayThread(distributed_settings(repo, redis_url, prefix)) as gw:
            gw.wait_for_model("vae")
            for seed in range(3):  # warm: the model is loaded before the watch starts
                gw.inference.GenerateImages(inference_pb2.GenerateImagesRequest(model="vae", count=1, seed=seed), timeout=30)
            watcher = threading.Thread(target=watch, args=(redis_url, stop, lines), daemon=True)
            watcher.start()
            time.sleep(0.3)
            for seed in range(REQUESTS):
                reply = gw.inference.GenerateImages(
                    inference_pb2.GenerateImagesRequest(model="vae", count=2, seed=seed), timeout=30)
                assert list(reply.images.shape)[0] == 2
            time.sleep(0.5)  # the last ack lands
            stop.set()
            redis.Redis.from_url(redis_url).ping()  # one more command: the watch wakes and ends
            watcher.join(timeout=5)
        top, scripted = bookkeeping(lines, scripted=False), bookkeeping(lines, scripted=True)
        if receipts:
            assert top == {"record": 0, "ack": 0}, top
            assert scripted["record"] >= REQUESTS and scripted["ack"] >= 2 * REQUESTS, scripted
        else:
            assert top["record"] >= REQUESTS and top["ack"] >= 2 * REQUESTS, top
        mine = [line for line in lines if "unacked" in line]
        assert mine, "the watch saw none of the worker's bookkeeping"
        client = redis.Redis.from_url(redis_url)
        queue = distributed_settings(repo, redis_url, prefix).queue_for("vae")
        left = [raw for raw in client.hvals("unacked") if queue.encode() in raw]
        assert left == [], f"{len(left)} message(s) of this worker left unacked"
    finally:
        stop.set()
        worker.stop()
