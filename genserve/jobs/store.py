"""Where a job's state lives: Redis (distributed) or this process's memory (embedded).

Never in one process's memory in the distributed mode: gateway and workers read and change
the same records, and everything survives a gateway or worker restart, and a Redis restart
with its append-only file. Key schema (P = `<queue prefix>:job`):

    P:<id>            hash   the record: state, spec (JSON), model, total, chunks, dir, done,
                             failed, created/updated/started/finished (unix s), error, ...
    P:<id>:done       set    indices of finished chunks: SADD decides who counts a chunk, once
    P:<id>:shards     hash   chunk index -> JSON of its shard(s): path, start, count, bytes, sha256
    P:<id>:attempts   hash   chunk index -> runs started (a crash counts: bounded retries)
    P:index           zset   job id by creation time (ListJobs, retention)
    P:active          set    ids of queued or running jobs (max_active_jobs)
    P:token:<token>   string the job id submitted with this idempotency key
    P:<id>:lock       string held (SET NX PX) by whoever is writing the job's manifest
    P:stats           hash   cluster-wide counters behind the gateway's job metrics:
                             items|<model>|<kind> and chunks|<model>|<outcome>

Every state change is one Lua script, so a cancel, a failure and the last chunk cannot
overwrite each other: terminal states (SUCCEEDED, SUCCEEDED_WITH_ERRORS, FAILED, CANCELLED)
are final.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any, Protocol

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED, SUCCEEDED_WITH_ERRORS = (
    "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "SUCCEEDED_WITH_ERRORS")
ACTIVE = (QUEUED, RUNNING)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED, SUCCEEDED_WITH_ERRORS)
CHUNK_OUTCOMES = ("done", "retried", "failed")  # genserve_job_chunks_total{outcome}
INT_FIELDS = ("total", "chunks", "chunk_size", "done", "failed", "max_attempts", "max_runs", "enqueued")
FLOAT_FIELDS = ("created", "updated", "started", "finished")


def decode(raw: dict[Any, Any]) -> dict[str, Any]:
    """A record as stored (strings) -> typed values."""
    record = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
              for k, v in raw.items()}
    for key in INT_FIELDS:
        if key in record:
            record[key] = int(record[key])
    for key in FLOAT_FIELDS:
        if key in record:
            record[key] = float(record[key])
    return record


class JobStore(Protocol):
    def create(self, record: dict[str, Any], token: str) -> tuple[dict[str, Any], bool]: ...
    def get(self, job_id: str) -> dict[str, Any] | None: ...
    def by_token(self, token: str) -> str | None: ...
    def list(self, offset: int, limit: int) -> list[str]: ...
    def active_count(self) -> int: ...
    def update(self, job_id: str, **fields: Any) -> None: ...
    def transition(self, job_id: str, from_states: tuple[str, ...], to: str, **fields: Any) -> bool: ...
    def attempt(self, job_id: str, chunk: int) -> int: ...
    def complete_chunk(self, job_id: str, chunk: int, shard: dict[str, Any], items: int, failed: int,
                       kind: str = "", outcome: str = "done") -> int: ...
    def count(self, field: str, n: int = 1) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def done_chunks(self, job_id: str) -> set[int]: ...
    def is_done(self, job_id: str, chunk: int) -> bool: ...
    def chunks_done(self, job_id: str) -> int: ...
    def shards(self, job_id: str) -> dict[int, dict[str, Any]]: ...
    def delete(self, job_id: str) -> None: ...
    def lock(self, job_id: str, seconds: float) -> bool: ...


def new_id() -> str:
    return "job-" + uuid.uuid4().hex[:16]


_CREATE = """
local existing = redis.call('GET', KEYS[3])
if existing then return existing end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
if KEYS[3] ~= KEYS[1] then redis.call('SET', KEYS[3], ARGV[1]) end
return ARGV[1]
"""

# KEYS: record, active set; ARGV: id, target state, n from-states, from..., field, value, ...
_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
local n = tonumber(ARGV[3])
local allowed = false
for i = 1, n do if ARGV[3 + i] == state then allowed = true end end
if not allowed then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
if #ARGV > 3 + n then redis.call('HSET', KEYS[1], unpack(ARGV, 4 + n)) end
if ARGV[2] ~= 'QUEUED' and ARGV[2] ~= 'RUNNING' then redis.call('SREM', KEYS[2], ARGV[1]) end
return 1
"""

# KEYS: record, done set, shards hash, stats; ARGV: chunk, shard JSON, items, failed, now, kind, outcome
_COMPLETE = """
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'done', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'failed', ARGV[4])
  redis.call('HSET', KEYS[1], 'updated', ARGV[5])
  local model = string.match(redis.call('HGET', KEYS[1], 'model') or '', '^[^:]*')
  redis.call('HINCRBY', KEYS[4], 'items|' .. model .. '|' .. ARGV[6], ARGV[3])
  redis.call('HINCRBY', KEYS[4], 'chunks|' .. model .. '|' .. ARGV[7], 1)
end
return redis.call('SCARD', KEYS[2])
"""


def _flat(fields: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for key, value in fields.items():
        out += [key, value if isinstance(value, (str, int, float)) else json.dumps(value)]
    return out


class RedisJobStore:
    """The distributed store: one Redis (the broker's), keys under `<prefix>:job`."""

    def __init__(self, url: str, key_prefix: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.p = key_prefix
        self._create = self.client.register_script(_CREATE)
        self._transition = self.client.register_script(_TRANSITION)
        self._complete = self.client.register_script(_COMPLETE)

    def _key(self, job_id: str, part: str = "") -> str:
        return f"{self.p}:{job_id}{':' + part if part else ''}"

    def create(self, record: dict[str, Any], token: str) -> tuple[dict[str, Any], bool]:
        job_id = record["id"]
        token_key = f"{self.p}:token:{token}" if token else self._key(job_id)
        got = self._create(keys=[self._key(job_id), f"{self.p}:index", token_key, f"{self.p}:active"],
                           args=[job_id, record["created"], *_flat(record)]).decode()
        return self.get(got) or record, got == job_id

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.client.hgetall(self._key(job_id))
        return decode(raw) if raw else None

    def by_token(self, token: str) -> str | None:
        got = self.client.get(f"{self.p}:token:{token}")
        return got.decode() if got else None

    def list(self, offset: int, limit: int) -> list[str]:
        return [i.decode() for i in self.client.zrevrange(f"{self.p}:index", offset, offset + limit - 1)]

    def active_count(self) -> int:
        return int(self.client.scard(f"{self.p}:active"))

    def update(self, job_id: str, **fields: Any) -> None:
        self.client.hset(self._key(job_id), mapping=dict(zip(*[iter(_flat(fields))] * 2)))

    def transition(self, job_id: str, from_states: tuple[str, ...], to: str, **fields: Any) -> bool:
        fields.setdefault("updated", time.time())
        args = [job_id, to, len(from_states), *from_states, *_flat(fields)]
        return bool(self._transition(keys=[self._key(job_id), f"{self.p}:active"], args=args))

    def attempt(self, job_id: str, chunk: int) -> int:
        return int(self.client.hincrby(self._key(job_id, "attempts"), str(chunk), 1))

    def complete_chunk(self, job_id: str, chunk: int, shard: dict[str, Any], items: int, failed: int,
                       kind: str = "", outcome: str = "done") -> int:
        """Count the chunk once (its items under `kind` in P:stats); the job's chunks done."""
        keys = [self._key(job_id), self._key(job_id, "done"), self._key(job_id, "shards"), f"{self.p}:stats"]
        return int(self._complete(keys=keys, args=[chunk, json.dumps(shard), items, failed, time.time(), kind, outcome]))

    def count(self, field: str, n: int = 1) -> None:
        self.client.hincrby(f"{self.p}:stats", field, n)

    def stats(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(f"{self.p}:stats").items()}

    def done_chunks(self, job_id: str) -> set[int]:
        return {int(c) for c in self.client.smembers(self._key(job_id, "done"))}

    def is_done(self, job_id: str, chunk: int) -> bool:
        return bool(self.client.sismember(self._key(job_id, "done"), str(chunk)))

    def chunks_done(self, job_id: str) -> int:
        return int(self.client.scard(self._key(job_id, "done")))

    def shards(self, job_id: str) -> dict[int, dict[str, Any]]:
        return {int(k): json.loads(v) for k, v in self.client.hgetall(self._key(job_id, "shards")).items()}

    def lock(self, job_id: str, seconds: float) -> bool:
        """P:<id>:lock for `seconds` (finishing a job); False when someone else holds it."""
        return bool(self.client.set(self._key(job_id, "lock"), "1", nx=True, px=int(seconds * 1000)))

    def delete(self, job_id: str) -> None:
        record = self.get(job_id) or {}
        keys = [self._key(job_id, part) for part in ("", "done", "shards", "attempts", "lock")]
        if record.get("token"):
            keys.append(f"{self.p}:token:{record['token']}")
        self.client.delete(*keys)
        self.client.zrem(f"{self.p}:index", job_id)
        self.client.srem(f"{self.p}:active", job_id)


class LocalJobStore:
    """The embedded store: the same operations on dicts under one lock. Nothing survives a
    restart of the process (the result files on the jobs volume do)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, str] = {}
        self._done: dict[str, set[int]] = {}
        self._shards: dict[str, dict[int, dict[str, Any]]] = {}
        self._attempts: dict[str, dict[int, int]] = {}
        self._locks: dict[str, float] = {}  # job id -> until (monotonic)
        self._stats: dict[str, int] = {}

    def create(self, record: dict[str, Any], token: str) -> tuple[dict[str, Any], bool]:
        with self._lock:
            if token and token in self._tokens:
                return dict(self._records[self._tokens[token]]), False
            self._records[record["id"]] = decode({k: v if isinstance(v, (str, int, float)) else json.dumps(v)
                                                  for k, v in record.items()})
            self._done[record["id"]], self._shards[record["id"]], self._attempts[record["id"]] = set(), {}, {}
            if token:
                self._tokens[token] = record["id"]
            return dict(self._records[record["id"]]), True

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._records.get(job_id)
            return dict(record) if record else None

    def by_token(self, token: str) -> str | None:
        with self._lock:
            return self._tokens.get(token)

    def list(self, offset: int, limit: int) -> list[str]:
        with self._lock:
            ids = sorted(self._records, key=lambda i: -self._records[i]["created"])
            return ids[offset : offset + limit]

    def active_count(self) -> int:
        with self._lock:
            return sum(r["state"] in ACTIVE for r in self._records.values())

    def update(self, job_id: str, **fields: Any) -> None:
        with self._lock:
            self._records[job_id].update(decode(fields))

    def transition(self, job_id: str, from_states: tuple[str, ...], to: str, **fields: Any) -> bool:
        fields.setdefault("updated", time.time())
        with self._lock:
            record = self._records.get(job_id)
            if record is None or record["state"] not in from_states:
                return False
            record.update(decode(fields), state=to)
            return True

    def attempt(self, job_id: str, chunk: int) -> int:
        with self._lock:
            counts = self._attempts[job_id]
            counts[chunk] = counts.get(chunk, 0) + 1
            return counts[chunk]

    def complete_chunk(self, job_id: str, chunk: int, shard: dict[str, Any], items: int, failed: int,
                       kind: str = "", outcome: str = "done") -> int:
        with self._lock:
            if chunk not in self._done[job_id]:
                self._done[job_id].add(chunk)
                self._shards[job_id][chunk] = shard
                record = self._records[job_id]
                record.update(done=record["done"] + items, failed=record["failed"] + failed, updated=time.time())
                model = record["model"].partition(":")[0]
                self._add(f"items|{model}|{kind}", items)
                self._add(f"chunks|{model}|{outcome}", 1)
            return len(self._done[job_id])

    def _add(self, field: str, n: int) -> None:
        self._stats[field] = self._stats.get(field, 0) + n

    def count(self, field: str, n: int = 1) -> None:
        with self._lock:
            self._add(field, n)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def done_chunks(self, job_id: str) -> set[int]:
        with self._lock:
            return set(self._done.get(job_id, ()))

    def is_done(self, job_id: str, chunk: int) -> bool:
        with self._lock:
            return chunk in self._done.get(job_id, ())

    def chunks_done(self, job_id: str) -> int:
        with self._lock:
            return len(self._done.get(job_id, ()))

    def shards(self, job_id: str) -> dict[int, dict[str, Any]]:
        with self._lock:
            return dict(self._shards.get(job_id, {}))

    def lock(self, job_id: str, seconds: float) -> bool:
        with self._lock:
            if self._locks.get(job_id, 0.0) > time.monotonic():
                return False
            self._locks[job_id] = time.monotonic() + seconds
            return True

    def delete(self, job_id: str) -> None:
        with self._lock:
            record = self._records.pop(job_id, {})
            self._tokens.pop(record.get("token", ""), None)
            for table in (self._done, self._shards, self._attempts):
                table.pop(job_id, None)
