"""Settings, built once in each process's entry point and passed down through constructors.

Environment variables use the `GENSERVE_` prefix and `__` for nesting
(`GENSERVE_BATCHING__MAX_QUEUE_DELAY_MS=1`); CLI flags override them; tests pass constructor
arguments. Nothing here is read at import time. Model hyperparameters are not settings: they
travel inside the checkpoint, the ONNX metadata and the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseModel):
    host: str = "127.0.0.1"  # 0.0.0.0 in containers; loopback keeps a laptop's demo private
    port: int = 50051  # 0 picks a free port (tests)
    default_timeout_s: float = 30.0  # deadline given to requests that carry none
    max_message_mb: int = 64  # largest request or response message
    max_pending_requests: int = 4096  # per model, waiting or in flight in this gateway
    max_queue_depth: int = 10_000  # Celery messages waiting in a model's queue before refusing
    grace_s: float = 5.0  # in-flight RPCs get this long to finish on SIGTERM
    # On SIGTERM health says NOT_SERVING this long before new calls are refused (they are
    # still answered meanwhile), so health-checking load balancers drain the gateway first.
    drain_s: float = 1.0
    manifest_ttl_s: float = 2.0  # how stale the gateway's view of the repository may be
    metrics_port: int | None = None  # Prometheus /metrics on host:port; None: off, 0: any free port
    tls_cert: Path | None = None  # PEM certificate chain: serve TLS instead of plaintext
    tls_key: Path | None = None  # its PEM private key
    tls_client_ca: Path | None = None  # PEM CA bundle: mutual TLS, client certificates required


class BatchingSettings(BaseModel):
    """Gateway-side grouping of concurrent requests into one task message (services/batcher.py)."""

    enabled: bool = True  # off: one task message per request (for comparison)
    max_batch_samples: int = 256  # samples in one task message
    max_queue_delay_ms: float = 5.0  # a request never waits longer than this for a free slot
    # With a slot free, wait up to this long (and half a round trip) for as many requests as
    # the last batch carried: its clients come back together. 0: send whatever waits at once.
    max_linger_ms: float = 2.0
    # Messages in flight per model per gateway before requests wait and group. 0 (auto): one
    # per worker process consuming the model's queue, as the workers announce themselves
    # (workers/failover.py); 1 when none is known (and in embedded mode).
    max_inflight_batches: int = 0


class WorkerSettings(BaseModel):
    queues: list[str] = Field(default_factory=list)  # model names to consume; empty: every model
    execution_provider: Literal["auto", "cpu", "cuda", "tensorrt"] = "auto"
    intra_op_threads: int = 0  # ONNX Runtime threads per session; 0: cores / worker processes
    inter_op_threads: int = 1  # parallel graph branches; these graphs are sequential
    # Idle intra-op threads spin waiting for work (ONNX Runtime's default) or sleep. A worker
    # shares its cores with its own Python threads (the decode loop, the stream publisher,
    # Celery), the gateway and Redis. 2 threads on 2 cores, in-process decode scheduler: with
    # another process busy on both cores, spinning halved tokens/s (1 stream 330 vs 536,
    # 8 streams 1,249 vs 2,536); on the idle machine it gained ~5% (599 vs 571, 2,531 vs 2,382).
    intra_op_spinning: bool = False
    # Text streams: at least this long between a worker's publishes of token chunks; the
    # tokens of the steps in between go out together (one chunk per stream per publish). A
    # stream's first tokens and its end never wait. 20 ms gave 21-39% more tokens/s with 8 streams
    # through gateway + Redis on 2 cores than 0 (publish every step); 0 turns it off.
    stream_interval_ms: float = 20.0
    graph_optimization: Literal["disabled", "basic", "extended", "all"] = "all"
    io_binding: bool = True  # bind inputs/outputs explicitly on CUDA (no effect on the CPU)
    concurrency: int = 1  # processes per worker (1 runs in the consumer process, lowest latency)
    prefetch_multiplier: int = 1  # messages reserved per process beyond the one running
    # A message a worker took but never acked (the worker died) goes back to the queue after
    # this many seconds; the default matches the gateway's default request deadline.
    visibility_timeout_s: int = 30
    restore_interval_s: int = 2  # how often workers look for such messages
    # Failover (workers/failover.py): each worker beats every ttl/5 s; a worker whose beat is
    # older than this is dead, and live workers put its messages back on their queues at once
    # instead of after the visibility timeout. 0: off (the visibility timeout alone).
    failover_ttl_s: float = 5.0
    # Online messages' unacked record and owner claim sent without waiting, and their ack
    # folded into the result script when the backend is the broker (workers/receipts.py).
    # False: kombu's own round trips, one after the other.
    receipts: bool = True
    # A solo worker runs a plain online message itself, without Celery's Request, pool
    # hand-off and tracer (workers/strategy.py); False: every message goes Celery's own way.
    short_strategy: bool = True
    max_batch_size: int = 0  # samples per ONNX Runtime call; 0: the manifest's value
    # Celery pool. auto: `threads` when the worker serves an autoregressive model (its
    # generation tasks wait on one shared decode loop per process, so many must be active at
    # once), otherwise `solo` (concurrency 1) or `prefork`.
    pool: Literal["auto", "solo", "prefork", "threads"] = "auto"
    task_threads: int = 32  # tasks active at once per process with the threads pool (and embedded)
    # Embedded mode: batches of at most this many samples of the one-shot ops (images, tensors,
    # classification) run on the gateway's event loop instead of a thread (0: never).
    inline_samples: int = 16
    # Prometheus /metrics of this worker (every process of a prefork pool, summed); None: off,
    # 0: any free port (printed at start).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"  # 0.0.0.0 in containers
    # Celery task events (what Flower and `celery events` show) from the start; off by default:
    # each task then costs a few more Redis messages. Flower turns them on remotely while it
    # runs (the compose `ops` profile); worker heartbeats are always sent.
    task_events: bool = False
    # Celery node name; %h is the host name. Several workers on one host need distinct names
    # for `celery inspect` to tell them apart (containers differ by host name already).
    hostname: str = "genserve@%h"
    # Hot models: a worker started without --queues rescans the repository this often and
    # starts consuming the queue of any model published since (workers/hot_models.py); 0: off.
    model_scan_s: float = 5.0

    @field_validator("queues", mode="before")
    @classmethod
    def _split_queues(cls, value: object) -> object:
        if isinstance(value, str):
            return [q.strip() for q in value.split(",") if q.strip()]
        return value


class LimitSettings(BaseModel):
    max_count: int = 4096  # images per GenerateImages request
    max_images: int = 1024  # images per Denoise, EncodeImages or Classify request
    max_texts: int = 1024  # texts per Classify request to a text classifier
    max_text_chars: int = 20_000  # characters per text to classify (tokens past the model's limit are cut)
    max_text_bytes: int = 1_000_000  # UTF-8 bytes of a ScoreText text


class JobSettings(BaseModel):
    """Batch jobs (genserve/jobs, services/jobs, workers/jobs): limits, layout, retention."""

    root: Path = Path("jobs")  # the jobs volume: inputs/, uploads/ and <job id>/ result folders
    max_items: int = 100_000_000  # samples or input lines per job
    max_active_jobs: int = 16  # queued or running jobs at once, all clients together
    chunk_size: int = 2048  # input lines per chunk (one Celery task each) when a job gives none
    # samples per chunk of a generator job that gives none: a chunk's fixed cost (its Redis
    # calls, message, shard file) was about 8 ms, 20% of a 2048-sample VAE chunk
    generator_chunk_size: int = 8192
    max_chunk_size: int = 65_536  # largest chunk a job may ask for
    max_attempts: int = 3  # runs of one chunk that raised an error before it counts as failed
    # runs of one chunk in all, those cut short by a dying worker included: a chunk that keeps
    # killing its workers stops, but a few unlucky SIGKILLs (the soak's, one every 4 s, with
    # chunks paused up to 5 s for online traffic) do not fail a job
    max_runs: int = 10
    retention_hours: float = 72.0  # finished jobs and their files are deleted after this long
    max_upload_mb: int = 512  # largest input file uploaded over gRPC
    free_space_margin_mb: int = 64  # left free on the volume after a job's estimated bytes
    # how often WatchJob re-reads a job's progress (one HGETALL): its end is seen 50 ms late on average
    poll_interval_s: float = 0.1
    # A job without progress this long is checked for chunks that have no message anywhere
    # (lost by a worker killed mid-BRPOP) and those are published again.
    stall_s: float = 60.0
    # fsync each shard before its rename: survives a machine losing power, not only a killed
    # process (rename alone does that). Off: it took about a third of a VAE chunk's time here.
    fsync: bool = False


class AuthSettings(BaseModel):
    """API keys (services/auth.py); auth is off when no key is configured."""

    api_keys: str | None = None  # `<key> <perm>,<perm>` entries separated by `;` (never logged)
    api_keys_file: Path | None = None  # the same, one per line, `#` comments
    open_health: bool = True  # grpc.health.v1 without a key (load balancers)
    open_reflection: bool = True  # server reflection without a key (grpcurl)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GENSERVE_", env_nested_delimiter="__", extra="ignore"
    )

    model_repository: Path = Path("model_repository")  # <root>/<name>/<version>/model.onnx
    broker_url: str | None = None  # redis://host:6379/0; unset: embedded single-process mode
    result_backend: str | None = None  # defaults to broker_url
    queue_prefix: str = "genserve"  # queue of model m is "<prefix>.<m>"
    result_expires_s: int = 300  # how long an unread result stays in Redis
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"  # json: one object per line with the request id (genserve/logs.py)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)

    @property
    def embedded(self) -> bool:
        return not self.broker_url

    @property
    def backend_url(self) -> str | None:
        return self.result_backend or self.broker_url

    def queue_for(self, model_name: str) -> str:
        from genserve.protocol import queue_name

        return queue_name(self.queue_prefix, model_name)
