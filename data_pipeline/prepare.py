"""From located files to what a study needs: search tensors now, test tensors at the end."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from data_pipeline.mnist import LabelledImages, MnistFiles
from data_pipeline.split import Split, stratified_split
from data_pipeline.tensors import Normalizer, TensorSet, to_tensor_set

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchData:
    """Everything the search may see. It holds no test tensors by construction."""

    train: TensorSet
    val: TensorSet
    split: Split
    normalizer: Normalizer
    data_fingerprint: str
    split_fingerprint: str


def prepare_search_data(
    files: MnistFiles, *, val_fraction: float, seed: int, device: torch.device
) -> SearchData:
    """Load the training set once, split it, fit normalisation on train, move it to DEVICE."""
    full = files.load("train")
    split = stratified_split(full.labels, val_fraction=val_fraction, seed=seed)
    return search_data_from_split(full, split, normalizer=Normalizer.fit(full.images[split.train]),
                                  data_fingerprint=files.fingerprint(), device=device)


def search_data_from_split(
    full: LabelledImages, split: Split, *, normalizer: Normalizer, data_fingerprint: str,
    device: torch.device,
) -> SearchData:
    """SPLIT of the training set FULL as device tensors, normalised by NORMALIZER (train's)."""
    logger.info(
        "split %d train / %d val (seed %d); normalisation from train: mean %.4f std %.4f",
        len(split.train), len(split.val), split.seed, normalizer.mean, normalizer.std,
    )
    return SearchData(
        train=to_tensor_set(full.images[split.train], full.labels[split.train], normalizer, device),
        val=to_tensor_set(full.images[split.val], full.labels[split.val], normalizer, device),
        split=split,
        normalizer=normalizer,
        data_fingerprint=data_fingerprint,
        split_fingerprint=split.fingerprint(data_fingerprint),
    )


def prepare_test_data(
    files: MnistFiles, *, normalizer: Normalizer, device: torch.device
) -> TensorSet:
    """The untouched test set, normalised with the train statistics. Call once, at the end."""
    test = files.load("test")
    return to_tensor_set(test.images, test.labels, normalizer, device)
