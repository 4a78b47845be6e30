"""Reading and writing IDX files (the MNIST container format), gzip-compressed or not."""

from __future__ import annotations

import gzip
import hashlib
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_pipeline.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08  # MNIST only uses unsigned bytes; other IDX element types are rejected.
# IDX file names say how many dimensions the header must declare: idx3 images, idx1 labels.
_NAMED_NDIM = re.compile(r"idx(\d)-ubyte")


@dataclass(frozen=True)
class IdxContent:
    array: np.ndarray  # uint8, shape from the header
    md5: str  # of the uncompressed bytes: archives may be re-compressed, content may not


def read_idx(path: Path) -> IdxContent:
    """Read one IDX file; gzip is detected by its magic bytes, not by the file name.

    A name like `*-idx3-ubyte` fixes the number of dimensions the magic number must declare.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path} is a corrupt gzip archive ({exc}); replace the file") from exc
    named = _NAMED_NDIM.search(path.name)
    array = parse_idx(data, source=str(path), ndim=int(named.group(1)) if named else None)
    return IdxContent(array=array, md5=hashlib.md5(data).hexdigest())


def parse_idx(data: bytes, *, source: str, ndim: int | None = None) -> np.ndarray:
    """Parse uncompressed IDX bytes into a uint8 array, validating the header against the body.

    NDIM, when known, is the number of dimensions the magic number must declare: a wrong one is
    reported as such, instead of as a body that does not match the dimensions read after it.
    """
    if len(data) < 4:
        raise DataError(f"{source} is not an IDX file: only {len(data)} bytes")
    zero, dtype, declared = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != _UBYTE or declared == 0 or ndim not in (None, declared):
        expected = "000008NN" if ndim is None else f"000008{ndim:02x}, {ndim} dimensions"
        raise DataError(
            f"{source} is not an unsigned-byte IDX file: bad magic {data[:4].hex()} "
            f"(expected {expected}); the file is corrupt or of another format"
        )
    header_len = 4 + 4 * declared
    if len(data) < header_len:
        raise DataError(f"{source} has a truncated IDX header ({len(data)} bytes)")
    dims = struct.unpack(f">{declared}I", data[4:header_len])
    expected = header_len + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DataError(
            f"{source} has {len(data)} bytes but its header {dims} implies {expected}; "
            f"the file is truncated or corrupt, replace it"
        )
    # A writable copy: torch refuses to wrap read-only buffers without a warning.
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims).copy()


def write_idx(array: np.ndarray, path: Path, *, compress: bool) -> None:
    """Write a uint8 array as IDX (used to make synthetic data sets for tests)."""
    if array.dtype != np.uint8:
        raise ValueError(f"IDX files here hold uint8, but got {array.dtype=}")
    header = struct.pack(">HBB", 0, _UBYTE, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + np.ascontiguousarray(array).tobytes()
    path.write_bytes(gzip.compress(payload, mtime=0) if compress else payload)
