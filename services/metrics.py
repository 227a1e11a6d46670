"""The gateway's Prometheus metrics, its /metrics endpoint, and each RPC's request id.

One `GatewayMetrics` per gateway, with a registry of its own (tests run several gateways in one
process). `MetricsInterceptor` sees every RPC of genserve's services and of the Open Inference
Protocol: it gives the RPC its request id (the client's `x-request-id` metadata, else a new one;
echoed in the trailing metadata, carried into the task message by the dispatcher, see
genserve/logs.py) and counts it by final status code. The batcher reports each message it forms
through `BatchObserver`; in-flight and pending requests and the broker's queue depths are read
when scraped.

Metrics (model = the model's name; requests to unknown or malformed model names count as ""):

    genserve_gateway_requests_total{service,rpc,model,code}        RPCs answered, by status code
    genserve_gateway_request_duration_seconds{service,rpc,model}   histogram: end to end, in the gateway
    genserve_gateway_time_to_first_response_seconds{service,rpc,model}  histogram: server-streaming
                                                                   RPCs (GenerateText: time to first token)
    genserve_gateway_queue_wait_seconds{model,op}                  histogram: a request waiting in the
                                                                   batcher for its message to go
    genserve_gateway_message_duration_seconds{model,op}            histogram: a task message sent ->
                                                                   its result (broker, worker, inference)
    genserve_gateway_requests_per_message{model,op}                histogram
    genserve_gateway_samples_per_message{model,op}                 histogram
    genserve_gateway_inflight_messages{model,op}                   gauge: task messages awaiting results
    genserve_gateway_pending_requests{model,op}                    gauge: requests queued or in flight
    genserve_gateway_queue_depth{queue}                            gauge: messages waiting in a model's
                                                                   broker queue (its last LLEN)

Batch jobs (`watch_jobs`), read when scraped:

    genserve_jobs{state}                                           gauge: jobs by state (QUEUED, RUNNING,
                                                                   SUCCEEDED, ...) at the last upkeep pass
    genserve_job_items_total{model,kind}                           items done (failed items included) by
                                                                   kind: generate_images, classify,
                                                                   denoise, generate_text
    genserve_job_chunks_total{model,outcome}                       chunks done, retried or failed

The two counters are the cluster's totals from the job store (P:stats, counted in the same
Redis script that counts a chunk once), so every gateway reports the same values and a
gateway restart does not reset them; the embedded store counts in memory.

The worker's own metrics are in genserve/workers/metrics.py; in the embedded mode (the worker's
code in this process) the gateway's endpoint serves both.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

import grpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from genserve.logs import new_request_id, request_id
from genserve.repository import NAME_RE

SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
REQUEST_ID_KEY = "x-request-id"
UNCOUNTED = ("grpc.health.v1.Health", "grpc.reflection.")  # probes and tooling, not traffic


class BatchObserver:
    """What one (model, op) batcher reports: each message it sends and how long its result took."""

    def __init__(self, metrics: GatewayMetrics, model: str, op: str) -> None:
        labels = (model, op)
        self._wait = metrics.queue_wait.labels(*labels)
        self._duration = metrics.message_duration.labels(*labels)
        self._requests = metrics.requests_per_message.labels(*labels)
        self._samples = metrics.samples_per_message.labels(*labels)

    def sent(self, waits: list[float], samples: int) -> None:
        for wait in waits:
            self._wait.observe(wait)
        self._requests.observe(len(waits))
        self._samples.observe(samples)

    def finished(self, seconds: float) -> None:
        self._duration.observe(seconds)


class GatewayMetrics:
    """The gateway's metrics in a registry of their own; `serve` starts the /metrics endpoint."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        rpc = ["service", "rpc", "model"]
        mo = ["model", "op"]
        r = self.registry
        self.requests = Counter("genserve_gateway_requests", "RPCs answered, by status code", [*rpc, "code"], registry=r)
        self.duration = Histogram("genserve_gateway_request_duration_seconds", "RPC time in the gateway, end to end",
                                  rpc, buckets=SECONDS, registry=r)
        self.first_response = Histogram("genserve_gateway_time_to_first_response_seconds",
                                        "Server-streaming RPCs: time to the first message", rpc, buckets=SECONDS,
                                        registry=r)
        self.queue_wait = Histogram("genserve_gateway_queue_wait_seconds", "Wait in the batcher before the message goes",
                                    mo, buckets=SECONDS, registry=r)
        self.message_duration = Histogram("genserve_gateway_message_duration_seconds",
                                          "Task message sent to its result", mo, buckets=SECONDS, registry=r)
        self.requests_per_message = Histogram("genserve_gateway_requests_per_message", "Requests per task message",
                                              mo, buckets=SIZES, registry=r)
        self.samples_per_message = Histogram("genserve_gateway_samples_per_message", "Samples per task message",
                                             mo, buckets=SIZES, registry=r)
        self._server: Any = None

    def observer(self, ref: str, op: str) -> BatchObserver:
        return BatchObserver(self, ref.partition(":")[0], op)

    def watch(self, dispatcher: Any, embedded: bool) -> None:
        """Gauges read from the dispatcher's batchers and backend at each scrape; in the embedded
        mode the worker metrics of this process too."""
        self.registry.register(_Gauges(dispatcher))
        if embedded:
            self.registry.register(_Default())

    def watch_jobs(self, jobs: Any) -> None:
        """Job metrics from the JobService (services/jobs/service.py) at each scrape."""
        self.registry.register(_JobMetrics(jobs))

    def serve(self, host: str, port: int) -> int:
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        return self._server.server_address[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Gauges:
    def __init__(self, dispatcher: Any) -> None:
        self._dispatcher = dispatcher

    def collect(self) -> Iterable[Any]:
        inflight = GaugeMetricFamily("genserve_gateway_inflight_messages", "Task messages awaiting results",
                                     labels=["model", "op"])
        pending = GaugeMetricFamily("genserve_gateway_pending_requests", "Requests queued or in flight",
                                    labels=["model", "op"])
        for (ref, op), batcher in list(self._dispatcher.batchers().items()):
            labels = [ref.partition(":")[0], op]
            inflight.add_metric(labels, batcher.inflight)
            pending.add_metric(labels, batcher.pending)
        depth = GaugeMetricFamily("genserve_gateway_queue_depth", "Messages waiting in a model's broker queue",
                                  labels=["queue"])
        depths = getattr(self._dispatcher.backend, "queue_depths", None)
        for queue, n in (depths() if depths else {}).items():
            depth.add_metric([queue], n)
        return [inflight, pending, depth]


class _JobMetrics:
    def __init__(self, jobs: Any) -> None:
        self._jobs = jobs

    def collect(self) -> Iterable[Any]:
        states = GaugeMetricFamily("genserve_jobs", "Jobs by state (at the gateway's last upkeep pass)", labels=["state"])
        for state, n in sorted(self._jobs.states.items()):
            states.add_metric([state], n)
        items = CounterMetricFamily("genserve_job_items", "Job items done, failed ones included", labels=["model", "kind"])
        chunks = CounterMetricFamily("genserve_job_chunks", "Job chunks by outcome", labels=["model", "outcome"])
        try:
            stats = self._jobs.store.stats()
        except Exception:  # Redis away: the gauges above still answer
            stats = {}
        for field, n in sorted(stats.items()):
            family, model, label = (field.split("|") + ["", ""])[:3]
            {"items": items, "chunks": chunks}.get(family, items).add_metric([model, label], n)
        return [states, items, chunks]


class _Default:
    """The process's default registry (the worker's metrics in the embedded mode)."""

    def collect(self) -> Iterable[Any]:
        return REGISTRY.collect()


def _model_label(request: Any, code: grpc.StatusCode) -> str:
    ref = getattr(request, "model", None) or getattr(request, "model_name", None) or getattr(request, "name", "")
    name = ref.partition(":")[0] if isinstance(ref, str) else ""
    if code == grpc.StatusCode.NOT_FOUND or not NAME_RE.match(name):
        return ""  # unbounded client-chosen names must not become label values
    return name


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Request id, status-code counts and latency for every unary and server-streaming RPC."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.lstrip("/").startswith(UNCOUNTED):
            return handler
        path, _, rpc = details.method.rpartition("/")
        service = path.rsplit(".", 1)[-1]
        given = dict(details.invocation_metadata or ()).get(REQUEST_ID_KEY, "")
        rid = given[:64] if isinstance(given, str) and given else ""
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(handler.unary_unary, service, rpc, rid),
                request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(handler.unary_stream, service, rpc, rid),
                request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)
        return handler

    def _begin(self, context: grpc.aio.ServicerContext, rid: str) -> Any:
        rid = rid or new_request_id()
        context.set_trailing_metadata(((REQUEST_ID_KEY, rid),))
        return request_id.set(rid)

    def _end(self, service: str, rpc: str, request: Any, code: grpc.StatusCode, started: float) -> None:
        model = _model_label(request, code)
        self.metrics.requests.labels(service, rpc, model, code.name).inc()
        self.metrics.duration.labels(service, rpc, model).observe(time.perf_counter() - started)

    def _unary(self, method: Callable[..., Awaitable[Any]], service: str, rpc: str, rid: str) -> Callable[..., Awaitable[Any]]:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started, token = time.perf_counter(), self._begin(context, rid)
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await method(request, context)
                code = context.code() or grpc.StatusCode.OK
                return response
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                self._end(service, rpc, request, _status(code), started)
                request_id.reset(token)

        return unary

    def _stream(self, method: Callable[..., AsyncIterator[Any]], service: str, rpc: str, rid: str) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started, token = time.perf_counter(), self._begin(context, rid)
            code, first = grpc.StatusCode.UNKNOWN, True
            try:
                async for item in method(request, context):
                    if first:
                        first = False
                        self.metrics.first_response.labels(service, rpc, _model_label(request, grpc.StatusCode.OK)).observe(
                            time.perf_counter() - started)
                    yield item
                code = context.code() or grpc.StatusCode.OK
            except (asyncio.CancelledError, GeneratorExit):
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                self._end(service, rpc, request, _status(code), started)
                try:
                    request_id.reset(token)
                except ValueError:  # an async generator may be finalised in another context
                    pass

        return stream


def _status(code: Any) -> grpc.StatusCode:
    """context.code() is a StatusCode, or in some grpcio versions its integer value."""
    if isinstance(code, grpc.StatusCode):
        return code
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN
