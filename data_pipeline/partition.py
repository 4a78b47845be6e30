"""How the 60k MNIST training images are partitioned for the search: K folds of (train, val).

Holdout is one fold, drawn by scikit-learn's StratifiedShuffleSplit; cross-validation is K
folds from StratifiedKFold, where fold k validates on its own part and trains on the others.
Everything downstream (the audit, normalisation, the objective) loops over the folds and
never asks which scheme made them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit

from data_pipeline.errors import DataError


@dataclass(frozen=True)
class Partition:
    """Per fold, sorted int64 indices into the training file: train and val disjoint."""

    train: tuple[np.ndarray, ...]
    val: tuple[np.ndarray, ...]
    seed: int
    val_fraction: float | None  # holdout's requested fraction; None for K folds

    @property
    def k(self) -> int:
        return len(self.val)

    def parts(self) -> dict[str, np.ndarray]:
        """The named, disjoint parts the audit checks: train and val, or fold1..foldK."""
        if self.k == 1:
            return {"train": self.train[0], "val": self.val[0]}
        return {f"fold{i + 1}": val for i, val in enumerate(self.val)}

    def trained_parts(self) -> set[str]:
        """Parts some fold trains on: only their images may be dropped as duplicates."""
        trained = np.unique(np.concatenate(self.train))
        return {name for name, idx in self.parts().items() if np.isin(idx, trained).all()}

    def without(self, dropped: np.ndarray) -> Partition:
        """The same folds with DROPPED indices removed wherever they were."""
        return Partition(train=tuple(np.setdiff1d(t, dropped) for t in self.train),
                         val=tuple(np.setdiff1d(v, dropped) for v in self.val),
                         seed=self.seed, val_fraction=self.val_fraction)

    def describe(self) -> dict[str, object]:
        if self.val_fraction is not None:
            return {"scheme": "stratified holdout", "val_fraction": self.val_fraction}
        return {"scheme": "stratified k-fold", "cv_folds": self.k}

    def fingerprint(self, data_fingerprint: str) -> str:
        """Names this exact partition of this exact data: equal fingerprints, identical folds.

        The byte layouts are those of the first holdout and cross-validation releases, so a
        study created then still matches when it is resumed.
        """
        if self.val_fraction is not None:  # train|val
            header = repr(self.val_fraction)
            payload = _bytes(self.train[0]) + b"|" + _bytes(self.val[0])
        else:  # each fold's val indices, each followed by a separator
            header = f"cv{self.k}"
            payload = b"".join(_bytes(val) + b"|" for val in self.val)
        digest = hashlib.sha256(f"{data_fingerprint}|{self.seed}|{header}|".encode() + payload)
        return digest.hexdigest()[:16]


def make_partition(labels: np.ndarray, *, seed: int, val_fraction: float,
              cv_folds: int | None) -> Partition:
    """K stratified folds when CV_FOLDS is set, else one holdout fold of VAL_FRACTION."""
    if cv_folds is not None:
        return stratified_folds(labels, k=cv_folds, seed=seed)
    return stratified_split(labels, val_fraction=val_fraction, seed=seed)


def stratified_split(labels: np.ndarray, *, val_fraction: float, seed: int) -> Partition:
    """One fold: VAL_FRACTION of each class held out for validation, reproducibly for SEED."""
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
    return Partition(train=(_sorted(train),), val=(_sorted(val),), seed=seed,
                     val_fraction=val_fraction)


def stratified_folds(labels: np.ndarray, *, k: int, seed: int) -> Partition:
    """K folds by StratifiedKFold (shuffled, seeded by SEED) over every index of LABELS."""
    if k < 2:
        raise DataError(f"cross-validation needs at least 2 folds, but got cv_folds={k}")
    smallest = int(np.bincount(labels).min(initial=len(labels)))
    if smallest < k:
        raise DataError(f"a class has only {smallest} images, fewer than cv_folds={k}: every "
                        f"fold must hold every class; use fewer folds")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = list(splitter.split(np.zeros(len(labels)), labels))
    return Partition(train=tuple(_sorted(t) for t, _ in folds),
                     val=tuple(_sorted(v) for _, v in folds), seed=seed, val_fraction=None)


def _bytes(indices: np.ndarray) -> bytes:
    return indices.astype("<i8").tobytes()


def _sorted(indices: np.ndarray) -> np.ndarray:
    return np.sort(indices).astype(np.int64)
