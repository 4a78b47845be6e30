"""The reporting policy: holdout reports epochs, cross-validation reports folds."""

from __future__ import annotations

import pytest

from study.run.reporting import FoldResult, PerEpoch, PerFold, reporting
from study.train.engine_types import EpochMetrics


def _fold(*losses: float, stopped: int | None = None) -> FoldResult:
    fold = FoldResult(stopped_epoch=stopped)
    for epoch, loss in enumerate(losses, start=1):
        fold.update(EpochMetrics(epoch=epoch, train_loss=loss, train_acc=0.9, val_loss=loss,
                                 val_acc=1 - loss, lr=0.1, seconds=1.0), dict)
    return fold


def test_one_fold_reports_every_epoch_and_k_folds_report_each_fold() -> None:
    holdout, cv = reporting(1, max_epochs=40), reporting(3, max_epochs=40)
    assert isinstance(holdout, PerEpoch) and isinstance(cv, PerFold)
    assert (holdout.steps, holdout.epochs_are_reported, holdout.metric_prefix(1)) == (
        40, True, "")
    assert (cv.steps, cv.epochs_are_reported, cv.metric_prefix(2)) == (3, False, "fold2/")
    assert holdout.tags() == {} and cv.tags() == {"cv_folds": "3"}


def test_a_fold_reports_the_running_mean_of_the_folds_done() -> None:
    folds = [_fold(0.5, 0.3), _fold(0.4, 0.2, 0.25)]
    assert reporting(1, max_epochs=3).fold_report(folds) is None
    value, step = PerFold(3).fold_report(folds) or (None, None)
    assert (value, step) == (pytest.approx(0.25), 2)
    metrics = PerFold(3).fold_metrics(folds)
    assert metrics["fold_val_loss"] == 0.2 and metrics["fold_best_epoch"] == 2


def test_what_a_trial_records_follows_its_policy() -> None:
    folds = [_fold(0.5, 0.3, stopped=2)]
    assert PerEpoch(40).summary(folds, folds) == {"best_epoch": 2, "stopped_epoch": 2}
    cv = [_fold(0.5, 0.3, stopped=2), _fold(0.4, 0.2)]
    assert PerFold(2).summary(cv, cv) == {
        "folds_done": 2, "fold_val_losses": [0.3, 0.2], "fold_best_epochs": [2, 2],
        "fold_stopped_epochs": [2, 0]}
