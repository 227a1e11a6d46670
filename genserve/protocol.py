"""The gateway <-> worker contract: task, queue and channel names, ops, loops, message types.

Both sides import this module and nothing heavier from each other: the gateway never imports a
worker module for a constant, the worker never imports the gateway. Everything that crosses
Redis is described here:

    task message   TaskPayload  {"model": "vae:1", "op": "generate_images", "requests": [...]}
                   on the queue `<prefix>.<model name>`, Celery task TASK_NAME, msgpack;
                   each request may carry "request_id" (the gateway's id of the RPC, for the
                   worker's log lines) and the payload "sent_at" (wall-clock publish time)
    task result    TaskResult   {"results": [Outcome, ...], "provider", "calls", "worker"}
                   stored by Celery's Redis result backend under RESULT_PREFIX + task id
    stream chunk   StreamChunk  {"start": index of the first token, "tokens": [[id, text, logprob]]}
                   PUBLISHed on STREAM_PREFIX + stream id while a generation runs

A serving loop (the manifest's `loop`) answers a fixed set of gRPC methods; each method sends
one op. `LOOPS` is the one table of both: the gateway checks a request's RPC against it, the
worker's handler registry (`genserve.workers.loops.HANDLERS`) has one handler per (loop, op)
of it, and the export side writes only loops named here.

The Open Inference Protocol (KServe v2, `inference.GRPCInferenceService`, served beside
genserve's own API by services/open_inference.py) has one op: its ModelInfer sends
INFER_TENSORS to the loops in `OPEN_INFERENCE_LOOPS`, whose graphs take and give plain named
tensors. It is a table of its own so that `LOOPS` stays the table of InferenceService.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Iterable, TypedDict


class Op(str, Enum):
    """What a task message asks a worker to do with its requests."""

    GENERATE_IMAGES = "generate_images"
    # {"images", "labels" (conditional), "reconstruct", "tensor", "png"} -> {"mean", "logvar"
    # [, "images" | "png"]}: the posterior of a VAE's encoder graph, decoded by its "decoder" graph
    ENCODE_IMAGES = "encode_images"
    DENOISE = "denoise"
    CLASSIFY = "classify"
    GENERATE_TEXT = "generate_text"
    SCORE_TEXT = "score_text"
    # Open Inference Protocol ModelInfer: {"inputs": {name: wire tensor}, "outputs": [names]}
    # -> {"ok": True, "outputs": {name: wire tensor}}; the graph's own inputs and outputs.
    INFER_TENSORS = "infer_tensors"

    def __str__(self) -> str:  # msgpack and log lines carry the plain value
        return self.value


class Loop(str, Enum):
    """A serving loop: how a worker runs one kind of model. The manifest names one."""

    LATENT_SAMPLER = "latent_sampler"  # z [, label] -> image: VAEs, GANs
    IMAGE_TO_IMAGE = "image_to_image"  # image -> image: denoising autoencoders
    IMAGE_CLASSIFIER = "image_classifier"  # image -> logits
    TEXT_CLASSIFIER = "text_classifier"  # token ids -> logits
    AUTOREGRESSIVE = "autoregressive"  # token ids -> next-token logits with a key/value cache

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class LoopSpec:
    """The gRPC methods a loop answers and the op each one sends."""

    rpcs: dict[str, Op]  # method name (as in the proto) -> op

    @property
    def ops(self) -> frozenset[Op]:
        return frozenset(self.rpcs.values())


LOOPS: dict[Loop, LoopSpec] = {
    Loop.LATENT_SAMPLER: LoopSpec({"GenerateImages": Op.GENERATE_IMAGES, "EncodeImages": Op.ENCODE_IMAGES}),
    Loop.IMAGE_TO_IMAGE: LoopSpec({"Denoise": Op.DENOISE}),
    Loop.IMAGE_CLASSIFIER: LoopSpec({"Classify": Op.CLASSIFY}),
    Loop.TEXT_CLASSIFIER: LoopSpec({"Classify": Op.CLASSIFY}),
    Loop.AUTOREGRESSIVE: LoopSpec({"GenerateText": Op.GENERATE_TEXT, "CompleteText": Op.GENERATE_TEXT,
                                   "ScoreText": Op.SCORE_TEXT}),
}
LOOP_NAMES = tuple(loop.value for loop in LOOPS)

# RPCs that need a graph besides the serving one ("model"): a version whose manifest lacks it
# (a GAN, a VAE exported before the graph existed) does not list the RPC and answers it
# FAILED_PRECONDITION. EncodeImages' reconstructions need the "decoder" graph as well
# (RECONSTRUCTION_GRAPH), checked only when a request asks for them.
RPC_GRAPHS: dict[str, tuple[str, ...]] = {"EncodeImages": ("encoder",)}
RECONSTRUCTION_GRAPH = "decoder"

# Loops whose models answer the Open Inference Protocol's ModelInfer (op INFER_TENSORS): their
# graphs map named tensors to named tensors with nothing in between (no tokenizer, no cache).
OPEN_INFERENCE_LOOPS = frozenset({Loop.LATENT_SAMPLER, Loop.IMAGE_TO_IMAGE, Loop.IMAGE_CLASSIFIER})


def serves_open_inference(loop: str) -> bool:
    """Whether a model with this loop answers ModelInfer."""
    return loop in _OPEN_INFERENCE_NAMES


def serves(loop: str, op: str) -> bool:
    """Whether a worker runs `op` for a model with this loop: an op of its RPCs in LOOPS, or the
    Open Inference Protocol's INFER_TENSORS on a tensor loop."""
    return (loop, op) in _SERVED


# Plain-string lookups of the two above (both run on every request; Enum construction is slow).
_OPEN_INFERENCE_NAMES = frozenset(str(loop.value) for loop in OPEN_INFERENCE_LOOPS)
_SERVED = frozenset({(str(loop.value), str(op.value)) for loop, spec in LOOPS.items() for op in spec.ops}
                    | {(name, str(Op.INFER_TENSORS.value)) for name in _OPEN_INFERENCE_NAMES})


# Ops sent one request per message: each generation streams and finishes on its own, and the
# worker batches generations per decode step instead (genserve.workers.autoregressive).
UNGROUPED_OPS = frozenset({Op.GENERATE_TEXT})


def rpcs_of(loop: str, graphs: Iterable[str] | None = None) -> list[str]:
    """The gRPC methods a model with this loop answers; none for a loop this build does not know.
    With `graphs` (the manifest's roles), only those whose RPC_GRAPHS are all there."""
    spec = LOOPS.get(Loop(loop)) if loop in LOOP_NAMES else None
    rpcs = list(spec.rpcs) if spec else []
    if graphs is None:
        return rpcs
    have = set(graphs)
    return [rpc for rpc in rpcs if have.issuperset(RPC_GRAPHS.get(rpc, ()))]


def graphs_of_op(op: str) -> tuple[str, ...]:
    """The graphs besides "model" a worker reads for `op`: the RPC_GRAPHS of the RPCs sending it."""
    return tuple(sorted({role for spec in LOOPS.values() for rpc, sent in spec.rpcs.items() if sent == op
                         for role in RPC_GRAPHS.get(rpc, ())}))


def op_for(loop: str, rpc: str) -> Op | None:
    """The op `rpc` sends to a model with this loop, or None when the loop does not answer it."""
    if loop not in LOOP_NAMES:
        return None
    return LOOPS[Loop(loop)].rpcs.get(rpc)


# --- names on the broker -------------------------------------------------------------------

TASK_NAME = "genserve.run_batch"  # the one Celery task every online request travels as
RESULT_PREFIX = "celery-task-meta-"  # Celery's Redis result backend key of a task id
STREAM_PREFIX = "genserve:stream:"  # + a stream id: channel of one generation's token chunks


CHUNK_TASK_NAME = "genserve.run_chunk"  # one chunk of a batch job (genserve.workers.jobs)


def consumers_key(queue: str) -> str:
    """Sorted set of the worker processes consuming `queue`: member "<holder>|<processes>",
    score the time its registration expires (workers/failover.py beats it; the gateway's
    batcher sizes its messages in flight by it, services/dispatch.py)."""
    return f"genserve:consumers:{queue}"


def senders_key(queue: str) -> str:
    """Sorted set of the gateways sending to `queue` lately: member a gateway's token, score
    the time it stops counting (each gateway refreshes it while it has traffic)."""
    return f"genserve:senders:{queue}"


def bulk_queue_name(prefix: str, model: str) -> str:
    """The queue of a model's batch-job chunks: `<prefix>.bulk.<model name>`. Workers list it
    after the model's online queue and consume with kombu's `priority` order, so online
    requests waiting on the same worker go first."""
    return f"{prefix}.bulk.{model}"


def job_key_prefix(prefix: str) -> str:
    """Where batch jobs live in Redis (genserve.jobs.store): `<prefix>:job:`..."""
    return f"{prefix}:job"


class JobOp(str, Enum):
    """What an input-file job runs per input line: the online op it reuses."""

    GENERATE_IMAGES = "generate_images"  # generator jobs: no input file
    CLASSIFY = "classify"  # text classifier (JSONL) or image classifier (.npy/.npz/PNGs)
    DENOISE = "denoise"  # image_to_image (.npy/.npz/PNGs)

    def __str__(self) -> str:
        return self.value


class ChunkPayload(TypedDict):
    """One chunk task message: everything else is read from the job's record in Redis."""

    job: str  # job id
    chunk: int  # chunk index, 0..chunks-1
    start: int  # first item (sample index or input line)
    count: int  # items in this chunk
    offset: int  # byte offset of line `start` in a JSONL input, 0 otherwise


def queue_name(prefix: str, model: str) -> str:
    """The Celery queue of a model's online requests: `<prefix>.<model name>`."""
    return f"{prefix}.{model}"


def stream_channel(stream_id: str) -> str:
    return STREAM_PREFIX + stream_id


# --- message types -------------------------------------------------------------------------


class _TaskPayloadOptional(TypedDict, total=False):
    sent_at: float  # wall-clock time the gateway published it (the worker's queue-wait metric)


class TaskPayload(_TaskPayloadOptional):
    """One task message: requests for one model version, all of one op.

    A request dict may carry "request_id": the id the gateway gave its RPC (or the client's
    x-request-id), which the worker puts on its log lines. Workers ignore keys they do not read.
    """

    model: str  # "name:version", resolved by the gateway
    op: str  # an Op value
    requests: list[dict[str, Any]]  # each as the gateway's validation wrote it (`to_task`)


class Outcome(TypedDict, total=False):
    """One request's result: {"ok": True, ...op outputs} or {"ok": False, "code", "message"}."""

    ok: bool
    code: str  # a genserve.errors code, when not ok
    message: str


class TaskResult(TypedDict):
    """What a worker returns for a task message: one outcome per request, in order."""

    results: list[Outcome]
    provider: str  # execution provider of the session that ran it
    calls: list[int]  # rows of each ONNX Runtime call
    worker: str  # "host:pid"


class StreamChunk(TypedDict):
    """Tokens of one generation, published as they become safe to stream."""

    start: int  # index of tokens[0] in the generation's output
    tokens: list[list[Any]]  # [id, text, logprob]


def failed(code: str, message: str) -> Outcome:
    return {"ok": False, "code": code, "message": message}
