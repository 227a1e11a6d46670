"""Tensor codecs: wire dicts, protobuf Tensors, PNG and sample grids."""

from __future__ import annotations

import numpy as np
import pytest

from genserve.errors import InvalidArgumentError
from genserve.tensors import from_proto, from_wire, grid, png_decode, png_encode, to_proto, to_wire
from genserve.v1 import tensor_pb2

DTYPES = ["float32", "float16", "uint8", "int64", "int32"]


def sample(dtype: str, shape: tuple[int, ...] = (2, 3, 4)) -> np.ndarray:
    return (np.arange(int(np.prod(shape))) % 100).reshape(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_wire_round_trip_keeps_values_shape_and_dtype(dtype: str) -> None:
    """to_wire -> from_wire gives back the same array for every supported dtype."""
    array = sample(dtype)
    wire = to_wire(array)
    assert wire["shape"] == [2, 3, 4] and wire["dtype"] == dtype
    back = from_wire(wire)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("dtype", DTYPES)
def test_proto_round_trip_keeps_values_shape_and_dtype(dtype: str) -> None:
    """to_proto -> serialize -> parse -> from_proto gives back the same array for every dtype."""
    array = sample(dtype)
    message = tensor_pb2.Tensor.FromString(to_proto(array).SerializeToString())
    assert list(message.shape) == [2, 3, 4]
    back = from_proto(message)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, array)


def test_proto_bytes_are_little_endian_even_from_a_big_endian_array() -> None:
    """A big-endian float32 array is sent as little-endian bytes and decodes to the same values."""
    array = np.array([1.5, -2.0, 3.25], dtype=">f4")
    message = to_proto(array)
    assert message.data == np.array([1.5, -2.0, 3.25], dtype="<f4").tobytes()
    np.testing.assert_array_equal(from_proto(message), [1.5, -2.0, 3.25])


def test_non_contiguous_array_round_trips() -> None:
    """A transposed (non-contiguous) view is encoded in row-major order of its logical shape."""
    array = sample("float32", (3, 4)).T
    np.testing.assert_array_equal(from_wire(to_wire(array)), array)
    np.testing.assert_array_equal(from_proto(to_proto(array)), array)


def test_to_proto_fills_a_given_message() -> None:
    """to_proto(out=...) writes into the caller's message and returns it."""
    out = tensor_pb2.Tensor()
    returned = to_proto(np.zeros((2, 2), dtype=np.uint8), out)
    assert returned is out and list(out.shape) == [2, 2] and out.dtype == tensor_pb2.DTYPE_UINT8


def test_to_proto_rejects_an_unsupported_dtype() -> None:
    """float64 has no DType code: to_proto refuses it by name."""
    with pytest.raises(TypeError, match="float64"):
        to_proto(np.zeros(3, dtype=np.float64))


def test_proto_byte_count_mismatch_names_expected_bytes() -> None:
    """A Tensor whose data does not fit its shape is rejected with the byte counts."""
    message = tensor_pb2.Tensor(shape=[2, 4], dtype=tensor_pb2.DTYPE_FLOAT32, data=b"\0" * 12)
    with pytest.raises(InvalidArgumentError) as info:
        from_proto(message, "latents")
    assert str(info.value) == "latents.data has 12 bytes; shape [2, 4] of float32 needs 32"


def test_wire_byte_count_mismatch_names_expected_bytes() -> None:
    """A wire dict whose data does not fit its shape is rejected with the byte counts."""
    with pytest.raises(InvalidArgumentError, match="has 3 bytes; shape \\[2\\] of int32 needs 8"):
        from_wire({"shape": [2], "dtype": "int32", "data": b"abc"})


def test_negative_shape_is_rejected() -> None:
    """A negative dimension is an INVALID_ARGUMENT naming the field and the shape."""
    message = tensor_pb2.Tensor(shape=[-1, 4], dtype=tensor_pb2.DTYPE_FLOAT32, data=b"")
    with pytest.raises(InvalidArgumentError) as info:
        from_proto(message, "latents")
    assert str(info.value) == "latents.shape must be non-negative, got [-1, 4]"


def test_unspecified_proto_dtype_lists_the_allowed_ones() -> None:
    """DTYPE_UNSPECIFIED is rejected and the message lists every supported DType."""
    with pytest.raises(InvalidArgumentError) as info:
        from_proto(tensor_pb2.Tensor(shape=[1], data=b"\0"), "latents")
    message = str(info.value)
    assert message.startswith("latents.dtype must be one of DTYPE_FLOAT32, DTYPE_FLOAT16")
    assert message.endswith("got DTYPE_UNSPECIFIED")


def test_unknown_proto_dtype_number_is_rejected() -> None:
    """A DType number this server does not know is reported as the number."""
    message = tensor_pb2.Tensor(shape=[1], data=b"\0")
    message.dtype = 99  # proto3 enums are open: a newer client may send this
    with pytest.raises(InvalidArgumentError, match="got 99$"):
        from_proto(message)


def test_unknown_wire_dtype_is_rejected() -> None:
    """A wire dict with an unsupported dtype name is rejected, naming it."""
    with pytest.raises(InvalidArgumentError, match="got 'float64'"):
        from_wire({"shape": [1], "dtype": "float64", "data": b"\0" * 8})


def test_empty_tensor_round_trips() -> None:
    """A (0, 4) tensor has no bytes and decodes to a (0, 4) array."""
    back = from_proto(to_proto(np.zeros((0, 4), dtype=np.float32)))
    assert back.shape == (0, 4) and back.dtype == np.float32


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip_is_within_one_level(channels: int) -> None:
    """png_encode -> png_decode returns (C, H, W) within 1/255 of the input (grey and RGB)."""
    image = np.random.default_rng(0).random((channels, 5, 7), dtype=np.float32)
    data = png_encode(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    back = png_decode(data, channels)
    assert back.shape == (channels, 5, 7) and back.dtype == np.float32
    assert np.abs(back - image).max() <= 1 / 255


def test_png_encode_rescales_and_clips_to_low_high() -> None:
    """Values are mapped from [low, high] to [0, 1] and clipped outside it."""
    image = np.array([[[-1.0, 0.0, 1.0, 5.0]]], dtype=np.float32)
    back = png_decode(png_encode(image, low=-1.0, high=1.0), 1)
    np.testing.assert_allclose(back[0, 0], [0.0, 128 / 255, 1.0, 1.0])


def test_png_decode_rejects_garbage() -> None:
    """Bytes that are not an image raise INVALID_ARGUMENT naming the field."""
    with pytest.raises(InvalidArgumentError, match="^image is not a readable PNG image"):
        png_decode(b"definitely not a png", 1, field="image")


def test_grid_tiles_images_row_by_row_with_padding() -> None:
    """5 images of 1x4x4 at nrow=3, pad=2 make a (1, 14, 20) sheet, each tile in its place."""
    images = np.stack([np.full((1, 4, 4), i / 10, dtype=np.float32) for i in range(5)])
    sheet = grid(images, nrow=3, pad=2)
    assert sheet.shape == (1, 2 * 6 + 2, 3 * 6 + 2) and sheet.dtype == np.float32
    assert sheet[0, 2, 2] == pytest.approx(0.0)  # first tile
    assert sheet[0, 2, 8] == pytest.approx(0.1)  # second tile, same row
    assert sheet[0, 8, 8] == pytest.approx(0.4)  # fifth tile, second row
    assert sheet[0, 8, 14] == 1.0  # the missing sixth tile stays background
    assert sheet[0, 0, 0] == 1.0  # padding


def test_grid_of_fewer_images_than_nrow_is_one_row() -> None:
    """Two RGB images with nrow=8 give one row two tiles wide."""
    assert grid(np.zeros((2, 3, 4, 4), dtype=np.float32), nrow=8, pad=1).shape == (3, 6, 11)
