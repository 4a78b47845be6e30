"""Stratified K folds of the training set for cross-validation, resident on the device.

The whole training file goes to the device once as uint8; a fold's train and validation sets
are index slices of it, normalised with statistics fitted on that fold's train part only.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from data_pipeline.errors import DataError
from data_pipeline.mnist import LabelledImages
from data_pipeline.prepare import SearchData
from data_pipeline.split import Split
from data_pipeline.tensors import Normalizer, TensorSet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Folds:
    """K disjoint validation sets over the train+val pool; fold k trains on the others."""

    val: tuple[np.ndarray, ...]  # per fold: sorted int64 indices into the training file
    seed: int

    @property
    def k(self) -> int:
        return len(self.val)

    def train(self, fold: int) -> np.ndarray:
        """Sorted indices fold FOLD (0-based) trains on: every other fold's validation set."""
        return np.sort(np.concatenate([v for i, v in enumerate(self.val) if i != fold]))

    def without(self, dropped: np.ndarray) -> Folds:
        """The same folds with DROPPED indices removed (the others keep their fold)."""
        return Folds(val=tuple(np.setdiff1d(v, dropped) for v in self.val), seed=self.seed)

    def fingerprint(self, data_fingerprint: str) -> str:
        """Names these exact folds of this exact data: equal fingerprints, identical folds."""
        digest = hashlib.sha256(f"{data_fingerprint}|{self.seed}|cv{self.k}|".encode())
        for val in self.val:
            digest.update(val.astype("<i8").tobytes())
            digest.update(b"|")
        return digest.hexdigest()[:16]


def stratified_folds(labels: np.ndarray, *, k: int, seed: int) -> Folds:
    """scikit-learn StratifiedKFold (shuffled, seeded by SEED) over every index of LABELS."""
    if k < 2:
        raise DataError(f"cross-validation needs at least 2 folds, but got cv_folds={k}")
    smallest = int(np.bincount(labels).min(initial=len(labels)))
    if smallest < k:
        raise DataError(f"a class has only {smallest} images, fewer than cv_folds={k}: every "
                        f"fold must hold every class; use fewer folds")
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    val = tuple(np.sort(v).astype(np.int64)
                for _, v in splitter.split(np.zeros(len(labels)), labels))
    return Folds(val=val, seed=seed)


@dataclass(frozen=True)
class CvData:
    """Everything a cross-validated search may see. It holds no test tensors by construction."""

    images: torch.Tensor  # [N, 28, 28] uint8: the training file, on the device once
    labels: torch.Tensor  # [N] int64, on the device
    folds: Folds
    normalizers: tuple[Normalizer, ...]  # fold k's fitted on the images fold k trains on
    data_fingerprint: str
    split_fingerprint: str

    def fold(self, k: int) -> SearchData:
        """Fold K (0-based) as the training loop takes data: device slices, fold-normalised."""
        train, val = self.folds.train(k), self.folds.val[k]
        return SearchData(
            train=self._slice(train, self.normalizers[k]), val=self.fold_val(k),
            split=Split(train=train, val=val, seed=self.folds.seed,
                        val_fraction=len(val) / (len(train) + len(val))),
            normalizer=self.normalizers[k], data_fingerprint=self.data_fingerprint,
            split_fingerprint=self.split_fingerprint)

    def fold_val(self, k: int) -> TensorSet:
        return self._slice(self.folds.val[k], self.normalizers[k])

    def _slice(self, indices: np.ndarray, normalizer: Normalizer) -> TensorSet:
        index = torch.from_numpy(indices).to(self.labels.device)
        # Normalizer.apply's arithmetic, op for op, but on the device: no host round trip.
        x = self.images[index].to(torch.float32).div_(255.0).sub_(normalizer.mean)
        return TensorSet(x=x.div_(normalizer.std).unsqueeze(1), y=self.labels[index])


def fold_normalizers(images: np.ndarray, folds: Folds) -> tuple[Normalizer, ...]:
    """Per fold, pixel statistics of the images it trains on (never its validation fold)."""
    return tuple(Normalizer.fit(images[folds.train(k)]) for k in range(folds.k))


def cv_data(full: LabelledImages, folds: Folds, *, normalizers: tuple[Normalizer, ...],
            data_fingerprint: str, device: torch.device) -> CvData:
    """The training file on DEVICE, with FOLDS to slice it by."""
    logger.info("%d-fold cross-validation over %d images (seed %d)", folds.k,
                sum(len(v) for v in folds.val), folds.seed)
    return CvData(
        images=torch.from_numpy(np.ascontiguousarray(full.images)).to(device),
        labels=torch.from_numpy(np.ascontiguousarray(full.labels, dtype=np.int64)).to(device),
        folds=folds, normalizers=normalizers, data_fingerprint=data_fingerprint,
        split_fingerprint=folds.fingerprint(data_fingerprint))
