"""LeaseKeeper against a real Redis: renews held messages, never re-adds acked ones, gives up after the deadline."""

from __future__ import annotations

import time
import uuid

import redis

from genserve.workers.leases import LeaseKeeper


def test_renews_held_tags_and_forgets_acked_and_expired_ones(redis_url: str):
    client = redis.Redis.from_url(redis_url)
    key = f"test-unacked-index-{uuid.uuid4().hex[:8]}"
    old = time.time() - 100
    client.zadd(key, {"running": old, "acked": old, "late": old, "other-workers": old})
    keeper = LeaseKeeper(client, visibility_timeout_s=3600, key=key)  # renewal called by hand below
    try:
        keeper.hold("running")
        keeper.hold("acked")
        keeper.hold("late", expires=time.time() - 4000)  # deadline + visibility long past
        client.zrem(key, "acked")  # the worker acked it (kombu removes it from the index)
        assert keeper.renew() == 1
        scores = dict(client.zrange(key, 0, -1, withscores=True))
        assert scores[b"running"] > old + 99  # moved to now
        assert b"acked" not in scores  # XX: an acked message is not brought back
        assert scores[b"late"] == old and scores[b"other-workers"] == old  # untouched
        assert keeper.held() == ["running"]
    finally:
        keeper.close()
        client.delete(key)


def test_background_thread_renews_within_the_interval(redis_url: str):
    client = redis.Redis.from_url(redis_url)
    key = f"test-unacked-index-{uuid.uuid4().hex[:8]}"
    client.zadd(key, {"tag": time.time() - 100})
    keeper = LeaseKeeper(client, visibility_timeout_s=0.6, key=key)  # renews every 0.2 s
    try:
        keeper.hold("tag")
        time.sleep(0.5)
        assert client.zscore(key, "tag") > time.time() - 0.5
    finally:
        keeper.close()
        client.delete(key)
