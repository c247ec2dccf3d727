"""The IDX reader against files written byte by byte with struct (big-endian)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from privfl.data.idx import read_idx
from privfl.errors import DataError


def _images(n: int = 5, h: int = 28, w: int = 28) -> list[list[list[int]]]:
    return [[[(i * 31 + r * 7 + c) % 256 for c in range(w)] for r in range(h)] for i in range(n)]


def _ubyte_idx3(images: list[list[list[int]]]) -> bytes:
    n, h, w = len(images), len(images[0]), len(images[0][0])
    header = struct.pack(">BBBBIII", 0, 0, 0x08, 3, n, h, w)
    body = bytes(v for img in images for row in img for v in row)
    return header + body


def test_ubyte_images_raw_and_gzip_give_the_written_pixels(tmp_path: Path) -> None:
    images = _images()
    raw = tmp_path / "imgs-idx3-ubyte"
    raw.write_bytes(_ubyte_idx3(images))
    gz = tmp_path / "imgs-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(_ubyte_idx3(images)))
    for path in (raw, gz):
        arr = read_idx(path)
        assert arr.dtype == np.uint8
        assert arr.shape == (5, 28, 28)
        assert arr.tolist() == images
        assert arr[3, 4, 5] == (3 * 31 + 4 * 7 + 5) % 256


def test_gzip_is_detected_by_magic_bytes_without_suffix(tmp_path: Path) -> None:
    images = _images(n=2, h=3, w=4)
    path = tmp_path / "no-suffix"
    path.write_bytes(gzip.compress(_ubyte_idx3(images)))
    assert read_idx(path).tolist() == images


@pytest.mark.parametrize(
    ("code", "fmt", "values", "dtype"),
    [
        (0x08, "B", [0, 7, 255], np.uint8),
        (0x09, "b", [-128, -1, 127], np.int8),
        (0x0B, "h", [-2, 300, -32768], np.int16),
        (0x0C, "i", [-70000, 1, 2**31 - 1], np.int32),
        (0x0D, "f", [1.5, -0.25, 3.0e8], np.float32),
        (0x0E, "d", [1.0e-300, -2.5, 3.141592653589793], np.float64),
    ],
)
def test_every_dtype_code_is_decoded_big_endian(
    tmp_path: Path, code: int, fmt: str, values: list[float], dtype: type
) -> None:
    # 2-D: shape (1, 3) so the dimension list is also exercised.
    data = struct.pack(">BBBBII", 0, 0, code, 2, 1, 3) + struct.pack(f">3{fmt}", *values)
    path = tmp_path / "arr.idx"
    path.write_bytes(data)
    arr = read_idx(path)
    assert arr.dtype == np.dtype(dtype)
    assert arr.dtype.isnative
    assert arr.shape == (1, 3)
    assert arr[0].tolist() == pytest.approx(values, rel=1e-7)


def test_labels_idx1(tmp_path: Path) -> None:
    labels = [5, 0, 4, 1, 9]
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(struct.pack(">BBBBI", 0, 0, 0x08, 1, 5) + bytes(labels))
    arr = read_idx(path)
    assert arr.shape == (5,)
    assert arr.tolist() == labels


def test_truncated_file_raises_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut-idx3-ubyte"
    path.write_bytes(_ubyte_idx3(_images(n=2))[:-1])
    with pytest.raises(DataError, match="cut-idx3-ubyte") as info:
        read_idx(path)
    assert "truncated" in str(info.value)


def test_padded_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "long-idx3-ubyte"
    path.write_bytes(_ubyte_idx3(_images(n=2)) + b"\x00")
    with pytest.raises(DataError, match="long-idx3-ubyte"):
        read_idx(path)


def test_truncated_gzip_stream_raises(tmp_path: Path) -> None:
    blob = gzip.compress(_ubyte_idx3(_images(n=3)))
    path = tmp_path / "cut.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="cut.gz"):
        read_idx(path)


def test_header_shorter_than_declared_dims_raises(tmp_path: Path) -> None:
    path = tmp_path / "hdr"
    path.write_bytes(struct.pack(">BBBBI", 0, 0, 0x08, 3, 5))  # 3 dims declared, 1 present
    with pytest.raises(DataError, match="hdr"):
        read_idx(path)


@pytest.mark.parametrize(
    "header",
    [b"\x01\x00\x08\x01", b"\x00\x01\x08\x01", b"\x1f\x00"],
    ids=["first-byte", "second-byte", "odd-header"],
)
def test_bad_magic_raises_naming_the_file(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "bad-magic"
    path.write_bytes(header + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(DataError, match="bad-magic"):
        read_idx(path)


def test_unknown_dtype_code_raises(tmp_path: Path) -> None:
    path = tmp_path / "bad-code"
    path.write_bytes(struct.pack(">BBBBI", 0, 0, 0x0A, 1, 1) + b"\x00")
    with pytest.raises(DataError, match="0x0A"):
        read_idx(path)


def test_missing_file_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope"):
        read_idx(tmp_path / "nope")
