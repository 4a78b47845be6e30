"""A one-line diagnosis of a trial's learning curves, for the dashboard and the MLflow compare view.

A pure function of the per-epoch metrics: a person scanning fifty trials wants to know at a
glance which ones diverged, overfit, never fit the training data, or were still improving.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from optuna.trial import TrialState

from study.train.engine_types import EpochMetrics

# Any reasonable MNIST network fits >= 97% of its training images within a few epochs; below
# this it has not learned the training data (too small a learning rate, too much regularisation).
UNDERFIT_TRAIN_ACC = 0.90
# Training accuracy is measured with dropout and augmentation on, so it reads low for a good
# network; validation accuracy does not: a trial whose best stays under this has not learned
# MNIST, whatever its curves' shape, and is no "converging" one.
UNDERFIT_VAL_ACC = 0.97
# Validation loss this far above its best (relative, and at least the absolute floor in nats)
# counts as rising, not as epoch-to-epoch noise.
OVERFIT_RISE = 0.02
OVERFIT_MIN_RISE = 0.002
# A training loss that more than doubles from its minimum (and rises by a real amount, not
# 0.001 -> 0.003) means the optimiser is blowing up.
DIVERGE_FACTOR = 2.0
DIVERGE_MIN_RISE = 0.1


def diagnose(history: Sequence[EpochMetrics], *, state: TrialState, reason: str = "",
             diverged: bool = False) -> str:
    """'<verdict>: <evidence>' for a finished trial, from its epochs in order.

    Verdicts: diverged, underfitting, overfitting, converging; a pruned trial reads
    'pruned at epoch N: <verdict> ...', a trial failed for another reason
    'failed after N epochs: <reason>'. DIVERGED: the trial failed on a NaN/inf loss.
    """
    if state == TrialState.FAIL:
        return _failed(history, reason, diverged=diverged)
    if not history:
        return f"{state.name.lower()} before the first epoch"
    if state == TrialState.PRUNED:
        # What the pruner saw, when the caller knows it; a trend over two epochs says little.
        return f"pruned at epoch {history[-1].epoch}: {reason or _trend(history)}"
    return _trend(history)


def pruner_evidence(value: float, others: Sequence[float], *, step: int,
                    unit: str = "epoch") -> str:
    """How VALUE (a val loss at STEP) compared with the OTHERS the pruner saw at that step."""
    if not others:
        return f"val loss {value:.4g} at {unit} {step}, no other trial there yet"
    ranked = sorted([*others, value])
    return (f"val loss {value:.4g} ranked {ranked.index(value) + 1} of {len(ranked)} at "
            f"{unit} {step} (best {ranked[0]:.4g}, median {statistics.median(ranked):.4g})")


def _failed(history: Sequence[EpochMetrics], reason: str, *, diverged: bool) -> str:
    # The training loop raises on a NaN/inf loss before yielding that epoch: it is the next one.
    if diverged:
        return f"diverged: non-finite loss in epoch {len(history) + 1}"
    return f"failed after {_epochs(len(history))}: {reason or 'no reason recorded'}"


def _trend(history: Sequence[EpochMetrics]) -> str:
    last = history[-1]
    best = min(history, key=lambda m: m.val_loss)
    lowest_train = min(m.train_loss for m in history)
    if last.train_loss > max(DIVERGE_FACTOR * lowest_train, lowest_train + DIVERGE_MIN_RISE):
        return (f"diverged: train loss rose to {last.train_loss:.3g} from a low of "
                f"{lowest_train:.3g}")
    if last.train_acc < UNDERFIT_TRAIN_ACC:
        return (f"underfitting: train accuracy {last.train_acc:.1%} after {_epochs(last.epoch)} "
                f"(val loss {last.val_loss:.3g})")
    rise_needed = max(best.val_loss * OVERFIT_RISE, OVERFIT_MIN_RISE)
    if (last.epoch > best.epoch and last.val_loss > best.val_loss + rise_needed
            and last.train_loss < best.train_loss):
        return (f"overfitting: val loss rose {best.val_loss:.3g} -> {last.val_loss:.3g} after "
                f"epoch {best.epoch} while train loss fell {best.train_loss:.3g} -> "
                f"{last.train_loss:.3g}")
    top = max(history, key=lambda m: m.val_acc)
    if top.val_acc < UNDERFIT_VAL_ACC:
        return (f"underfitting: best val accuracy {top.val_acc:.1%} after "
                f"{_epochs(last.epoch)} (train accuracy {last.train_acc:.1%})")
    return (f"converging: best val loss {best.val_loss:.3g} at epoch {best.epoch} of "
            f"{last.epoch}, val accuracy {best.val_acc:.1%}")


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"
