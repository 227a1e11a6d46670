"""Logging for every process: plain text or one JSON object per line, with the request id.

The gateway gives each RPC an id (the client's `x-request-id` metadata when it sends one, else
a new one; services/metrics.py) and holds it in `request_id` while the RPC runs; the
dispatcher copies it into the request's task dict ("request_id", genserve/protocol.py), and the
worker sets it again while it runs the message (a message of several requests carries all
their ids, comma-separated). Every log line of that work carries it.

`GENSERVE_LOG_FORMAT=json` (or `--log-format json`): {"ts", "level", "logger", "message",
"request_id"?, ...extra fields given with `extra=`, "exc_info"?}.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import os
import time
import uuid

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("genserve_request_id", default="")

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


_ID_PREFIX = uuid.uuid4().hex[:8]  # random per process (re-drawn in a forked child)
_id_counter = itertools.count()


def _new_prefix() -> None:
    global _ID_PREFIX, _id_counter
    _ID_PREFIX, _id_counter = uuid.uuid4().hex[:8], itertools.count()


os.register_at_fork(after_in_child=_new_prefix)


def new_request_id() -> str:
    """16 hex characters: this process's random 8, then a counter (uuid4 per RPC cost 1.6%
    of a busy gateway's event loop: an os.urandom call each)."""
    return f"{_ID_PREFIX}{next(_id_counter) & 0xFFFFFFFF:08x}"


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (empty outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; fields given with `extra=` become keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        if getattr(record, "request_id", ""):
            entry["request_id"] = record.request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str, fmt: str = "text") -> None:
    """The root logger of this process: `fmt` "text" or "json", request ids on every line."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
