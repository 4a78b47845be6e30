from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torchvision

from data_pipeline import (
    CANONICAL_MD5,
    DATA_DIR_ENV,
    DataError,
    MnistFiles,
    find_mnist,
    locate_mnist,
    write_idx,
)
from tests.synthetic import make_images, write_synthetic_mnist

STEMS = sorted(CANONICAL_MD5)


def _write_train(directory: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Replace the training pair of a synthetic set with the given arrays."""
    write_idx(images, directory / "train-images-idx3-ubyte.gz", compress=True)
    write_idx(labels, directory / "train-labels-idx1-ubyte.gz", compress=True)


@pytest.mark.parametrize("layout", ["MNIST/raw", "raw", "."])
@pytest.mark.parametrize("compress", [True, False])
def test_find_mnist_layouts(tmp_path: Path, layout: str, compress: bool) -> None:
    where = write_synthetic_mnist(tmp_path / layout, compress=compress)
    files = find_mnist(tmp_path, verify=False)
    assert files is not None  # all three layouts torchvision or a user may leave are found
    assert files.directory == where  # the directory that actually holds the files
    assert sorted(files.paths) == STEMS  # all four files located
    suffix = ".gz" if compress else ""
    # The located file is the one on disk, compressed or not.
    assert all(path == where / f"{stem}{suffix}" for stem, path in files.paths.items())
    assert files.verify is False  # the flag is carried through to loading


def test_find_mnist_prefers_uncompressed(synthetic_dir: Path) -> None:
    write_synthetic_mnist(synthetic_dir, compress=False)  # .gz and raw side by side
    files = find_mnist(synthetic_dir, verify=False)
    assert files is not None
    # torchvision leaves both behind; the uncompressed one is read (no decompression).
    assert all(path.suffix != ".gz" for path in files.paths.values())


def test_find_mnist_empty_dir_is_none(tmp_path: Path) -> None:
    # No files at all is "absent", not an error: the caller may download.
    assert find_mnist(tmp_path) is None
    assert find_mnist(tmp_path / "does-not-exist") is None


@pytest.mark.parametrize(
    "remove", [["t10k-images-idx3-ubyte"], ["train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"]]
)
def test_partial_set_names_missing_files(synthetic_dir: Path, remove: list[str]) -> None:
    for stem in remove:
        (synthetic_dir / f"{stem}.gz").unlink()
    with pytest.raises(DataError) as info:
        find_mnist(synthetic_dir, verify=False)
    message = str(info.value)
    assert str(synthetic_dir) in message  # names the directory
    assert all(stem in message for stem in remove)  # names every missing file
    present = set(STEMS) - set(remove)
    # ...and only the missing ones.
    assert not any(f"'{stem}'" in message for stem in present)
    assert "--data-dir" in message  # says how to point at a complete set


def test_verify_rejects_noncanonical_content(tmp_path: Path) -> None:
    directory = write_synthetic_mnist(tmp_path / "mnist")
    files = find_mnist(directory, verify=True)
    assert files is not None  # finding does not read content
    with pytest.raises(DataError) as info:
        files.load("train")
    message = str(info.value)
    # Names the offending file, its content md5 and the escape hatch.
    assert str(directory / "train-images-idx3-ubyte.gz") in message
    assert CANONICAL_MD5["train-images-idx3-ubyte"] in message
    assert "--allow-noncanonical-data" in message


@pytest.mark.parametrize("part", ["train", "test"])
def test_verify_false_accepts_synthetic(synthetic_files: MnistFiles, part: str) -> None:
    n = 400 if part == "train" else 100
    data = synthetic_files.load(part)  # type: ignore[arg-type]
    assert data.images.shape == (n, 28, 28)  # [N, 28, 28]
    assert data.images.dtype == np.uint8  # pixels stay bytes until normalised
    assert data.labels.shape == (n,)  # one label per image
    assert data.labels.dtype == np.int64  # labels widened for torch's cross-entropy
    assert set(data.labels.tolist()) == set(range(10))  # every class present


def test_wrong_image_shape_rejected(synthetic_dir: Path) -> None:
    labels = np.arange(20, dtype=np.uint8) % 10
    _write_train(synthetic_dir, np.zeros((20, 28, 27), dtype=np.uint8), labels)
    files = find_mnist(synthetic_dir, verify=False)
    assert files is not None
    # Images that are not 28x28 are refused, with the shape shown.
    with pytest.raises(DataError, match=r"train images .* shape \(20, 28, 27\)"):
        files.load("train")


def test_labels_above_nine_rejected(synthetic_dir: Path) -> None:
    labels = np.arange(20, dtype=np.uint8) % 10
    labels[3] = 12
    _write_train(synthetic_dir, make_images(labels % 10, seed=0), labels)
    files = find_mnist(synthetic_dir, verify=False)
    assert files is not None
    # A label outside 0..9 is refused and the largest one is named.
    with pytest.raises(DataError, match="labels .* go up to 12, not 0..9"):
        files.load("train")


@pytest.mark.parametrize("n_labels", [19, 21])
def test_label_count_mismatch_rejected(synthetic_dir: Path, n_labels: int) -> None:
    labels = np.arange(n_labels, dtype=np.uint8) % 10
    _write_train(synthetic_dir, make_images(np.arange(20) % 10, seed=0), labels)
    files = find_mnist(synthetic_dir, verify=False)
    assert files is not None
    # Images and labels must pair up one to one; both counts are shown.
    with pytest.raises(DataError, match=rf"20 images but labels of shape \({n_labels},\)"):
        files.load("train")


def test_fingerprint_stable(synthetic_dir: Path, tmp_path: Path) -> None:
    first = find_mnist(synthetic_dir, verify=False)
    again = find_mnist(synthetic_dir, verify=False)
    assert first is not None and again is not None
    before = first.fingerprint()
    first.load("train")  # fills the md5 cache
    assert first.fingerprint() == before  # cached md5s give the same answer
    assert again.fingerprint() == before  # a fresh look at the same files agrees
    assert len(before) == 16 and int(before, 16) >= 0  # 16 hex digits

    raw = write_synthetic_mnist(tmp_path / "raw-copy", compress=False)
    plain = find_mnist(raw, verify=False)
    assert plain is not None
    # Same content, other container: same data set.
    assert plain.fingerprint() == before


def test_fingerprint_changes_with_content(tmp_path: Path) -> None:
    a = find_mnist(write_synthetic_mnist(tmp_path / "a"), verify=False)
    b = find_mnist(write_synthetic_mnist(tmp_path / "b"), verify=False)
    assert a is not None and b is not None
    assert a.fingerprint() == b.fingerprint()  # byte-identical sets share a fingerprint

    labels = np.arange(100, dtype=np.uint8) % 10
    write_idx(labels, tmp_path / "b" / "t10k-labels-idx1-ubyte.gz", compress=True)
    changed = find_mnist(tmp_path / "b", verify=False)
    assert changed is not None
    # Changing one file (even a test file) changes the fingerprint.
    assert changed.fingerprint() != a.fingerprint()


def test_locate_without_download_and_no_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        locate_mnist(tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path) in message  # names where it looked
    assert "--data-dir" in message  # the flag to point elsewhere
    assert DATA_DIR_ENV in message and DATA_DIR_ENV == "MNIST_STUDY_DATA_DIR"  # the env var
    assert list(tmp_path.iterdir()) == []  # nothing was created


@pytest.fixture
def unreachable_mirrors(monkeypatch: pytest.MonkeyPatch) -> None:
    # Port 9 (discard) on localhost: connection refused at once, no real network touched.
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])


@pytest.mark.usefixtures("unreachable_mirrors")
def test_locate_finds_existing_files_without_downloading(synthetic_dir: Path) -> None:
    files = locate_mnist(synthetic_dir, download=True, verify=False)
    # Files already present are used as they are; the dead mirror is never tried.
    assert files.directory == synthetic_dir


@pytest.mark.usefixtures("unreachable_mirrors")
def test_download_failure_says_how_to_point_at_files(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    started = time.perf_counter()
    with pytest.raises(DataError) as info:
        locate_mnist(target, download=True)
    elapsed = time.perf_counter() - started
    message = str(info.value)
    assert f"could not download MNIST into {target}" in message  # says what failed, where
    assert "--data-dir" in message and DATA_DIR_ENV in message  # and how to avoid the download
    assert "\n" not in message  # one line, as the CLI prints it
    assert elapsed < 10  # a refused connection fails fast, no long retry loop
    assert not target.exists()  # the folders the download made are gone: nothing misspelled


@pytest.mark.slow
def test_real_mnist(real_mnist_dir: Path, tmp_path: Path) -> None:
    files = find_mnist(real_mnist_dir, verify=True)
    assert files is not None
    train = files.load("train")  # verify=True: the canonical md5s must match
    test = files.load("test")
    assert train.images.shape == (60000, 28, 28)  # the 60k training images
    assert test.images.shape == (10000, 28, 28)  # the 10k test images
    assert train.labels.shape == (60000,) and test.labels.shape == (10000,)
    for labels in (train.labels, test.labels):
        assert set(np.unique(labels).tolist()) == set(range(10))  # labels are exactly 0..9
    # Copying the files keeps the fingerprint: it names content, not location.
    copy = tmp_path / "copy"
    shutil.copytree(files.directory, copy)
    copied = find_mnist(copy, verify=True)
    assert copied is not None and copied.fingerprint() == files.fingerprint()
