"""ONNX Runtime sessions: provider choice, session options, a lazy per-process model cache.

Pure (no Celery): the Celery task, the embedded mode and the benchmarks all use it. Sessions
are created on first use inside the process that runs them, never at import and never
before a fork.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from genserve.errors import ModelNotReadyError
from genserve.heap import freeze_loaded
from genserve.repository import Manifest, ModelRepository
from genserve.settings import WorkerSettings
from genserve.workers import metrics

log = logging.getLogger(__name__)

_OPT_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
               "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def requested_providers(choice: str, available: list[str]) -> list[str]:
    """Providers to ask ONNX Runtime for, best first; the CPU is always the last resort."""
    wanted = {
        "cpu": [],
        "cuda": ["CUDAExecutionProvider"],
        "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
        "auto": ["CUDAExecutionProvider"],
    }[choice]
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


def intra_op_threads(settings: WorkerSettings, hint: int = 0) -> int:
    """The operator's setting; else the model's hint (manifest serving.intra_op_threads); else
    the cores shared among the worker's processes."""
    if settings.intra_op_threads > 0:
        return settings.intra_op_threads
    if hint > 0:
        return hint
    return max(1, (os.cpu_count() or 1) // max(1, settings.concurrency))


class OnnxModel:
    """One ONNX Runtime session: `load(path)` then `run(feeds)`."""

    def __init__(self, session: object, io_binding: bool) -> None:
        self.session = session
        self.provider: str = session.get_providers()[0]
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self._io_binding = io_binding and self.provider != "CPUExecutionProvider"

    @classmethod
    def load(cls, path: str, settings: WorkerSettings, threads_hint: int = 0) -> OnnxModel:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _OPT_LEVELS[settings.graph_optimization]
        )
        options.intra_op_num_threads = intra_op_threads(settings, threads_hint)
        options.inter_op_num_threads = settings.inter_op_threads
        spin = "1" if settings.intra_op_spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = requested_providers(settings.execution_provider, ort.get_available_providers())
        try:
            session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # a GPU provider that is listed but cannot start
            if providers == ["CPUExecutionProvider"]:
                raise
            log.warning("providers %s failed (%s); falling back to the CPU", providers, exc)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = cls(session, settings.io_binding)
        if settings.execution_provider in ("cuda", "tensorrt") and model.provider == "CPUExecutionProvider":
            log.warning("%s was asked for but is not usable here; running %s on the CPU",
                        settings.execution_provider, path)
        log.info("loaded %s on %s (%d intra-op threads)", path, model.provider,
                 options.intra_op_num_threads)
        return model

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._io_binding:
            return self._run_bound(feeds)
        outputs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outputs))

    def _run_bound(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # IO binding: ONNX Runtime copies inputs to the device once and leaves outputs on
        # the device until we copy them back, instead of per-call staging buffers.
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu()))


@dataclass
class LoadedModel:
    manifest: Manifest
    onnx: OnnxModel
    directory: Path | None = None  # the version's directory (tokenizers and other files beside the graph)
    streams: Any = None  # where a streaming loop publishes chunks (autoregressive.streaming.StreamSink)
    state: dict[str, Any] = field(default_factory=dict)  # per-process helpers of a loop (decode scheduler)
    settings: WorkerSettings | None = None  # the worker's settings, for loops that have their own knobs
    siblings: Callable[[str], OnnxModel] | None = None  # role -> the session of another graph of this version

    @property
    def max_batch_size(self) -> int:
        return self.manifest.serving.max_batch_size

    def graph(self, role: str) -> OnnxModel:
        """The session of graph `role` of this version (the VAE's "encoder"), created on first
        use by the same cache; ModelNotReadyError when the manifest has no such graph."""
        if role == "model":
            return self.onnx
        if self.siblings is None:
            raise ModelNotReadyError(f"{self.manifest.ref}: no {role!r} graph is reachable from here")
        return self.siblings(role)


class ModelCache:
    """Per-process cache: one session per model version and role, created on first use."""

    def __init__(self, repository: ModelRepository, settings: WorkerSettings, streams: Any = None) -> None:
        self.repository = repository
        self.settings = settings
        self.streams = streams  # handed to every LoadedModel: token streams of text generation
        self._loaded: dict[tuple[str, str], LoadedModel] = {}
        self._lock = threading.Lock()

    def is_loaded(self, ref: str, role: str = "model") -> bool:
        """Whether `get(ref, role)` returns at once (its session exists)."""
        return (ref, role) in self._loaded

    def get(self, ref: str, role: str = "model") -> LoadedModel:
        key = (ref, role)
        loaded = self._loaded.get(key)
        if loaded is not None:
            return loaded
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = self._load(ref, role)
            return self._loaded[key]

    def _load(self, ref: str, role: str) -> LoadedModel:
        manifest = self.repository.resolve(ref)
        if role not in manifest.files:
            raise ModelNotReadyError(f"{manifest.ref} has no {role!r} graph")
        started = time.perf_counter()
        path = self.repository.verified_path(manifest, role)
        try:
            model = OnnxModel.load(str(path), self.settings, manifest.serving.intra_op_threads)
        except Exception as exc:  # verified but ONNX Runtime refuses it: the model is not servable, not a bug here
            log.error("ONNX Runtime could not load %s: %s", path, exc)
            raise ModelNotReadyError(f"{manifest.ref}: ONNX Runtime could not load {manifest.files[role].path} "
                                     f"({type(exc).__name__}); see the worker log") from exc
        metrics.model_loaded(manifest.ref, time.perf_counter() - started)
        freeze_loaded()  # the session lives as long as the process (genserve/heap.py)
        if self.settings.max_batch_size > 0:
            manifest.serving.max_batch_size = self.settings.max_batch_size
        return LoadedModel(manifest, model, directory=path.parent, streams=self.streams, settings=self.settings,
                           siblings=lambda other: self.get(ref, other).onnx)
