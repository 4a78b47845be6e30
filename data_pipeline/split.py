"""The stratified train/validation split of the 60k MNIST training images."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedShuffleSplit

from data_pipeline.errors import DataError


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # sorted int64 indices into the training set
    val: np.ndarray  # sorted int64 indices, disjoint from train
    seed: int
    val_fraction: float

    def fingerprint(self, data_fingerprint: str) -> str:
        """Names this exact split of this exact data: equal fingerprints, identical split."""
        digest = hashlib.sha256()
        digest.update(f"{data_fingerprint}|{self.seed}|{self.val_fraction!r}|".encode())
        digest.update(self.train.astype("<i8").tobytes())
        digest.update(b"|")
        digest.update(self.val.astype("<i8").tobytes())
        return digest.hexdigest()[:16]


def stratified_split(labels: np.ndarray, *, val_fraction: float, seed: int) -> Split:
    """Hold out VAL_FRACTION of each class for validation, reproducibly for SEED."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), but got {val_fraction=}")
    n_classes = len(np.unique(labels))
    n_val = int(np.ceil(val_fraction * len(labels)))
    if n_val < n_classes or len(labels) - n_val < n_classes:
        raise DataError(
            f"{len(labels)} images cannot be split with {val_fraction=} so that train and "
            f"validation each hold all {n_classes} classes"
        )
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2:
        raise DataError(
            f"class {int(classes[counts.argmin()])} has {int(counts.min())} image; a stratified "
            f"split needs at least 2 per class"
        )
    splitter = StratifiedShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
    train, val = next(splitter.split(np.zeros(len(labels)), labels))
    return Split(
        train=np.sort(train).astype(np.int64),
        val=np.sort(val).astype(np.int64),
        seed=seed,
        val_fraction=val_fraction,
    )
