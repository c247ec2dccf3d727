"""Reader of the IDX format (the container of the MNIST files).

An IDX file is a 4-byte magic number ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian
unsigned 32-bit dimension sizes, then the array data in big-endian C order. Files may be
gzip-compressed (detected by a ``.gz`` suffix or by the gzip magic bytes ``1f 8b``).
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import numpy as np

from privfl.errors import DataError

logger = logging.getLogger(__name__)

#: IDX dtype code -> numpy dtype (big-endian, as stored in the file).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _is_gzip(path: Path) -> bool:
    if path.suffix == ".gz":
        return True
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _read_bytes(path: Path) -> bytes:
    try:
        if _is_gzip(path):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError as e:
        raise DataError(f"IDX file {path} does not exist") from e
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(
            f"IDX file {path} is not a valid gzip stream (truncated or corrupt download?): {e}"
        ) from e
    except OSError as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file.

    Args:
        data: the whole file content.
        source: a name for the data, used in error messages.

    Returns:
        An array of shape ``dims`` (as declared in the header) with the dtype of the header's
        code (uint8, int8, int16, int32, float32 or float64), in native byte order.

    Raises:
        DataError: bad magic number, unknown dtype code, or a data size that differs from the
            size the header declares (truncated or padded file).
    """
    if len(data) < 4:
        raise DataError(f"IDX file {source} is too short ({len(data)} bytes) to hold a header")
    if data[0] != 0 or data[1] != 0:
        raise DataError(
            f"IDX file {source} has a bad magic number {data[:4].hex()}: "
            "expected two zero bytes, a dtype code and the number of dimensions"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(
            f"IDX file {source} has unknown dtype code 0x{code:02X}; expected one of {known}"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"IDX file {source} is truncated: the header declares {ndim} dimensions "
            f"({header_len} header bytes) but the file has {len(data)} bytes"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        raise DataError(
            f"IDX file {source} has {actual} data bytes but its header (shape {dims}, "
            f"{dtype.name}) declares {expected}: the file is truncated or corrupt"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed.

    Args:
        path: the file; compression is detected by a ``.gz`` suffix or the gzip magic bytes.

    Returns:
        A writable array of shape ``dims`` from the header, dtype from the header's code
        (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), native
        byte order.

    Raises:
        DataError: the file is missing or unreadable, has a bad magic number or dtype code, or
            its size does not match its header; the message names the file.
    """
    path = Path(path)
    arr = parse_idx(_read_bytes(path), source=str(path))
    logger.debug("read IDX %s: shape %s, dtype %s", path, arr.shape, arr.dtype)
    return arr


__all__ = ["IDX_DTYPES", "parse_idx", "read_idx"]
