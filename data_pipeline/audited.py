"""The data a study searches on, audited before any trial runs.

Both files are loaded, the training file is partitioned (one holdout fold or K folds),
duplicates are looked for across the parts and the test set, and the partition is refused, or
the offending training images dropped when asked, before anything is normalised or moved to
the device. The test images serve the content checks only and are not kept.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from data_pipeline.audit import AuditReport, build_report, plan_drop, refusal
from data_pipeline.duplicates import Duplicates, find_duplicates
from data_pipeline.errors import DataError
from data_pipeline.mnist import LabelledImages, MnistFiles
from data_pipeline.partition import Partition, make_partition
from data_pipeline.prepare import SearchData, fold_normalizers, search_data
from data_pipeline.tensors import Normalizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditedData:
    data: SearchData  # what the objective sees: never the test set
    report: AuditReport


@dataclass(frozen=True)
class _Checked:
    full: LabelledImages  # the training file
    folds: Partition  # after any dropping
    normalizers: tuple[Normalizer, ...]  # one per fold
    data_fingerprint: str
    report: AuditReport


def audit_files(files: MnistFiles, *, val_fraction: float, seed: int, cv_folds: int | None,
                near_threshold: float, drop_duplicates: bool = False) -> AuditReport:
    """The audit alone, as `mnist-study audit` prints it: nothing goes to a device."""
    return _check(files, val_fraction=val_fraction, seed=seed, cv_folds=cv_folds,
                  near_threshold=near_threshold, drop_duplicates=drop_duplicates).report


def prepare_audited_data(
    files: MnistFiles, *, val_fraction: float, seed: int, cv_folds: int | None,
    near_threshold: float, drop_duplicates: bool, device: torch.device,
) -> AuditedData:
    """Audit the partition, refuse it when duplicates cross it, then move it to DEVICE."""
    checked = _check(files, val_fraction=val_fraction, seed=seed, cv_folds=cv_folds,
                     near_threshold=near_threshold, drop_duplicates=drop_duplicates)
    if checked.report.cross_split():
        raise DataError(refusal(checked.report))
    data = search_data(checked.full, checked.folds, normalizers=checked.normalizers,
                       data_fingerprint=checked.data_fingerprint, device=device)
    return AuditedData(data=data, report=checked.report)


def _check(files: MnistFiles, *, val_fraction: float, seed: int, cv_folds: int | None,
           near_threshold: float, drop_duplicates: bool) -> _Checked:
    started = time.perf_counter()
    full, test = files.load("train"), files.load("test")
    data_fingerprint = files.fingerprint()
    folds = make_partition(full.labels, seed=seed, val_fraction=val_fraction, cv_folds=cv_folds)
    duplicates = find_duplicates(np.concatenate([full.images, test.images]),
                                 near_threshold=near_threshold)
    checked = _checked(full, test, folds, duplicates, data_fingerprint=data_fingerprint,
                       near_threshold=near_threshold, dropped=np.zeros(0, np.int64))
    if drop_duplicates and checked.report.cross_split():
        dropped = plan_drop(checked.report, droppable=folds.trained_parts())
        logger.warning("dropping %d training images that duplicate images of another part",
                       len(dropped))
        checked = _checked(full, test, folds.without(dropped), duplicates,
                           data_fingerprint=data_fingerprint, near_threshold=near_threshold,
                           dropped=dropped)
    logger.info("leakage audit in %.1f s: %d duplicate pairs, %d across the split",
                time.perf_counter() - started, len(checked.report.duplicates),
                len(checked.report.cross_split()))
    return checked


def _checked(full: LabelledImages, test: LabelledImages, folds: Partition,
             duplicates: Duplicates, *, data_fingerprint: str, near_threshold: float,
             dropped: np.ndarray) -> _Checked:
    normalizers = fold_normalizers(full.images, folds)
    # A holdout's one normaliser is fitted on "train"; fold k's on the parts it trains on.
    fitted_on = ["train"] if folds.k == 1 else [f"train part of {name}" for name in folds.parts()]
    normalisation = [{"fitted_on": name, "images": len(train), "mean": z.mean, "std": z.std}
                     for name, train, z in zip(fitted_on, folds.train, normalizers, strict=True)]
    report = build_report(
        train_labels=full.labels, test_labels=test.labels, parts=folds.parts(),
        duplicates=duplicates, near_threshold=near_threshold,
        split=_describe(folds, data_fingerprint), normalisation=normalisation,
        dropped=dropped.tolist())
    return _Checked(full=full, folds=folds, normalizers=normalizers,
                    data_fingerprint=data_fingerprint, report=report)


def _describe(folds: Partition, data_fingerprint: str) -> dict[str, Any]:
    return {**folds.describe(), "seed": folds.seed, "data_fingerprint": data_fingerprint,
            "split_fingerprint": folds.fingerprint(data_fingerprint)}
