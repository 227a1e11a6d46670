"""JobService's logic behind the thin servicer: submit, get, watch, list, cancel, upload, fetch.

The gateway keeps no job state of its own: every answer is read from the store, so any
gateway (or a restarted one) answers for every job. Store calls are blocking Redis round
trips and run on threads. A background pass every few seconds (`maintain`) finishes jobs
whose last chunk's worker died before writing the manifest, re-publishes the chunks of jobs
whose submit was cut off mid-publish (a gateway killed during SubmitJob), and deletes
finished jobs and their files after the retention time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

from genserve.errors import InvalidArgumentError, JobNotFoundError
from genserve.jobs import inputs, layout, results
from genserve.jobs.store import ACTIVE, CANCELLED, TERMINAL, JobStore
from genserve.protocol import bulk_queue_name
from genserve.services.jobs import planner
from genserve.services.jobs.convert import NAMES, to_proto
from genserve.services.catalog import ModelCatalog
from genserve.settings import Settings
from genserve.v1 import jobs_pb2

log = logging.getLogger(__name__)

FETCH_PIECE = 1 << 20  # bytes per ResultChunk
MAINTAIN_S = 5.0  # how often `maintain` runs
UNPUBLISHED_GRACE_S = 30.0  # a submit still publishing after this long was cut off


class JobService:
    def __init__(self, settings: Settings, catalog: ModelCatalog, store: JobStore, publisher: Any) -> None:
        self.settings = settings
        self.jobs = settings.jobs
        self.catalog = catalog
        self.store = store
        self.publisher = publisher
        self._task: asyncio.Task | None = None

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # --- submit -----------------------------------------------------------------------------

    async def submit(self, request: jobs_pb2.SubmitJobRequest) -> jobs_pb2.Job:
        token = request.client_token
        if token:
            existing = await self._call(self.store.by_token, token)
            if existing:
                return await self.get(existing)
        plan = await self._call(self._plan, request, token)
        if await self._call(self.store.active_count) >= self.jobs.max_active_jobs:
            raise planner.ResourceExhaustedError(
                f"{self.jobs.max_active_jobs} jobs are queued or running (jobs.max_active_jobs); retry later")
        echoed = jobs_pb2.SubmitJobRequest()
        echoed.CopyFrom(request)
        if request.WhichOneof("spec") == "generate_images":
            echoed.generate_images.seed = results.spec_of(plan.record)["seed"]
        plan.record["request"] = base64.b64encode(echoed.SerializeToString()).decode()
        record, created = await self._call(self.store.create, plan.record, token)
        if created:
            Path(record["dir"]).mkdir(parents=True, exist_ok=True)
            await self._call(self.publisher.publish, plan.queue, plan.chunks)
            await self._call(self.store.update, record["id"], enqueued=1)
            log.info("job %s: %d items in %d chunks on %s", record["id"], record["total"], record["chunks"], plan.queue)
        return await self.get(record["id"])

    def _plan(self, request: jobs_pb2.SubmitJobRequest, token: str) -> planner.Plan:
        kind = request.WhichOneof("spec")
        if kind is None:
            raise InvalidArgumentError("give a job: generate_images or input_file")
        job = getattr(request, kind)
        manifest = self.catalog.resolve(job.model)
        build = planner.generator if kind == "generate_images" else planner.input_file
        return build(job, manifest, self.settings, token)

    # --- reading ----------------------------------------------------------------------------

    def _load(self, job_id: str) -> dict[str, Any]:
        record = self.store.get(job_id) if job_id else None
        if record is None:
            raise JobNotFoundError(f"no job {job_id!r} (finished jobs are kept {self.jobs.retention_hours:g} h)")
        return record

    def _snapshot(self, job_id: str) -> jobs_pb2.Job:
        record = self._load(job_id)
        done = self.store.chunks_done(job_id)
        if record["state"] in ACTIVE and done >= record["chunks"]:
            results.finalize(self.store, job_id)  # its last worker died before finishing it
            record = self._load(job_id)
        files = None
        if record["state"] in TERMINAL and (Path(record["dir"]) / layout.MANIFEST).exists():
            files = [f["path"] for f in layout.read_manifest(Path(record["dir"]))["files"]]
        return to_proto(record, done, files)

    async def get(self, job_id: str) -> jobs_pb2.Job:
        return await self._call(self._snapshot, job_id)

    async def watch(self, job_id: str) -> AsyncIterator[jobs_pb2.Job]:
        last = None
        while True:
            job = await self.get(job_id)
            key = (job.state, job.done, job.failed)
            if key != last:
                last = key
                yield job
            if NAMES[job.state] in TERMINAL:
                return
            await asyncio.sleep(self.jobs.poll_interval_s)

    async def cancel(self, job_id: str) -> jobs_pb2.Job:
        record = await self._call(self._load, job_id)
        if await self._call(self.store.transition, job_id, ACTIVE, CANCELLED, finished=time.time()):
            # Workers skip a cancelled job's chunks anyway; taking them off the queue makes the
            # stop take one Redis script instead of a Celery round trip per pending chunk.
            queue = bulk_queue_name(self.settings.queue_prefix, record["model"].split(":")[0])
            removed = await self._call(self.publisher.withdraw, queue, job_id)
            log.info("job %s cancelled; %d pending chunks taken off %s", job_id, removed, queue)
        return await self.get(job_id)

    async def list(self, request: jobs_pb2.ListJobsRequest) -> jobs_pb2.ListJobsResponse:
        size = request.page_size or 50
        if not 1 <= size <= 1000:
            raise InvalidArgumentError(f"page_size must be 0 (50) or 1..1000, got {size}")
        try:
            offset = int(request.page_token or 0)
        except ValueError as exc:
            raise InvalidArgumentError(f"page_token must come from a ListJobsResponse, got {request.page_token!r}") from exc
        return await self._call(self._list, offset, size, request.state)

    def _list(self, offset: int, size: int, state: int) -> jobs_pb2.ListJobsResponse:
        response = jobs_pb2.ListJobsResponse()
        while len(response.jobs) < size:
            ids = self.store.list(offset, size)
            if not ids:
                return response
            for job_id in ids:
                offset += 1
                record = self.store.get(job_id)
                if record is not None and (not state or NAMES[state] == record["state"]):
                    response.jobs.append(to_proto(record, self.store.chunks_done(job_id)))
                    if len(response.jobs) == size:
                        break
        if self.store.list(offset, 1):
            response.next_page_token = str(offset)
        return response

    # --- files ------------------------------------------------------------------------------

    async def upload(self, chunks: AsyncIterator[jobs_pb2.UploadInputChunk]) -> jobs_pb2.UploadInputResponse:
        limit = self.jobs.max_upload_mb << 20
        first = await anext(aiter(chunks), None)
        if first is None or first.WhichOneof("part") != "filename":
            raise InvalidArgumentError("an upload starts with a message holding its filename")
        name = Path(first.filename).name
        if not name or name.startswith("."):
            raise InvalidArgumentError(f"filename must be a plain file name, got {first.filename!r}")
        upload_id = f"{uuid.uuid4().hex[:12]}-{name}"
        path = self.jobs.root / "uploads" / upload_id
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{upload_id}.tmp")
        digest, size = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as f:
                async for chunk in chunks:
                    size += len(chunk.data)
                    if size > limit:
                        raise planner.ResourceExhaustedError(f"uploads are limited to {self.jobs.max_upload_mb} MB (jobs.max_upload_mb)")
                    digest.update(chunk.data)
                    f.write(chunk.data)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return jobs_pb2.UploadInputResponse(upload_id=upload_id, size=size, sha256=digest.hexdigest())

    async def fetch(self, request: jobs_pb2.FetchResultRequest) -> AsyncIterator[jobs_pb2.ResultChunk]:
        record = await self._call(self._load, request.id)
        relative = request.path or layout.MANIFEST
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise InvalidArgumentError(f"path must be a file of the job (one of Job.artifacts), got {relative!r}")
        path = Path(record["dir"]) / relative
        if not path.resolve().is_relative_to(Path(record["dir"]).resolve()):  # a symlink leading out of the job
            raise InvalidArgumentError(f"path must be a file of the job (one of Job.artifacts), got {relative!r}")
        if not path.is_file():
            raise JobNotFoundError(f"job {request.id} has no file {relative!r} (yet)")
        size = path.stat().st_size
        with open(path, "rb") as f:
            offset = 0
            while True:
                data = await asyncio.to_thread(f.read, FETCH_PIECE)
                if not data and offset:
                    return
                yield jobs_pb2.ResultChunk(path=relative, offset=offset, data=data, size=size)
                offset += len(data)
                if not data:
                    return

    # --- upkeep -----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._maintain_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        close = getattr(self.publisher, "close", None)
        if close:
            close()

    async def _maintain_forever(self) -> None:
        while True:
            try:
                await self._call(self.maintain)
            except Exception:
                log.exception("job upkeep failed; retrying in %.0f s", MAINTAIN_S)
            await asyncio.sleep(MAINTAIN_S)

    def maintain(self) -> None:
        now = time.time()
        offset = 0
        while ids := self.store.list(offset, 500):
            offset += len(ids)
            for job_id in ids:
                record = self.store.get(job_id)
                if record is None:
                    continue
                if record["state"] in ACTIVE:
                    if not record["enqueued"] and now - record["created"] > UNPUBLISHED_GRACE_S:
                        self.republish(record)
                    elif self.store.chunks_done(job_id) >= record["chunks"]:
                        results.finalize(self.store, job_id)
                    elif now - record["updated"] > self.jobs.stall_s:
                        self.recover_lost(record)
                elif record["finished"] and now - record["finished"] > self.jobs.retention_hours * 3600:
                    shutil.rmtree(record["dir"], ignore_errors=True)
                    self.store.delete(job_id)
                    log.info("job %s expired: record and files deleted", job_id)

    def republish(self, record: dict[str, Any], only: set[int] | None = None) -> int:
        """Publish every chunk not done yet, or those of `only` (a chunk published twice runs
        once: SADD); how many."""
        spec = results.spec_of(record)
        total, size = record["total"], record["chunk_size"]
        offsets = inputs.plan_jsonl(Path(spec["input"]), size)[1] if spec.get("input_format") == "jsonl" else None
        done = self.store.done_chunks(record["id"])
        chunks = [c for c in planner._chunks(record["id"], total, size, offsets)
                  if c["chunk"] not in done and (only is None or c["chunk"] in only)]
        self.publisher.publish(self._queue(record), chunks)
        self.store.update(record["id"], enqueued=1)
        if only is None:
            log.warning("job %s: re-published %d chunks of a submit that was cut off", record["id"], len(chunks))
        return len(chunks)

    def _queue(self, record: dict[str, Any]) -> str:
        return bulk_queue_name(self.settings.queue_prefix, record["model"].split(":")[0])

    def recover_lost(self, record: dict[str, Any]) -> None:
        """A job without progress for jobs.stall_s: re-publish the chunks that are neither done
        nor have a live message (queued, or held by a worker within stall_s). kombu's Redis
        transport loses a message popped by BRPOP for a worker killed before it stored it as
        unacked, and a worker killed mid-restore leaves kombu's restore mutex held."""
        pending = self.publisher.pending(self._queue(record), record["id"], self.jobs.stall_s)
        if pending is None:
            return
        done = self.store.done_chunks(record["id"])
        lost = set(range(record["chunks"])) - done - pending
        if lost:
            self.republish(record, only=lost)
            log.warning("job %s: re-published %d chunks whose messages were lost: %s", record["id"], len(lost),
                        sorted(lost)[:10])
        self.store.update(record["id"], updated=time.time())  # look again one stall_s from now


def create_job_service(settings: Settings, catalog: ModelCatalog, dispatcher: Any) -> JobService:
    """The store and publisher of this mode: Redis + Celery messages, or memory + local threads
    running the same ChunkRunner on the embedded backend's model cache."""
    from genserve.jobs.store import LocalJobStore, RedisJobStore
    from genserve.protocol import job_key_prefix
    from genserve.services.jobs.publisher import CeleryChunkPublisher, LocalChunkPublisher

    if settings.embedded:
        from genserve.repository import ModelRepository
        from genserve.workers.jobs.runner import ChunkRunner
        from genserve.workers.runtime import ModelCache
        from genserve.workers.tasks import execute

        cache = getattr(dispatcher.backend, "_cache", None) or ModelCache(
            ModelRepository(settings.model_repository), settings.worker)
        store: JobStore = LocalJobStore()
        runner = ChunkRunner(store, lambda payload: execute(payload, cache), settings.jobs.fsync)
        return JobService(settings, catalog, store, LocalChunkPublisher(runner.run))
    from genserve.workers.app import create_app

    store = RedisJobStore(settings.backend_url, job_key_prefix(settings.queue_prefix))
    publisher = CeleryChunkPublisher(create_app(settings, with_results=False), settings.broker_url)
    return JobService(settings, catalog, store, publisher)
