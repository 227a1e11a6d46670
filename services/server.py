"""The grpc.aio gateway: create_server(settings) -> (server, port); serve(); graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from genserve.heap import freeze_startup
from genserve.oip import grpc_predict_v2_pb2_grpc as v2_grpc
from genserve.repository import ModelRepository
from genserve.services import auth
from genserve.services.decoding import DecodingInterceptor
from genserve.services.dispatch import Dispatcher
from genserve.services.metrics import MetricsInterceptor
from genserve.services.catalog import ModelCatalog
from genserve.services.open_inference import SERVICE_NAME as OPEN_INFERENCE, OpenInferenceServicer
from genserve.services.jobs.service import create_job_service
from genserve.services.servicer import InferenceServicer, JobServicer, ModelServicer
from genserve.settings import Settings
from genserve.v1 import inference_pb2, inference_pb2_grpc, jobs_pb2, jobs_pb2_grpc, models_pb2, models_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name,
    models_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    jobs_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
    OPEN_INFERENCE,  # the Open Inference Protocol (KServe v2), services/open_inference.py
)


@dataclass
class Gateway:
    server: grpc.aio.Server
    port: int
    dispatcher: Dispatcher
    health: health.HealthServicer
    watcher: asyncio.Task | None = None
    metrics_port: int | None = None  # where /metrics listens; None: off
    jobs: Any = None  # the JobService (services/jobs/service.py)

    HEALTH_INTERVAL_S = 2.0  # how often the broker is pinged for the health status

    async def set_health(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def watch_broker(self) -> None:
        """NOT_SERVING while the broker does not answer, so load balancers route around us."""
        serving = True
        while True:
            now_serving = await self.dispatcher.backend.ping()
            if now_serving != serving:
                log.warning("broker %s: health now %s", "back" if now_serving else "unreachable",
                            "SERVING" if now_serving else "NOT_SERVING")
                await self.set_health(now_serving)
                serving = now_serving
            await asyncio.sleep(self.HEALTH_INTERVAL_S)

    async def stop(self, grace_s: float | None, drain_s: float = 0.0) -> None:
        """Health NOT_SERVING first; for `drain_s` calls are still answered (load balancers
        that poll health move new traffic away meanwhile); then refuse new calls, let in-flight
        ones finish for `grace_s`, and close the backend."""
        if self.watcher is not None:
            self.watcher.cancel()
        await self.set_health(False)
        if drain_s > 0:
            await asyncio.sleep(drain_s)
        await self.server.stop(grace_s)
        if self.jobs is not None:
            await self.jobs.close()
        await self.dispatcher.close()
        self.dispatcher.metrics.close()


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _enable_reflection(server: grpc.aio.Server) -> None:
    """Server reflection as v1alpha (what grpcio ships) and as v1 (what newer clients ask
    first): the two protocols have identical messages, so one servicer answers both."""
    servicer = reflection.aio.ReflectionServicer(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": v1}),))


async def create_server(settings: Settings, dispatcher: Dispatcher | None = None) -> Gateway:
    """Build and start the gateway; with port 0 the OS picks a free port."""
    limit = settings.gateway.max_message_mb * 1024 * 1024
    dispatcher = dispatcher or Dispatcher(settings)
    interceptors = [*auth.interceptors(settings.auth), DecodingInterceptor(), MetricsInterceptor(dispatcher.metrics)]
    server = grpc.aio.server(interceptors=interceptors, options=[
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        ("grpc.so_reuseport", 0),
    ])
    catalog = ModelCatalog(ModelRepository(settings.model_repository), settings.gateway.manifest_ttl_s)
    # The first scan verifies each name's newest version (sha256, ONNX parse) to pick its default:
    # done here, off the event loop, not in the first request.
    await asyncio.to_thread(catalog.rescan)
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(InferenceServicer(settings, catalog, dispatcher), server)
    models_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(catalog, dispatcher), server)
    v2_grpc.add_GRPCInferenceServiceServicer_to_server(OpenInferenceServicer(settings, catalog, dispatcher), server)
    jobs = create_job_service(settings, catalog, dispatcher)
    jobs_pb2_grpc.add_JobServiceServicer_to_server(JobServicer(jobs), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _enable_reflection(server)
    address = f"{settings.gateway.host}:{settings.gateway.port}"
    credentials = auth.server_credentials(settings.gateway)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {settings.gateway.host}:{settings.gateway.port}")
    await server.start()
    gateway = Gateway(server, port, dispatcher, health_servicer, jobs=jobs)
    dispatcher.metrics.watch(dispatcher, settings.embedded)
    dispatcher.metrics.watch_jobs(jobs)
    if settings.gateway.metrics_port is not None:
        gateway.metrics_port = dispatcher.metrics.serve(settings.gateway.host, settings.gateway.metrics_port)
        log.info("metrics on http://%s:%d/metrics", settings.gateway.host, gateway.metrics_port)
    jobs.start()
    await gateway.set_health(True)
    gateway.watcher = asyncio.get_running_loop().create_task(gateway.watch_broker())
    mode = "embedded (no broker)" if settings.embedded else f"broker {settings.broker_url}"
    log.info("gateway listening on %s:%d, %s, models in %s", settings.gateway.host, port, mode,
             settings.model_repository)
    return gateway


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM, then stop gracefully."""
    gateway = await create_server(settings)
    freeze_startup()  # no full garbage-collector pass walks start-up's objects again (genserve/heap.py)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"genserve gateway ready on {settings.gateway.host}:{gateway.port}", flush=True)
    if ready is not None:
        ready.set()
    await stop.wait()
    log.info("stopping: health NOT_SERVING, %.1f s drain, then %.1f s grace for in-flight requests",
             settings.gateway.drain_s, settings.gateway.grace_s)
    await gateway.stop(settings.gateway.grace_s, settings.gateway.drain_s)
