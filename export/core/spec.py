"""What a model family declares about itself: kind, serving loop, config, and its ONNX graphs.

The exporter, the publishing code and the manifest read these specs and nothing
family-specific, so a new family is one folder in `export/families/` plus one line in
`export/registry.py`. The exporter writes kind, loop and config into the ONNX metadata and the
manifest; the worker reads the loop back and picks its serving loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of a family: the module to trace and how to make its named inputs."""

    module: nn.Module
    # (batch, generator) -> {input name: tensor with batch first}, in the module's argument order
    make_inputs: Callable[[int, torch.Generator], dict[str, torch.Tensor]]
    outputs: tuple[str, ...]  # output names, in the order the module returns them


@dataclass(frozen=True)
class ModelSpec:
    """A model family: how to build it and which graphs (by manifest role) it serves with."""

    kind: str  # manifest `kind`, also written into the ONNX metadata
    loop: str  # the worker's serving loop, a genserve.protocol.Loop value (plain string in the manifest)
    config_class: type  # dataclass of hyperparameters; saved in checkpoints and manifests
    build: Callable[[Any], nn.Module]  # config -> freshly initialised model
    graphs: Callable[[nn.Module], dict[str, GraphSpec]]  # model -> role ("model", ...) -> graph
    description: str
