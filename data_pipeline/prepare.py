"""From located files to what a study needs: search tensors now, test tensors at the end.

The whole training file goes to the device once as uint8. A fold's train and validation sets
are index slices of it, normalised with statistics fitted on that fold's train part only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from data_pipeline.mnist import LabelledImages, MnistFiles
from data_pipeline.partition import Partition, make_partition
from data_pipeline.tensors import Fold, Normalizer, TensorSet, to_tensor_set

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchData:
    """Everything the search may see: K folds of the training file. Never the test set."""

    images: torch.Tensor  # [N, 28, 28] uint8: the training file, on the device once
    labels: torch.Tensor  # [N] int64, on the device
    partition: Partition
    normalizers: tuple[Normalizer, ...]  # fold i's fitted on the images fold i trains on
    data_fingerprint: str
    split_fingerprint: str
    # The fold built last, kept: a holdout study slices its one fold once, not once a trial,
    # and K folds still hold one fold's float copy at a time.
    _last: dict[int, Fold] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def k(self) -> int:
        return self.partition.k

    def fold(self, i: int) -> Fold:
        """Fold I (0-based): device slices of the training file, normalised on its train part."""
        if i not in self._last:
            self._last.clear()
            self._last[i] = Fold(train=self._slice(self.partition.train[i], self.normalizers[i]),
                                 val=self._slice(self.partition.val[i], self.normalizers[i]),
                                 normalizer=self.normalizers[i])
        return self._last[i]

    def train_sizes(self) -> list[int]:
        """Images each fold trains on."""
        return [len(train) for train in self.partition.train]

    def smallest_train(self) -> int:
        """Images the smallest fold trains on: the batch sizes must fit it."""
        return min(len(train) for train in self.partition.train)

    def _slice(self, indices: np.ndarray, normalizer: Normalizer) -> TensorSet:
        index = torch.from_numpy(indices).to(self.labels.device)
        # Normalizer.apply's arithmetic, op for op, but on the device: no host round trip.
        x = self.images[index].to(torch.float32).div_(255.0).sub_(normalizer.mean)
        return TensorSet(x=x.div_(normalizer.std).unsqueeze(1), y=self.labels[index])


def fold_normalizers(images: np.ndarray, folds: Partition) -> tuple[Normalizer, ...]:
    """Per fold, pixel statistics of the images it trains on (never its validation part)."""
    return tuple(Normalizer.fit(images[train]) for train in folds.train)


def prepare_search_data(
    files: MnistFiles, *, val_fraction: float, seed: int, device: torch.device,
    cv_folds: int | None = None,
) -> SearchData:
    """Load the training set once, partition it, fit normalisation per fold, move to DEVICE.

    Unaudited: `mnist-study run` goes through prepare_audited_data; benchmarks come here.
    """
    full = files.load("train")
    folds = make_partition(full.labels, seed=seed, val_fraction=val_fraction, cv_folds=cv_folds)
    return search_data(full, folds, normalizers=fold_normalizers(full.images, folds),
                       data_fingerprint=files.fingerprint(), device=device)


def search_data(full: LabelledImages, folds: Partition, *, normalizers: tuple[Normalizer, ...],
                data_fingerprint: str, device: torch.device) -> SearchData:
    """The training file FULL on DEVICE, with the FOLDS to slice it by."""
    for i, (train, val, z) in enumerate(zip(folds.train, folds.val, normalizers, strict=True)):
        logger.info("fold %d of %d: %d train / %d val (seed %d); normalisation from its train "
                    "part: mean %.4f std %.4f", i + 1, folds.k, len(train), len(val), folds.seed,
                    z.mean, z.std)
    return SearchData(
        images=torch.from_numpy(np.ascontiguousarray(full.images)).to(device),
        labels=torch.from_numpy(np.ascontiguousarray(full.labels, dtype=np.int64)).to(device),
        partition=folds, normalizers=normalizers, data_fingerprint=data_fingerprint,
        split_fingerprint=folds.fingerprint(data_fingerprint))


def prepare_test_data(
    files: MnistFiles, *, normalizers: tuple[Normalizer, ...], device: torch.device
) -> tuple[TensorSet, ...]:
    """The untouched test set, read once, as each fold's model sees it: normalised with that
    fold's train statistics. Call once, at the end."""
    test = files.load("test")
    return tuple(to_tensor_set(test.images, test.labels, z, device) for z in normalizers)
