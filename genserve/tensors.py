"""Tensor codecs: numpy <-> the wire dict in task messages <-> the protobuf Tensor, and PNG.

Task messages (msgpack) carry tensors as {"shape", "dtype", "data": raw bytes}; gRPC carries
the same three fields in `genserve.v1.Tensor`. Both are little-endian and row-major.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from genserve.errors import InvalidArgumentError
from genserve.v1 import tensor_pb2

_PROTO_DTYPES = {
    tensor_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb2.DTYPE_FLOAT16: np.dtype("<f2"),
    tensor_pb2.DTYPE_UINT8: np.dtype("u1"),
    tensor_pb2.DTYPE_INT64: np.dtype("<i8"),
    tensor_pb2.DTYPE_INT32: np.dtype("<i4"),
}
_NUMPY_TO_PROTO = {dt.name: code for code, dt in _PROTO_DTYPES.items()}
_WIRE_DTYPES = {dt.name for dt in _PROTO_DTYPES.values()}


_DTYPE_NAMES: dict[np.dtype, str] = {}  # numpy computes dtype.name anew on every access


def dtype_name(dtype: np.dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = dtype.name
    return name


def to_wire(array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array)
    return {"shape": list(array.shape), "dtype": dtype_name(array.dtype), "data": array.tobytes()}


def from_wire(wire: dict[str, Any], field: str = "tensor") -> np.ndarray:
    if wire["dtype"] not in _WIRE_DTYPES:
        raise InvalidArgumentError(f"{field}.dtype must be one of {sorted(_WIRE_DTYPES)}, got {wire['dtype']!r}")
    dtype = np.dtype(wire["dtype"]).newbyteorder("<")
    return _view(wire["data"], [int(d) for d in wire["shape"]], dtype, field)


def wire_array(wire: dict[str, Any]) -> np.ndarray:
    """A wire tensor of any numpy dtype, unchecked: for payloads the gateway already validated
    (the Open Inference Protocol's tensors, whose dtypes are the graph's own)."""
    dtype = np.dtype(wire["dtype"]).newbyteorder("<")
    return np.frombuffer(wire["data"], dtype=dtype).reshape([int(d) for d in wire["shape"]])


def to_proto(array: np.ndarray, out: tensor_pb2.Tensor | None = None) -> tensor_pb2.Tensor:
    array = np.ascontiguousarray(array)
    if array.dtype.name not in _NUMPY_TO_PROTO:
        raise TypeError(f"cannot send dtype {array.dtype.name}")
    tensor = out if out is not None else tensor_pb2.Tensor()
    tensor.shape[:] = array.shape
    tensor.dtype = _NUMPY_TO_PROTO[array.dtype.name]
    tensor.data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    return tensor


def from_proto(tensor: tensor_pb2.Tensor, field: str = "tensor") -> np.ndarray:
    """Decode a client's Tensor, with errors that name the field and what is allowed."""
    if tensor.dtype not in _PROTO_DTYPES:
        allowed = ", ".join(tensor_pb2.DType.Name(c) for c in _PROTO_DTYPES)
        raise InvalidArgumentError(
            f"{field}.dtype must be one of {allowed}, got {tensor_pb2.DType.Name(tensor.dtype) if tensor.dtype in tensor_pb2.DType.values() else tensor.dtype}"
        )
    if any(d < 0 for d in tensor.shape):
        raise InvalidArgumentError(f"{field}.shape must be non-negative, got {list(tensor.shape)}")
    return _view(tensor.data, list(tensor.shape), _PROTO_DTYPES[tensor.dtype], field)


def _view(data: bytes, shape: list[int], dtype: np.dtype, field: str = "tensor") -> np.ndarray:
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise InvalidArgumentError(
            f"{field}.data has {len(data)} bytes; shape {shape} of {dtype.name} needs {expected}"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def png_encode(image: np.ndarray, low: float = 0.0, high: float = 1.0) -> bytes:
    """One (C, H, W) float image in [low, high] -> 8-bit PNG bytes (grey or RGB)."""
    from PIL import Image

    scaled = np.clip((image - low) / (high - low), 0.0, 1.0)
    pixels = np.round(scaled * 255.0).astype(np.uint8)
    if pixels.shape[0] == 1:
        picture = Image.fromarray(pixels[0], mode="L")
    else:
        picture = Image.fromarray(np.transpose(pixels, (1, 2, 0)), mode="RGB")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def png_decode(data: bytes, channels: int, field: str = "png") -> np.ndarray:
    """PNG bytes -> (C, H, W) float32 in [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    try:
        picture = Image.open(io.BytesIO(data))
        picture = picture.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidArgumentError(f"{field} is not a readable PNG image: {exc}") from exc
    pixels = np.asarray(picture, dtype=np.float32) / 255.0
    return pixels[None] if channels == 1 else np.transpose(pixels, (2, 0, 1))


def grid(images: np.ndarray, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) -> one (C, H', W') image tiling them row by row, for sample sheets."""
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    rows = -(-n // ncol)
    sheet = np.ones((c, rows * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, k = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        sheet[:, y : y + h, x : x + w] = images[i]
    return sheet
