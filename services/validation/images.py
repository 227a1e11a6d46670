"""GenerateImages, EncodeImages, Denoise and Classify (images): checked against the model's
image layout, latent size, labels, graphs and the deployment's limits."""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from genserve.errors import InvalidArgumentError
from genserve.protocol import RECONSTRUCTION_GRAPH
from genserve.repository import Manifest
from genserve.services.validation.common import finite_float32, require_graph, require_rpc, require_rpc_graphs, validate
from genserve.settings import LimitSettings
from genserve.tensors import from_proto, to_wire
from genserve.v1 import inference_pb2

_ENCODINGS = {
    inference_pb2.IMAGE_ENCODING_TENSOR: (True, False),
    inference_pb2.IMAGE_ENCODING_PNG: (False, True),
    inference_pb2.IMAGE_ENCODING_TENSOR_AND_PNG: (True, True),
}



class GenerateImagesInput(BaseModel):
    """A GenerateImages request that passed every check."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    count: int
    seed: int
    label: int | None
    latents: np.ndarray | None
    tensor: bool
    png: bool
    return_latents: bool
    first_index: int = 0  # sample index of the first image in the seed's sequence (genserve/seeds.py)

    @field_validator("latents")
    @classmethod
    def _latents(cls, z: np.ndarray | None, info: ValidationInfo) -> np.ndarray | None:
        if z is None:
            return None
        dim = info.context["manifest"].latent_dim
        if z.ndim != 2 or z.shape[1] != dim:
            raise ValueError(f"latents must have shape (n, {dim}), got {tuple(z.shape)}")
        return finite_float32(z, "latents")

    @field_validator("count")
    @classmethod
    def _count(cls, count: int, info: ValidationInfo) -> int:
        limit = info.context["limits"].max_count
        if not 1 <= count <= limit:
            raise ValueError(f"count must be 1..{limit}, got {count}")
        return count

    @field_validator("label")
    @classmethod
    def _label(cls, label: int | None, info: ValidationInfo) -> int | None:
        manifest: Manifest = info.context["manifest"]
        if label is None:
            if manifest.conditional:
                raise ValueError(
                    f"model {manifest.ref} is class-conditional: label must be 0..{len(manifest.labels) - 1}"
                )
            return None
        if not manifest.conditional:
            raise ValueError(f"model {manifest.ref} is not class-conditional; omit label")
        if not 0 <= label < len(manifest.labels):
            raise ValueError(f"label must be 0..{len(manifest.labels) - 1}, got {label}")
        return label

    def samples(self) -> int:
        return self.count

    def to_task(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "seed": self.seed,
            "label": self.label,
            "latents": to_wire(self.latents) if self.latents is not None else None,
            "tensor": self.tensor,
            "png": self.png,
            "return_latents": self.return_latents,
            "first_index": self.first_index,
        }


def generate_images(request: inference_pb2.GenerateImagesRequest, manifest: Manifest, limits: LimitSettings) -> GenerateImagesInput:
    require_rpc(manifest, "GenerateImages")
    latents = from_proto(request.latents, "latents") if request.latents.shape else None
    count = request.count
    if latents is not None:
        rows = latents.shape[0] if latents.ndim else 0
        if count not in (0, rows):
            raise InvalidArgumentError(f"count must be 0 or the number of latent rows ({rows}), got {count}")
        count = rows
    if request.encoding not in _ENCODINGS:
        raise InvalidArgumentError(f"encoding must be one of {sorted(_ENCODINGS)}, got {request.encoding}")
    tensor, png = _ENCODINGS[request.encoding]
    raw = {
        "count": count,
        "seed": request.seed if request.HasField("seed") else secrets.randbits(63),
        "label": request.label if request.HasField("label") else None,
        "latents": latents,
        "tensor": tensor,
        "png": png,
        "return_latents": request.return_latents,
        "first_index": request.first_index if request.HasField("first_index") else 0,
    }
    if raw["first_index"] + count > 2**64:
        raise InvalidArgumentError(f"first_index + count must be at most 2**64, got {raw['first_index'] + count}")
    return validate(GenerateImagesInput, raw, manifest, limits)


class ImagesInput(BaseModel):
    """Images for Denoise or Classify, checked against the model's image layout."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    images: np.ndarray  # (N, C, H, W) float32
    tensor: bool = True
    png: bool = False
    top_k: int = 1

    @field_validator("images")
    @classmethod
    def _images(cls, images: np.ndarray, info: ValidationInfo) -> np.ndarray:
        manifest: Manifest = info.context["manifest"]
        limit = info.context["limits"].max_images
        spec = manifest.image
        want = (spec.channels, spec.height, spec.width)
        if images.ndim == 3 and spec.channels == 1:
            images = images[:, None]
        if images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(f"images must have shape (n, {', '.join(map(str, want))}), got {tuple(images.shape)}")
        if not 1 <= len(images) <= limit:
            raise ValueError(f"the number of images must be 1..{limit}, got {len(images)}")
        return finite_float32(images, "images")

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, top_k: int, info: ValidationInfo) -> int:
        labels = len(info.context["manifest"].labels)
        if top_k == 0:
            return 1
        if not 1 <= top_k <= max(labels, 1):
            raise ValueError(f"top_k must be 1..{labels}, got {top_k}")
        return top_k

    def samples(self) -> int:
        return len(self.images)

    def to_task(self) -> dict[str, Any]:
        return {"images": to_wire(self.images), "tensor": self.tensor, "png": self.png, "top_k": self.top_k}


def _images_from(tensor: Any, pngs: Any, manifest: Manifest) -> np.ndarray:
    if tensor.shape:
        return from_proto(tensor, "images")
    if pngs:
        from genserve.tensors import png_decode

        channels = manifest.image.channels if manifest.image else 1
        decoded = [png_decode(p, channels, f"png[{i}]") for i, p in enumerate(pngs)]
        if len({d.shape for d in decoded}) != 1:
            raise InvalidArgumentError("all PNG images must have the same size")
        return np.stack(decoded)
    raise InvalidArgumentError("give images as a tensor or as PNGs; both are empty")


def denoise(request: inference_pb2.DenoiseRequest, manifest: Manifest, limits: LimitSettings) -> ImagesInput:
    require_rpc(manifest, "Denoise")
    if request.encoding not in _ENCODINGS:
        raise InvalidArgumentError(f"encoding must be one of {sorted(_ENCODINGS)}, got {request.encoding}")
    tensor, png = _ENCODINGS[request.encoding]
    raw = {"images": _images_from(request.images, request.png, manifest), "tensor": tensor, "png": png}
    return validate(ImagesInput, raw, manifest, limits)


def classify_images(request: inference_pb2.ClassifyRequest, manifest: Manifest, limits: LimitSettings) -> ImagesInput:
    require_rpc(manifest, "Classify")
    if request.texts:
        raise InvalidArgumentError(f"model {manifest.ref} classifies images; texts were given")
    raw = {"images": _images_from(request.images, request.png, manifest), "top_k": request.top_k}
    return validate(ImagesInput, raw, manifest, limits)




class EncodeImagesInput(ImagesInput):
    """An EncodeImages request: images as Denoise takes them, a label per image for a
    class-conditional model (one given for all is repeated), whether to reconstruct."""

    labels: list[int] = []
    reconstruct: bool = False

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: list[int], info: ValidationInfo) -> list[int]:
        manifest: Manifest = info.context["manifest"]
        classes = len(manifest.labels)
        if not manifest.conditional:
            if labels:
                raise ValueError(f"model {manifest.ref} is not class-conditional; omit labels")
            return labels
        if not labels:
            raise ValueError(f"model {manifest.ref} is class-conditional: give labels (0..{classes - 1}), "
                             "one per image or one for all")
        images = info.data.get("images")
        count = len(images) if images is not None else len(labels)
        if len(labels) not in (1, count):
            raise ValueError(f"labels must hold 1 or {count} entries (one per image), got {len(labels)}")
        bad = [label for label in labels if not 0 <= label < classes]
        if bad:
            raise ValueError(f"labels must be 0..{classes - 1}, got {bad[0]}")
        return labels * count if len(labels) == 1 else labels

    def to_task(self) -> dict[str, Any]:
        task = {"images": to_wire(self.images), "reconstruct": self.reconstruct, "tensor": self.tensor, "png": self.png}
        if self.labels:
            task["labels"] = self.labels
        return task


def encode_images(request: inference_pb2.EncodeImagesRequest, manifest: Manifest, limits: LimitSettings) -> EncodeImagesInput:
    require_rpc_graphs(manifest, "EncodeImages")
    if request.reconstruct:
        require_graph(manifest, RECONSTRUCTION_GRAPH, "EncodeImages with reconstruct")
    if request.encoding not in _ENCODINGS:
        raise InvalidArgumentError(f"encoding must be one of {sorted(_ENCODINGS)}, got {request.encoding}")
    tensor, png = _ENCODINGS[request.encoding]
    raw = {"images": _images_from(request.images, request.png, manifest), "labels": list(request.labels),
           "reconstruct": request.reconstruct, "tensor": tensor, "png": png}
    return validate(EncodeImagesInput, raw, manifest, limits)
