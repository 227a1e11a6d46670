"""Pure parts of batch jobs: the seed scheme, shard bytes, the queue order workers consume in."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genserve import seeds
from genserve.jobs import layout
from genserve.settings import Settings, WorkerSettings


def test_any_range_of_a_seed_equals_the_same_rows_of_one_long_draw():
    """seeds.latents(S, i, k) is rows i..i+k-1 of seeds.latents(S, 0, n), across block edges."""
    full = seeds.latents(42, 0, 1000, 8)
    for first, count in ((0, 1), (255, 2), (256, 256), (300, 700), (999, 1), (17, 0)):
        assert np.array_equal(seeds.latents(42, first, count, 8), full[first : first + count])
    assert not np.array_equal(seeds.latents(43, 0, 4, 8), full[:4])
    far = seeds.latents(7, 10**8 - 2, 2, 8)  # far indices cost no more than near ones
    assert far.shape == (2, 8) and np.isfinite(far).all()


def test_shard_writer_writes_np_save_bytes_and_their_sha256(tmp_path: Path):
    """NpyShardWriter's file equals np.save's bytes, written in parts, with a matching manifest entry."""
    images = np.random.default_rng(0).random((10, 1, 4, 4), dtype=np.float32)
    writer = layout.NpyShardWriter(tmp_path, "shards/a.npy", images.shape, images.dtype, 30)
    writer.append(images[:3])
    writer.append(images[3:])
    entry = writer.close()
    data = (tmp_path / "shards/a.npy").read_bytes()
    assert data == layout.npy_bytes(images) and entry["sha256"] == layout.sha256(data)
    assert (entry["start"], entry["count"], entry["bytes"]) == (30, 10, len(data))
    assert list((tmp_path / "shards").iterdir()) == [tmp_path / "shards/a.npy"]  # no temporary left
    again = layout.npz_bytes({"images": images})
    assert again == layout.npz_bytes({"images": images})  # no timestamps in .npz shards


def test_workers_consume_online_queues_in_celery_and_bulk_queues_on_their_own_thread(tmp_path: Path):
    """Celery consumes the online queues; the bulk queues go to the bulk thread; run_chunk stays registered."""
    from genserve.workers.app import bulk_queues, create_app, worker_queues

    settings = Settings(model_repository=tmp_path, broker_url="redis://127.0.0.1:6379/14", queue_prefix="p",
                        worker=WorkerSettings(queues=["vae", "gan"]))
    assert worker_queues(settings) == ["p.vae", "p.gan"]
    assert bulk_queues(settings) == ["p.bulk.vae", "p.bulk.gan"]
    assert "genserve.run_chunk" in create_app(settings).tasks


def test_a_chunk_yields_while_an_online_task_runs_and_only_within_its_budget():
    """Yielder waits while OnlineTasks is busy, returns at once when idle, and stops after MAX_PAUSE_S."""
    import time

    from genserve.workers.jobs import bulk

    online = bulk.OnlineTasks()
    pause = bulk.Yielder(online)
    started = time.monotonic()
    pause()
    assert time.monotonic() - started < 0.01
    online._count = 1
    pause.budget = 0.05
    started = time.monotonic()
    pause()
    assert 0.04 < time.monotonic() - started < 1.0 and pause.budget <= 0


def test_publisher_finds_withdraws_and_counts_a_jobs_pending_chunk_messages(redis_url: str, queue_prefix: str):
    """pending() names the job's queued chunks only; withdraw() removes exactly those, keeping the others."""
    import redis

    from genserve.protocol import ChunkPayload
    from genserve.services.jobs.publisher import CeleryChunkPublisher
    from genserve.workers.app import create_app

    settings = Settings(broker_url=redis_url, queue_prefix=queue_prefix)
    publisher = CeleryChunkPublisher(create_app(settings, with_results=False), redis_url)
    queue = f"{queue_prefix}.bulk.units"
    mine = [ChunkPayload(job="job-a1", chunk=k, start=k, count=1, offset=0) for k in (0, 7, 12)]
    publisher.publish(queue, [*mine, ChunkPayload(job="job-b2", chunk=3, start=0, count=1, offset=0)])
    try:
        assert publisher.pending(queue, "job-a1") == {0, 7, 12}
        assert publisher.withdraw(queue, "job-a1") == 3
        assert publisher.pending(queue, "job-a1") == set() and publisher.pending(queue, "job-b2") == {3}
    finally:
        redis.Redis.from_url(redis_url).delete(queue)


def test_a_bulk_chunk_longer_than_the_visibility_timeout_runs_once(redis_url: str, queue_prefix: str):
    """Two bulk consumers restore expired messages (visibility 1 s); a 3 s chunk renews its lease
    while it runs, so the other consumer never gets it; without the lease it would run twice."""
    import threading
    import time

    import redis

    from genserve.protocol import ChunkPayload
    from genserve.services.jobs.publisher import CeleryChunkPublisher
    from genserve.workers.app import create_app
    from genserve.workers.jobs.bulk import BulkConsumer, OnlineTasks
    from genserve.workers.leases import LeaseKeeper

    client = redis.Redis.from_url(redis_url)
    settings = Settings(broker_url=redis_url, queue_prefix=queue_prefix)
    queue = f"{queue_prefix}.bulk.leases"
    options = {"visibility_timeout": 1}
    runs: list[str] = []
    finished = threading.Event()

    def slow(payload: dict, pause: object) -> str:
        runs.append(threading.current_thread().name)
        time.sleep(3.0)
        finished.set()
        return "done"

    keepers = [LeaseKeeper(client, visibility_timeout_s=1.0) for _ in range(2)]
    consumers = [BulkConsumer(redis_url, options, [queue], slow, lambda q, p: None, OnlineTasks(), k.hold, k.release)
                 for k in keepers]
    CeleryChunkPublisher(create_app(settings, with_results=False), redis_url).publish(
        queue, [ChunkPayload(job="job-lease", chunk=0, start=0, count=1, offset=0)])
    try:
        for i, consumer in enumerate(consumers):
            consumer.name = f"bulk-{i}"
            consumer.start()
        assert finished.wait(20)
        time.sleep(2.5)  # two more visibility timeouts: a message left unrenewed would be run again
        assert len(runs) == 1, runs
        assert not any(queue.encode() in v for v in client.hvals("unacked"))  # acked
    finally:
        for consumer in consumers:
            consumer.stopping.set()
        for consumer, keeper in zip(consumers, keepers):
            consumer.join(timeout=5)
            keeper.close()
        client.delete(queue)
