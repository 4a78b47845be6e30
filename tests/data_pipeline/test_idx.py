from __future__ import annotations

import gzip
import hashlib
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from data_pipeline import DataError, parse_idx, read_idx, write_idx


def _images(n: int = 5) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def _raw_idx(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("shape", [(7,), (5, 28, 28), (2, 3, 4, 5)])
def test_round_trip(tmp_path: Path, compress: bool, shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path / "data-idx"
    write_idx(array, path, compress=compress)
    content = read_idx(path)
    assert content.array.dtype == np.uint8  # IDX ubyte comes back as uint8
    assert content.array.shape == shape  # the header's dimensions give the shape
    np.testing.assert_array_equal(content.array, array)  # pixel values survive the trip
    # The md5 is of the uncompressed IDX bytes, whatever the container.
    assert content.md5 == hashlib.md5(_raw_idx(array)).hexdigest()


def test_md5_independent_of_compression(tmp_path: Path) -> None:
    array = _images()
    write_idx(array, tmp_path / "a.gz", compress=True)
    write_idx(array, tmp_path / "a", compress=False)
    # A re-compressed archive names the same content.
    assert read_idx(tmp_path / "a.gz").md5 == read_idx(tmp_path / "a").md5


def test_array_is_writable(tmp_path: Path) -> None:
    write_idx(_images(), tmp_path / "a", compress=False)
    # torch.from_numpy wants a writable buffer; read_idx returns a copy.
    assert read_idx(tmp_path / "a").array.flags.writeable


@pytest.mark.parametrize(
    ("name", "compress"),
    [("plain.gz", False), ("gzipped", True), ("gzipped.idx", True), ("plain", False)],
)
def test_gzip_detected_by_magic_not_suffix(tmp_path: Path, name: str, compress: bool) -> None:
    array = _images()
    path = tmp_path / name
    write_idx(array, path, compress=compress)
    # A misleading or missing .gz suffix does not matter: the first two bytes decide.
    np.testing.assert_array_equal(read_idx(path).array, array)


def test_write_rejects_non_uint8(tmp_path: Path) -> None:
    # Only unsigned bytes are written; the message names the dtype.
    with pytest.raises(ValueError, match="int32"):
        write_idx(np.zeros((2, 2), dtype=np.int32), tmp_path / "x", compress=False)


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (b"\x00\x01\x08\x03", "bad magic 00010803"),  # non-zero leading bytes
        (b"\x00\x00\x0d\x03", "bad magic 00000d03"),  # float32 element type
        (b"\x00\x00\x0b\x03", "bad magic 00000b03"),  # int16 element type
        (b"\x00\x00\x08\x00", "bad magic 00000800"),  # zero dimensions
        (b"PK\x03\x04", "bad magic 504b0304"),  # a zip archive
    ],
)
def test_bad_magic_or_dtype_rejected(header: bytes, fragment: str) -> None:
    data = header + struct.pack(">III", 1, 28, 28) + bytes(784)
    # The error shows the header bytes it found.
    with pytest.raises(DataError, match=fragment):
        parse_idx(data, source="some-file")


@pytest.mark.parametrize(("name", "ndim_byte"), [
    ("train-images-idx3-ubyte", 0x04), ("train-images-idx3-ubyte", 0x01),
    ("t10k-labels-idx1-ubyte", 0x03), ("t10k-labels-idx1-ubyte", 0x02),
])
def test_a_magic_number_that_contradicts_the_file_name_is_reported_as_such(
    tmp_path: Path, name: str, ndim_byte: int
) -> None:
    array = _images() if "images" in name else np.arange(5, dtype=np.uint8)
    raw = bytearray(_raw_idx(array))
    raw[3] = ndim_byte  # the magic's dimension count, wrong for an idx3 / idx1 file
    path = tmp_path / name
    path.write_bytes(bytes(raw))
    expected = "03" if "idx3" in name else "01"
    # The magic is named (with what it should be), not blamed on a truncated body.
    with pytest.raises(DataError, match=f"bad magic 000008{ndim_byte:02x} \\(expected "
                                        f"000008{expected}, {int(expected)} dimensions\\)") as info:
        read_idx(path)
    assert "truncated" not in str(info.value)


@pytest.mark.parametrize("data", [b"", b"\x00\x00", b"\x00\x00\x08"])
def test_too_short_for_a_header(data: bytes) -> None:
    # Fewer than 4 bytes cannot hold the magic; the message says how many there were.
    with pytest.raises(DataError, match=f"only {len(data)} bytes"):
        parse_idx(data, source="tiny")


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "short-header"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">I", 5))  # 3 dims promised, 1 given
    # A header cut short is reported as such, naming the file.
    with pytest.raises(DataError, match=f"{path}.*truncated IDX header"):
        read_idx(path)


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("delta", [-1, -784, 1, 100])
def test_body_size_mismatch(tmp_path: Path, compress: bool, delta: int) -> None:
    raw = _raw_idx(_images())
    data = raw[:delta] if delta < 0 else raw + bytes(delta)
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if compress else data)
    # Header (5, 28, 28) implies 16 + 3920 bytes; a truncated or padded body is refused,
    # and the message names the file and both sizes.
    with pytest.raises(DataError, match=f"{path} has {len(data)} bytes .* implies 3936"):
        read_idx(path)


def _truncate(archive: bytes) -> bytes:
    return archive[: len(archive) // 2]


def _flip_crc(archive: bytes) -> bytes:
    return archive[:-8] + bytes([archive[-8] ^ 0xFF]) + archive[-7:]


def _garble_deflate_stream(archive: bytes) -> bytes:
    return archive[:20] + b"\xff" * 40 + archive[60:]


@pytest.mark.parametrize(
    "corrupt",
    [
        _truncate,
        _flip_crc,
        _garble_deflate_stream,
    ],
)
def test_corrupt_gzip_names_the_file(
    tmp_path: Path, corrupt: Callable[[bytes], bytes]
) -> None:
    # Compressible content, so the archive holds real deflate blocks (not stored ones).
    smooth = (np.arange(50 * 28 * 28) % 251).astype(np.uint8).reshape(50, 28, 28)
    archive = gzip.compress(_raw_idx(smooth), mtime=0)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(corrupt(archive))
    # Any damaged archive becomes one DataError that names the file and says to replace it.
    with pytest.raises(DataError, match=f"{path} is a corrupt gzip archive.*replace"):
        read_idx(path)


def test_unreadable_path_is_data_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    # A missing file is a DataError naming it, not a bare OSError.
    with pytest.raises(DataError, match=f"cannot read {missing}"):
        read_idx(missing)
