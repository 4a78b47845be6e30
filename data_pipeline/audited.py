"""The data a study searches on, audited before any trial runs.

Both files are loaded, the training file is split (holdout or K folds), duplicates are looked
for across the parts and the test set, and the split is refused, or the offending training
images dropped when asked, before anything is normalised or moved to the device. The test
images serve the content checks only and are not kept.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from data_pipeline.audit import AuditReport, build_report, plan_drop, refusal
from data_pipeline.duplicates import Duplicates, find_duplicates
from data_pipeline.errors import DataError
from data_pipeline.folds import CvData, Folds, cv_data, fold_normalizers, stratified_folds
from data_pipeline.mnist import LabelledImages, MnistFiles
from data_pipeline.prepare import SearchData, search_data_from_split
from data_pipeline.split import Split, stratified_split
from data_pipeline.tensors import Normalizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditedData:
    data: SearchData | CvData  # what the objective sees: never the test set
    report: AuditReport


@dataclass(frozen=True)
class _Checked:
    full: LabelledImages  # the training file
    split: Split | Folds  # after any dropping
    normalizers: tuple[Normalizer, ...]  # one for a holdout split, one per fold
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
    """Audit the split, refuse it when duplicates cross it, then move it to DEVICE."""
    checked = _check(files, val_fraction=val_fraction, seed=seed, cv_folds=cv_folds,
                     near_threshold=near_threshold, drop_duplicates=drop_duplicates)
    if checked.report.cross_split():
        raise DataError(refusal(checked.report))
    if isinstance(checked.split, Folds):
        data: SearchData | CvData = cv_data(
            checked.full, checked.split, normalizers=checked.normalizers,
            data_fingerprint=checked.data_fingerprint, device=device)
    else:
        data = search_data_from_split(checked.full, checked.split,
                                      normalizer=checked.normalizers[0],
                                      data_fingerprint=checked.data_fingerprint, device=device)
    return AuditedData(data=data, report=checked.report)


def _check(files: MnistFiles, *, val_fraction: float, seed: int, cv_folds: int | None,
           near_threshold: float, drop_duplicates: bool) -> _Checked:
    started = time.perf_counter()
    full, test = files.load("train"), files.load("test")
    data_fingerprint = files.fingerprint()
    split: Split | Folds = (
        stratified_folds(full.labels, k=cv_folds, seed=seed) if cv_folds
        else stratified_split(full.labels, val_fraction=val_fraction, seed=seed))
    duplicates = find_duplicates(np.concatenate([full.images, test.images]),
                                 near_threshold=near_threshold)
    checked = _checked(full, test, split, duplicates, data_fingerprint=data_fingerprint,
                       near_threshold=near_threshold, dropped=np.zeros(0, np.int64))
    if drop_duplicates and checked.report.cross_split():
        dropped = plan_drop(checked.report, droppable=_droppable(split))
        logger.warning("dropping %d training images that duplicate images of another part",
                       len(dropped))
        checked = _checked(full, test, _without(split, dropped), duplicates,
                           data_fingerprint=data_fingerprint, near_threshold=near_threshold,
                           dropped=dropped)
    logger.info("leakage audit in %.1f s: %d duplicate pairs, %d across the split",
                time.perf_counter() - started, len(checked.report.duplicates),
                len(checked.report.cross_split()))
    return checked


def _checked(full: LabelledImages, test: LabelledImages, split: Split | Folds,
             duplicates: Duplicates, *, data_fingerprint: str, near_threshold: float,
             dropped: np.ndarray) -> _Checked:
    parts = _parts(split)
    if isinstance(split, Folds):
        normalizers = fold_normalizers(full.images, split)
        fitted_on = [(f"train part of {name}", len(split.train(k)))
                     for k, name in enumerate(parts)]
    else:
        normalizers = (Normalizer.fit(full.images[split.train]),)
        fitted_on = [("train", len(split.train))]
    normalisation = [{"fitted_on": name, "images": n, "mean": z.mean, "std": z.std}
                     for (name, n), z in zip(fitted_on, normalizers, strict=True)]
    report = build_report(
        train_labels=full.labels, test_labels=test.labels, parts=parts, duplicates=duplicates,
        near_threshold=near_threshold, split=_describe(split, data_fingerprint),
        normalisation=normalisation, dropped=dropped.tolist())
    return _Checked(full=full, split=split, normalizers=normalizers,
                    data_fingerprint=data_fingerprint, report=report)


def _parts(split: Split | Folds) -> dict[str, np.ndarray]:
    if isinstance(split, Folds):
        return {f"fold{k + 1}": val for k, val in enumerate(split.val)}
    return {"train": split.train, "val": split.val}


def _droppable(split: Split | Folds) -> set[str]:
    # Only images that are trained on may go; in CV every fold trains the other folds' models.
    return set(_parts(split)) if isinstance(split, Folds) else {"train"}


def _without(split: Split | Folds, dropped: np.ndarray) -> Split | Folds:
    if isinstance(split, Folds):
        return split.without(dropped)
    return dataclasses.replace(split, train=np.setdiff1d(split.train, dropped))


def _describe(split: Split | Folds, data_fingerprint: str) -> dict[str, Any]:
    if isinstance(split, Folds):
        scheme: dict[str, Any] = {"scheme": "stratified k-fold", "cv_folds": split.k}
    else:
        scheme = {"scheme": "stratified holdout", "val_fraction": split.val_fraction}
    return {**scheme, "seed": split.seed, "data_fingerprint": data_fingerprint,
            "split_fingerprint": split.fingerprint(data_fingerprint)}
