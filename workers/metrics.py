"""The worker's Prometheus metrics and the request ids on its log lines.

Hooks elsewhere in workers/ are one line each and call the functions here: `message_started`
and `message_finished` (tasks.execute, per task message), `model_loaded` (runtime.ModelCache),
`first_token` and `decode_step` (autoregressive.scheduler.DecodeScheduler). `serve` starts the /metrics
endpoint in the worker's entry point (genserve/cli.py).

prometheus_client is imported lazily: in a prefork pool, `serve` first points
PROMETHEUS_MULTIPROC_DIR at a fresh directory (prometheus_client reads it at import) so that
every forked child writes its samples there and the parent's endpoint sums them. The solo and
threads pools (and the embedded mode) run in one process and use the default registry.

Metrics (labels: model = the model's name, op = the task op):

    genserve_worker_messages_total{model,op}                  task messages processed
    genserve_worker_requests_total{model,op,code}             requests in them, by outcome (OK or a code)
    genserve_worker_requests_per_message{model,op}            histogram
    genserve_worker_samples_per_onnx_call{model,op}           histogram: rows of each ONNX Runtime call
    genserve_worker_inference_seconds{model,op}               histogram: running one message (decode,
                                                              ONNX Runtime, encode), queue wait apart
    genserve_worker_queue_wait_seconds{model,op}              histogram: gateway publish -> this worker
                                                              took it (wall clocks of two hosts)
    genserve_worker_model_load_seconds{model}                 histogram: session creation incl. checksum
    genserve_worker_decode_steps_total{model}                 text generation: batched decode steps
    genserve_worker_generated_tokens_total{model}             tokens sampled (prefill's first + each step's)
    genserve_worker_decode_step_rows{model}                   histogram: sequences in each decode step
    genserve_worker_time_to_first_token_seconds{model}        histogram: scheduler admission -> first token

Batch jobs (being built apart) add their progress here as genserve_worker_job_* when they land.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
from typing import Any

from genserve.logs import request_id

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_lock = threading.Lock()
_metrics: Any = None


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        mo = ["model", "op"]
        self.bound: dict[tuple[str, str], Any] = {}  # (model ref, op) -> _Bound, see _children
        self.messages = Counter("genserve_worker_messages", "Task messages processed", mo)
        self.requests = Counter("genserve_worker_requests", "Requests processed, by outcome", [*mo, "code"])
        self.per_message = Histogram("genserve_worker_requests_per_message", "Requests per task message", mo,
                                     buckets=_SIZES)
        self.call_samples = Histogram("genserve_worker_samples_per_onnx_call", "Rows per ONNX Runtime call", mo,
                                      buckets=_SIZES)
        self.inference = Histogram("genserve_worker_inference_seconds", "Time running one task message", mo,
                                   buckets=_SECONDS)
        self.queue_wait = Histogram("genserve_worker_queue_wait_seconds",
                                    "Gateway publish to this worker taking the message", mo, buckets=_SECONDS)
        self.load = Histogram("genserve_worker_model_load_seconds", "ONNX Runtime session creation", ["model"],
                              buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
        self.steps = Counter("genserve_worker_decode_steps", "Batched decode steps", ["model"])
        self.tokens = Counter("genserve_worker_generated_tokens", "Tokens generated", ["model"])
        self.step_rows = Histogram("genserve_worker_decode_step_rows", "Sequences per decode step", ["model"],
                                   buckets=_SIZES)
        self.first_token = Histogram("genserve_worker_time_to_first_token_seconds",
                                     "Scheduler admission to the first sampled token", ["model"], buckets=_SECONDS)


def metrics() -> _Metrics:
    """The process's metrics, created on first use (after any fork)."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = _Metrics()
    return _metrics


def _name(ref: str) -> str:
    return ref.partition(":")[0]


class _Bound:
    """One (model, op)'s children of the message metrics: prometheus_client's `labels()`
    hashes and locks on every call, six times a message."""

    def __init__(self, m: _Metrics, model: str, op: str) -> None:
        self.model, self.op = model, op
        self.queue_wait = m.queue_wait.labels(model, op)
        self.messages = m.messages.labels(model, op)
        self.inference = m.inference.labels(model, op)
        self.per_message = m.per_message.labels(model, op)
        self.call_samples = m.call_samples.labels(model, op)
        self._requests = m.requests
        self._by_code: dict[str, Any] = {}

    def requests(self, code: str) -> Any:
        child = self._by_code.get(code)
        if child is None:
            child = self._by_code[code] = self._requests.labels(self.model, self.op, code)
        return child


def _children(ref: str, op: str) -> _Bound:
    m = metrics()  # the children live with the process's metrics (created after any fork)
    bound = m.bound.get((ref, op))
    if bound is None:
        bound = m.bound[(ref, op)] = _Bound(m, _name(ref), op)
    return bound


def message_started(payload: dict[str, Any]) -> tuple[float, Any]:
    """Queue wait, and the message's request ids on this thread's log lines until it finishes."""
    now = time.time()
    if payload.get("sent_at"):
        _children(payload["model"], payload["op"]).queue_wait.observe(max(0.0, now - payload["sent_at"]))
    ids = ",".join(r.get("request_id", "") for r in payload["requests"] if isinstance(r, dict) and r.get("request_id"))
    return time.perf_counter(), request_id.set(ids)


def message_finished(started: tuple[float, Any], payload: dict[str, Any], result: dict[str, Any]) -> None:
    seconds = time.perf_counter() - started[0]
    op = payload["op"]
    bound = _children(payload["model"], op)
    bound.messages.inc()
    bound.inference.observe(seconds)
    bound.per_message.observe(len(result["results"]))
    for rows in result["calls"]:
        bound.call_samples.observe(rows)
    for outcome in result["results"]:
        bound.requests("OK" if outcome.get("ok") else outcome.get("code", "INTERNAL")).inc()
    if log.isEnabledFor(logging.INFO):  # the extra fields cost more than the disabled call
        log.info("ran %d requests for %s (%s) in %.1f ms", len(result["results"]), payload["model"], op, seconds * 1e3,
                 extra={"model": payload["model"], "op": op, "requests": len(result["results"]),
                        "onnx_calls": result["calls"], "seconds": round(seconds, 6)})
    request_id.reset(started[1])


def model_loaded(ref: str, seconds: float) -> None:
    metrics().load.labels(_name(ref)).observe(seconds)


def first_token(model: str, seconds: float) -> None:
    m = metrics()
    m.first_token.labels(model).observe(seconds)
    m.tokens.labels(model).inc()


def decode_step(model: str, rows: int) -> None:
    m = metrics()
    m.steps.labels(model).inc()
    m.tokens.labels(model).inc(rows)
    m.step_rows.labels(model).observe(rows)


def serve(host: str, port: int | None, multiprocess: bool) -> int | None:
    """Start /metrics on host:port (0: any free port) before the pool starts; the port, or None when off."""
    if port is None:
        return None
    if multiprocess and not os.environ.get(MULTIPROC_ENV):
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="genserve-metrics-")
        atexit.register(shutil.rmtree, os.environ[MULTIPROC_ENV], True)  # the children's sample files
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

    registry = REGISTRY
    if multiprocess:
        from prometheus_client import multiprocess as mp

        registry = CollectorRegistry()
        mp.MultiProcessCollector(registry)
    server, _ = start_http_server(port, addr=host, registry=registry)
    bound = server.server_address[1]
    print(f"genserve worker metrics on http://{host}:{bound}/metrics", flush=True)
    return bound
