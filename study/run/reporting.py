"""What a trial reports to Optuna, when it may be pruned, and what it records: the one place
that knows a holdout trial from a cross-validated one.

Holdout (one fold): the pruner watches epochs. The trial reports each epoch's validation loss
at step = epoch and may be pruned after any epoch but its last; its MLflow metrics are the
epoch's, unprefixed.

K folds: the pruner watches folds. A fold's epochs are logged as "fold{n}/<metric>" and never
reported; after each fold the trial reports the mean score of the folds done so far at step =
folds done (1..K) and may be pruned before its last fold, so the pruner's resource is a fold
(hyperband and sha get max_resource = K). A fold the time budget cut short leaves no score:
the trial is pruned there.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from study.store import record
from study.train.engine_types import EpochMetrics

if TYPE_CHECKING:
    from collections.abc import Callable

    from study.tracking import StateDict


@dataclass
class FoldResult:
    """One fold of a trial: its best epoch so far and a CPU copy of the weights behind it."""

    metrics: EpochMetrics | None = None
    state: StateDict | None = None
    history: list[EpochMetrics] = field(default_factory=list)  # every epoch, for the diagnosis
    reported: bool = False  # Optuna has seen this fold's score (an epoch, or the whole fold)
    stopped_epoch: int | None = None  # the epoch early stopping ended it at, if it did
    out_of_time: bool = False  # the time budget, not early stopping, ended it there

    def update(self, metrics: EpochMetrics, state: Callable[[], StateDict]) -> None:
        """Record an epoch; STATE gives a CPU copy of its weights, asked only for a new best."""
        self.history.append(metrics)
        if self.metrics is None or metrics.val_loss < self.metrics.val_loss:
            self.metrics = metrics
            self.state = state()


class Reporting(Protocol):
    """The reporting policy of a study's trials (per_epoch or per_fold)."""

    @property
    def folds(self) -> int: ...

    @property
    def steps(self) -> int:
        """The steps a trial reports at: the pruner's resource."""

    @property
    def epochs_are_reported(self) -> bool:
        """Each epoch is reported (and judged by the pruner)."""

    def tags(self) -> dict[str, str]:
        """Tags of every trial's MLflow run."""

    def metric_prefix(self, fold: int) -> str:
        """Where fold FOLD's (1-based) per-epoch metrics go in MLflow."""

    def fold_report(self, folds: Sequence[FoldResult]) -> tuple[float, int] | None:
        """(value, step) to report when the last of FOLDS has trained; None: nothing."""

    def fold_metrics(self, folds: Sequence[FoldResult]) -> dict[str, float]:
        """MLflow metrics at the step fold_report gives."""

    def summary(self, folds: Sequence[FoldResult],
                seen: Sequence[FoldResult]) -> dict[str, Any]:
        """The trial's user attrs that depend on how it reported: SEEN are its folds Optuna saw."""


@dataclass(frozen=True)
class PerEpoch:
    """Holdout: every epoch reported at step = epoch."""

    max_epochs: int
    folds: int = 1
    epochs_are_reported: bool = True

    @property
    def steps(self) -> int:
        return self.max_epochs

    def tags(self) -> dict[str, str]:
        return {}

    def metric_prefix(self, fold: int) -> str:
        return ""

    def fold_report(self, folds: Sequence[FoldResult]) -> tuple[float, int] | None:
        return None

    def fold_metrics(self, folds: Sequence[FoldResult]) -> dict[str, float]:
        return {}

    def summary(self, folds: Sequence[FoldResult],
                seen: Sequence[FoldResult]) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if seen and seen[0].metrics is not None:
            attrs[record.BEST_EPOCH_ATTR] = seen[0].metrics.epoch
        if folds and folds[0].stopped_epoch is not None:
            # early stopping's, or the budget's
            attrs[record.STOPPED_EPOCH_ATTR] = folds[0].stopped_epoch
            if folds[0].out_of_time:
                attrs[record.STOPPED_BY_ATTR] = "time budget"
        return attrs


@dataclass(frozen=True)
class PerFold:
    """K-fold cross-validation: the running mean of the folds done, at step = folds done."""

    folds: int
    epochs_are_reported: bool = False

    @property
    def steps(self) -> int:
        return self.folds

    def tags(self) -> dict[str, str]:
        return {"cv_folds": str(self.folds)}

    def metric_prefix(self, fold: int) -> str:
        return f"fold{fold}/"

    def fold_report(self, folds: Sequence[FoldResult]) -> tuple[float, int] | None:
        return mean(folds, "val_loss"), len(folds)

    def fold_metrics(self, folds: Sequence[FoldResult]) -> dict[str, float]:
        last = best(folds[-1])
        return {"val_loss": mean(folds, "val_loss"), "val_acc": mean(folds, "val_acc"),
                "fold_val_loss": last.val_loss, "fold_val_acc": last.val_acc,
                "fold_best_epoch": last.epoch}

    def summary(self, folds: Sequence[FoldResult],
                seen: Sequence[FoldResult]) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            record.FOLDS_DONE_ATTR: len(seen),
            record.FOLD_VAL_LOSSES_ATTR: [f.metrics.val_loss for f in seen if f.metrics],
            record.FOLD_BEST_EPOCHS_ATTR: [f.metrics.epoch for f in seen if f.metrics]}
        if any(f.stopped_epoch is not None for f in folds):
            # per fold: the epoch early stopping ended it at, 0 for a fold that ran to the end
            attrs[record.FOLD_STOPPED_EPOCHS_ATTR] = [f.stopped_epoch or 0 for f in folds]
        return attrs


def reporting(folds: int, max_epochs: int) -> Reporting:
    """The policy of a study of FOLDS folds (1: holdout) and trials of MAX_EPOCHS."""
    return PerEpoch(max_epochs) if folds == 1 else PerFold(folds)


def best(fold: FoldResult) -> EpochMetrics:
    assert fold.metrics is not None  # max_epochs >= 1: every finished fold has a best epoch
    return fold.metrics


def mean(folds: Sequence[FoldResult], metric: str) -> float:
    return statistics.fmean(getattr(f.metrics, metric) for f in folds if f.metrics is not None)
