"""gRPC servicers: validate -> dispatch -> proto. Thin; errors map to codes in errors.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

import grpc

from genserve.errors import NotImplementedYetError
from genserve.protocol import Loop, Op, rpcs_of
from genserve.repository import Manifest
from genserve.services import validation
from genserve.services.errors import streaming, unary
from genserve.services.catalog import ModelCatalog
from genserve.services.dispatch import Dispatcher
from genserve.services.text_generation import TextGenerationService
from genserve.settings import Settings
from genserve.v1 import inference_pb2, inference_pb2_grpc, jobs_pb2, jobs_pb2_grpc, models_pb2, models_pb2_grpc, tensor_pb2


def _tensor(wire: dict, out: tensor_pb2.Tensor) -> None:
    from genserve.tensors import to_proto, from_wire

    to_proto(from_wire(wire), out)


def _later(rpc: str, issue: str) -> NotImplementedYetError:
    return NotImplementedYetError(f"{rpc} is not implemented yet; it arrives with {issue}")


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, settings: Settings, catalog: ModelCatalog, dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.catalog = catalog
        self.dispatcher = dispatcher
        self.text = TextGenerationService(settings, catalog, dispatcher)  # GenerateText, CompleteText, ScoreText

    def _timeout(self, context: grpc.aio.ServicerContext) -> float:
        return validation.timeout_from(context.time_remaining(), self.settings.gateway.default_timeout_s)

    @unary
    async def GenerateImages(self, request: inference_pb2.GenerateImagesRequest, context: grpc.aio.ServicerContext) -> inference_pb2.GenerateImagesResponse:
        manifest = self.catalog.resolve(request.model)
        params = validation.generate_images(request, manifest, self.settings.limits)
        outcome = await self.dispatcher.submit(manifest, Op.GENERATE_IMAGES, params.to_task(), params.samples(), self._timeout(context))
        response = inference_pb2.GenerateImagesResponse(seed=params.seed, model=manifest.ref)
        if "images" in outcome:
            _tensor(outcome["images"], response.images)
        if "latents" in outcome:
            _tensor(outcome["latents"], response.latents)
        response.png.extend(outcome.get("png", []))
        return response

    @unary
    async def EncodeImages(self, request: inference_pb2.EncodeImagesRequest, context: grpc.aio.ServicerContext) -> inference_pb2.EncodeImagesResponse:
        manifest = self.catalog.resolve(request.model)
        params = validation.encode_images(request, manifest, self.settings.limits)
        outcome = await self.dispatcher.submit(manifest, Op.ENCODE_IMAGES, params.to_task(), params.samples(), self._timeout(context))
        response = inference_pb2.EncodeImagesResponse(model=manifest.ref)
        _tensor(outcome["mean"], response.mean)
        _tensor(outcome["logvar"], response.log_variance)
        if "images" in outcome:
            _tensor(outcome["images"], response.reconstructions)
        response.png.extend(outcome.get("png", []))
        return response

    @unary
    async def Denoise(self, request: inference_pb2.DenoiseRequest, context: grpc.aio.ServicerContext) -> inference_pb2.DenoiseResponse:
        manifest = self.catalog.resolve(request.model)
        params = validation.denoise(request, manifest, self.settings.limits)
        outcome = await self.dispatcher.submit(manifest, Op.DENOISE, params.to_task(), params.samples(), self._timeout(context))
        response = inference_pb2.DenoiseResponse(model=manifest.ref)
        if "images" in outcome:
            _tensor(outcome["images"], response.images)
        response.png.extend(outcome.get("png", []))
        return response

    @unary
    async def Classify(self, request: inference_pb2.ClassifyRequest, context: grpc.aio.ServicerContext) -> inference_pb2.ClassifyResponse:
        manifest = self.catalog.resolve(request.model)
        if manifest.loop == Loop.TEXT_CLASSIFIER:
            params = validation.classify_texts(request, manifest, self.settings.limits)
        else:
            params = validation.classify_images(request, manifest, self.settings.limits)
        outcome = await self.dispatcher.submit(manifest, Op.CLASSIFY, params.to_task(), params.samples(), self._timeout(context))
        response = inference_pb2.ClassifyResponse(model=manifest.ref)
        for top in outcome["top"]:  # per input: [[label index, probability], ...], best first
            prediction = response.predictions.add()
            for index, score in top:
                prediction.top.add(label=manifest.labels[index], index=index, score=score)
        return response

    @streaming
    async def GenerateText(self, request: inference_pb2.GenerateTextRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[inference_pb2.GenerateTextChunk]:
        async for chunk in self.text.generate(request, self._timeout(context)):
            yield chunk

    @unary
    async def CompleteText(self, request: inference_pb2.GenerateTextRequest, context: grpc.aio.ServicerContext) -> inference_pb2.GenerateTextResponse:
        return await self.text.complete(request, self._timeout(context))

    @unary
    async def ScoreText(self, request: inference_pb2.ScoreTextRequest, context: grpc.aio.ServicerContext) -> inference_pb2.ScoreTextResponse:
        return await self.text.score(request, self._timeout(context))


class ModelServicer(models_pb2_grpc.ModelServiceServicer):
    def __init__(self, catalog: ModelCatalog, dispatcher: Dispatcher) -> None:
        self.catalog = catalog
        self.dispatcher = dispatcher
        self.readiness = catalog.readiness

    @unary
    async def ListModels(self, request: models_pb2.ListModelsRequest, context: grpc.aio.ServicerContext) -> models_pb2.ListModelsResponse:
        return models_pb2.ListModelsResponse(models=[self._info(m) for m in self.catalog.all()])

    @unary
    async def GetModel(self, request: models_pb2.GetModelRequest, context: grpc.aio.ServicerContext) -> models_pb2.ModelInfo:
        return self._info(self.catalog.resolve(request.model))

    @unary
    async def SetDefaultVersion(self, request: models_pb2.SetDefaultVersionRequest, context: grpc.aio.ServicerContext) -> models_pb2.ModelInfo:
        name, version = validation.default_version(request)
        manifest = await asyncio.to_thread(self.catalog.pin, name, version)  # disk writes, sha256 of the version
        return self._info(manifest)  # the catalog logs the change

    @unary
    async def RescanRepository(self, request: models_pb2.RescanRepositoryRequest, context: grpc.aio.ServicerContext) -> models_pb2.RescanRepositoryResponse:
        found = await asyncio.to_thread(self.catalog.rescan)  # reads every manifest
        return models_pb2.RescanRepositoryResponse(
            added=found.added, removed=found.removed,
            unreadable=[f"{ref}: {reason}" for ref, reason in found.unreadable.items()],
            models=[self._info(m) for m in self.catalog.all()])

    def _info(self, manifest: Manifest) -> models_pb2.ModelInfo:
        serving = manifest.files["model"]
        stats = self.dispatcher.stats(manifest.ref)
        providers = [s.provider for s in stats if s.provider]
        batch_stats = models_pb2.BatchStats()
        for s in stats:
            for size, n in s.requests_per_batch.items():
                batch_stats.requests_per_message[size] += n
            for size, n in s.onnx_calls.items():
                batch_stats.samples_per_onnx_call[size] += n

        def spec(t: object) -> models_pb2.TensorSpec:
            return models_pb2.TensorSpec(name=t.name, shape=t.shape, dtype=t.dtype)

        return models_pb2.ModelInfo(
            name=manifest.name, version=manifest.version, kind=manifest.kind, loop=manifest.loop,
            description=manifest.description, rpcs=rpcs_of(manifest.loop, manifest.files),
            inputs=[spec(t) for t in serving.inputs], outputs=[spec(t) for t in serving.outputs],
            labels=manifest.labels, metrics=manifest.metrics, sha256=serving.sha256,
            latent_dim=manifest.latent_dim, max_batch_size=manifest.serving.max_batch_size,
            execution_provider=providers[0] if providers else "",
            manifest_json=json.dumps(manifest.model_dump()), batch_stats=batch_stats,
            **self._readiness(manifest),
        )

    def _readiness(self, manifest: Manifest) -> dict[str, object]:
        reason = self.readiness.check(manifest)
        latest = self.catalog.resolve(manifest.name).version == manifest.version
        return {"ready": not reason, "not_ready_reason": reason, "latest": latest,
                "pinned": latest and self.catalog.pinned(manifest.name)}


class JobServicer(jobs_pb2_grpc.JobServiceServicer):
    """Batch jobs; the logic is genserve.services.jobs.service.JobService."""

    def __init__(self, jobs: Any) -> None:
        self.jobs = jobs

    @unary
    async def SubmitJob(self, request: jobs_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext) -> jobs_pb2.Job:
        return await self.jobs.submit(request)

    @unary
    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: grpc.aio.ServicerContext) -> jobs_pb2.Job:
        return await self.jobs.get(request.id)

    @streaming
    async def WatchJob(self, request: jobs_pb2.WatchJobRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[jobs_pb2.Job]:
        async for job in self.jobs.watch(request.id):
            yield job

    @unary
    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: grpc.aio.ServicerContext) -> jobs_pb2.Job:
        return await self.jobs.cancel(request.id)

    @unary
    async def ListJobs(self, request: jobs_pb2.ListJobsRequest, context: grpc.aio.ServicerContext) -> jobs_pb2.ListJobsResponse:
        return await self.jobs.list(request)

    @unary
    async def UploadInput(self, request_iterator: AsyncIterator[jobs_pb2.UploadInputChunk], context: grpc.aio.ServicerContext) -> jobs_pb2.UploadInputResponse:
        return await self.jobs.upload(request_iterator)

    @streaming
    async def FetchResult(self, request: jobs_pb2.FetchResultRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[jobs_pb2.ResultChunk]:
        async for chunk in self.jobs.fetch(request):
            yield chunk
