"""How a worker stores and announces a task's result: Celery's Redis backend, in one round trip.

Celery's `RedisBackend` stores a result with two round trips: a GET of the stored meta (a
result that is already SUCCESS is never overwritten: a redelivered task whose first run
did finish must not replace that result), then a pipelined SET + PUBLISH. The gateway
reads the PUBLISH (services/backends/celery.py), so both trips lie on every request's
path. `ResultBackend` does the same check, SET (with the same expiry) and PUBLISH in one
Lua script, atomically: one round trip, and no window between the check and the write. The
key, the stored meta and the channel are Celery's own, so `AsyncResult`, Flower and the
gateway read them unchanged. When the broker is the same Redis, the script also acks the
task's message (workers/receipts.py): kombu's own ack round trip is skipped.
"""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import datetime, timezone
from typing import Any

from celery import states
from celery.backends.redis import RedisBackend
from kombu.utils.encoding import bytes_to_str
from redis.exceptions import ConnectionError, NoScriptError, TimeoutError

from genserve.workers import receipts

# KEYS[1] the result key; ARGV[1] the encoded meta, ARGV[2] seconds to keep it (0: forever).
# The stored meta is msgpack or JSON (result_accept_content); a SUCCESS one stays.
# With KEYS[2], KEYS[3] (kombu's unacked_index and unacked) and ARGV[3] (the message's delivery
# tag), the message is acked in the same step (workers/receipts.py), whether this result or an
# earlier run's is the one kept.
_STORE = """
if KEYS[2] then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('HDEL', KEYS[3], ARGV[3])
end
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta
  if string.sub(current, 1, 1) == '{' then ok, meta = pcall(cjson.decode, current)
  else ok, meta = pcall(cmsgpack.unpack, current) end
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return 0 end
end
if tonumber(ARGV[2]) > 0 then redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
else redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


def backend_url(url: str) -> str:
    """The Celery `backend` argument for a result backend URL: this class for redis(s)://."""
    if url.startswith(("redis://", "rediss://")):
        return f"{__name__}:ResultBackend+{url}"
    return url


class ResultBackend(RedisBackend):
    """Celery's Redis result backend; `_store_result` in one atomic round trip."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._store_sha = hashlib.sha1(_STORE.encode()).hexdigest()  # EVALSHA's name for the script
        self._extended = bool(self.app.conf.find_value_for_key("extended", "result"))
        self._timezone = self.app.timezone
        self._local = threading.local()  # per thread (the solo loop, the bulk thread): (pid, connection)

    def _get_result_meta(self, result: Any, state: str, traceback: Any, request: Any, format_date: bool = True,
                         encode: bool = False) -> dict[str, Any]:
        """Celery's meta, with its `result_extended` setting read once, not per result (that
        lookup was 3% of a solo worker's CPU per message); extended results: Celery's own."""
        if self._extended:
            return super()._get_result_meta(result, state, traceback, request, format_date, encode)
        date_done = None
        if state in self.READY_STATES:  # app.now(), without its to_utc of a time that is UTC already
            now = datetime.now(timezone.utc).astimezone(self._timezone)
            date_done = now.isoformat() if format_date else now
        meta = {"status": state, "result": result, "traceback": traceback,
                "children": self.current_task_children(request), "date_done": date_done}
        if request and getattr(request, "group", None):
            meta["group_id"] = request.group
        if request and getattr(request, "parent_id", None):
            meta["parent_id"] = request.parent_id
        return meta

    def _store_result(self, task_id: Any, result: Any, state: str, traceback: Any = None,
                      request: Any = None, **kwargs: Any) -> Any:
        meta = self._get_result_meta(result=result, state=state, traceback=traceback, request=request)
        meta["task_id"] = bytes_to_str(task_id)
        expires = self.failure_expires if state == states.FAILURE else self.expires  # as _set_with_state
        # A successful online task's message is acked with its result (one round trip less);
        # anything else is acked by kombu after this, as Celery does.
        receipt = receipts.take_tag(meta["task_id"]) if state == states.SUCCESS else None
        self.ensure(self._store_once, (self.get_key_for_task(task_id), self.encode(meta), expires, receipt))
        if receipt is not None:
            receipts.acked_by_result(receipt[0])
        return result

    def _store_once(self, key: bytes | str, value: bytes | str, expires: Any,
                    receipt: tuple[str, str, str] | None = None) -> int:
        seconds = int(expires.total_seconds() if hasattr(expires, "total_seconds") else expires or 0)
        if receipt is None:
            keys, args = [key], [value, seconds]
        else:
            tag, index_key, unacked_key = receipt
            keys, args = [key, index_key, unacked_key], [value, seconds, tag]
        return self._evalsha(keys, args)

    def _evalsha(self, keys: list[Any], args: list[Any]) -> Any:
        """The script on this thread's own connection: EVALSHA (EVAL when Redis lacks it),
        without the pool, retry and Script wrappers around every call (about a third of the
        store's CPU); a connection error drops the connection and raises, and `ensure`'s
        retry policy runs it again on a new one, as before."""
        connection = self._connection()
        try:
            connection.send_command("EVALSHA", self._store_sha, len(keys), *keys, *args)
            try:
                return connection.read_response()
            except NoScriptError:  # Redis restarted or flushed its scripts
                connection.send_command("EVAL", _STORE, len(keys), *keys, *args)
                return connection.read_response()
        except (ConnectionError, TimeoutError, OSError):
            connection.disconnect()
            raise

    def _connection(self) -> Any:
        held = getattr(self._local, "held", None)
        if held is None or held[0] != os.getpid():  # none yet, or made before a fork
            held = (os.getpid(), self.client.connection_pool.make_connection())
            self._local.held = held
        return held[1]
