"""Finding, downloading and verifying the four MNIST IDX files."""

from __future__ import annotations

import hashlib
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from data_pipeline.errors import DataError
from data_pipeline.idx import read_idx

logger = logging.getLogger(__name__)

Part = Literal["train", "test"]

# MD5 of the *uncompressed* content: archives may be re-compressed, the content may not.
CANONICAL_MD5: Mapping[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
_STEMS: Mapping[Part, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DATA_DIR_ENV = "MNIST_STUDY_DATA_DIR"
_HOW_TO_POINT = (
    f"put the four MNIST IDX files (.gz or uncompressed) in a directory and pass "
    f"--data-dir DIR or set {DATA_DIR_ENV}=DIR"
)


@dataclass(frozen=True)
class LabelledImages:
    images: np.ndarray  # [N, 28, 28] uint8
    labels: np.ndarray  # [N] int64 in 0..9


@dataclass(frozen=True)
class MnistFiles:
    """The four files, located and not yet read."""

    directory: Path
    paths: Mapping[str, Path]  # stem -> file (.gz or not)
    verify: bool  # check content against the canonical MNIST MD5s
    # Content MD5s seen so far, so the fingerprint never decompresses a file twice.
    _md5: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def load(self, part: Part) -> LabelledImages:
        image_stem, label_stem = _STEMS[part]
        images = self._read(image_stem)
        labels = self._read(label_stem)
        _check_shapes(images, labels, part=part, directory=self.directory)
        return LabelledImages(images=images, labels=labels.astype(np.int64))

    def fingerprint(self) -> str:
        """SHA-256 over the content MD5s of all four files: names the exact data set."""
        digest = hashlib.sha256()
        for stem in sorted(self.paths):
            digest.update(f"{stem}:{self._content_md5(stem)}\n".encode())
        return digest.hexdigest()[:16]

    def _read(self, stem: str) -> np.ndarray:
        content = read_idx(self.paths[stem])
        self._md5[stem] = content.md5
        if self.verify and content.md5 != CANONICAL_MD5[stem]:
            raise DataError(
                f"{self.paths[stem]} is not the canonical MNIST file (content md5 {content.md5}, "
                f"expected {CANONICAL_MD5[stem]}); replace it, or pass "
                f"--allow-noncanonical-data to use an IDX data set of your own"
            )
        return content.array

    def _content_md5(self, stem: str) -> str:
        if stem not in self._md5:
            self._md5[stem] = read_idx(self.paths[stem]).md5
        return self._md5[stem]


def _check_shapes(images: np.ndarray, labels: np.ndarray, *, part: Part, directory: Path) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{part} images in {directory} have shape {images.shape}, not [N, 28, 28]")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{part} set in {directory}: {len(images)} images but labels of shape {labels.shape}"
        )
    if labels.size and int(labels.max()) > 9:
        raise DataError(f"{part} labels in {directory} go up to {int(labels.max())}, not 0..9")


def find_mnist(directory: Path, *, verify: bool = True) -> MnistFiles | None:
    """Look for the files in DIR/MNIST/raw, DIR/raw and DIR itself; None when absent."""
    for candidate in (directory / "MNIST" / "raw", directory / "raw", directory):
        paths = {stem: _existing(candidate, stem) for stem in CANONICAL_MD5}
        found = {stem: path for stem, path in paths.items() if path is not None}
        if len(found) == len(CANONICAL_MD5):
            return MnistFiles(directory=candidate, paths=found, verify=verify)
        if found:
            missing = sorted(set(CANONICAL_MD5) - set(found))
            raise DataError(f"{candidate} holds only part of MNIST, missing {missing}; "
                            f"{_HOW_TO_POINT}")
    return None


def _existing(directory: Path, stem: str) -> Path | None:
    # Uncompressed first: it is what torchvision leaves behind after a download.
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def locate_mnist(directory: Path, *, download: bool, verify: bool = True) -> MnistFiles:
    """The files under DIRECTORY, downloaded there through torchvision when absent."""
    files = find_mnist(directory, verify=verify)
    if files is not None:
        return files
    if not download:
        raise DataError(f"no MNIST IDX files in {directory}; {_HOW_TO_POINT}")
    _download(directory)
    files = find_mnist(directory, verify=verify)
    if files is None:
        raise DataError(f"torchvision reported success but no MNIST files are in {directory}")
    return files


def _download(directory: Path) -> None:
    from torchvision.datasets import MNIST  # heavy import, only needed here

    logger.info("downloading MNIST into %s", directory)
    # The topmost folder this download creates (torchvision adds MNIST/raw): a failed download
    # removes it, so a misspelled --data-dir leaves nothing behind.
    target = directory / "MNIST" / "raw"
    created = next((p for p in reversed((target, *target.parents)) if not p.exists()), None)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            MNIST(root=str(directory), train=train, download=True)
    except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError...
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"could not download MNIST into {directory} ({reason}); offline? {_HOW_TO_POINT}"
        ) from exc
