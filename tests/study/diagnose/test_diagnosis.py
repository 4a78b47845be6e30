from __future__ import annotations

import dataclasses

import optuna
import pytest
from optuna.trial import TrialState

from data_pipeline import SearchData
from study.diagnose.diagnosis import diagnose, pruner_evidence
from study.run.objective import Objective
from study.tracking import NullTracker
from study.train.engine_types import EpochMetrics
from tests.helpers import CLASSIC_SPACE


def _curve(*points: tuple[float, float, float]) -> list[EpochMetrics]:
    """Epochs 1..N from (train_loss, train_acc, val_loss) triples."""
    return [EpochMetrics(epoch=i, train_loss=tl, train_acc=ta, val_loss=vl, val_acc=0.97,
                         lr=0.01, seconds=1.0)
            for i, (tl, ta, vl) in enumerate(points, start=1)]


FALLING = _curve((0.5, 0.90, 0.30), (0.2, 0.95, 0.15), (0.1, 0.97, 0.10))


def test_falling_losses_read_converging() -> None:
    verdict = diagnose(FALLING, state=TrialState.COMPLETE)
    assert verdict.startswith("converging: best val loss 0.1 at epoch 3 of 3")  # the evidence


def test_val_loss_rising_while_train_falls_reads_overfitting() -> None:
    history = _curve((0.3, 0.92, 0.10), (0.1, 0.97, 0.08), (0.05, 0.99, 0.09), (0.02, 1.0, 0.12))
    verdict = diagnose(history, state=TrialState.COMPLETE)
    assert verdict.startswith("overfitting: val loss rose 0.08 -> 0.12 after epoch 2")


def test_a_rise_within_noise_is_not_overfitting() -> None:
    history = _curve((0.3, 0.92, 0.100), (0.1, 0.97, 0.080), (0.05, 0.99, 0.0808))  # +1%
    assert diagnose(history, state=TrialState.COMPLETE).startswith("converging")


def test_low_training_accuracy_reads_underfitting() -> None:
    history = _curve((2.2, 0.30, 2.1), (1.9, 0.45, 1.8))
    verdict = diagnose(history, state=TrialState.COMPLETE)
    assert verdict == "underfitting: train accuracy 45.0% after 2 epochs (val loss 1.8)"


def test_falling_curves_under_97_percent_validation_accuracy_read_underfitting() -> None:
    # Curves of a converging shape, but the network never learned MNIST: 91.5% at best.
    history = [dataclasses.replace(m, val_acc=acc)
               for m, acc in zip(FALLING, (0.85, 0.90, 0.915), strict=True)]
    verdict = diagnose(history, state=TrialState.COMPLETE)
    assert verdict == ("underfitting: best val accuracy 91.5% after 3 epochs "
                       "(train accuracy 97.0%)")
    # At 97% the same curves converge: the bar is the validation accuracy alone.
    assert diagnose(FALLING, state=TrialState.COMPLETE).startswith("converging")


def test_training_loss_blowing_up_reads_diverged() -> None:
    history = _curve((0.4, 0.92, 0.3), (0.3, 0.95, 0.25), (1.5, 0.91, 1.6))
    assert diagnose(history, state=TrialState.COMPLETE).startswith(
        "diverged: train loss rose to 1.5 from a low of 0.3")


def test_tiny_losses_doubling_are_not_divergence() -> None:
    history = _curve((0.004, 1.0, 0.01), (0.001, 1.0, 0.008), (0.003, 1.0, 0.008))
    assert diagnose(history, state=TrialState.COMPLETE).startswith("converging")


def test_a_pruned_trial_says_what_the_pruner_saw() -> None:
    history = _curve((2.2, 0.30, 2.1), (1.9, 0.40, 1.8))
    evidence = pruner_evidence(1.8, [0.2, 0.3, 0.25, 2.0], step=2)
    assert evidence == "val loss 1.8 ranked 4 of 5 at epoch 2 (best 0.2, median 0.3)"
    assert diagnose(history, state=TrialState.PRUNED, reason=evidence) == \
        f"pruned at epoch 2: {evidence}"  # not a verdict on a two-epoch curve
    assert "no other trial there yet" in pruner_evidence(1.0, [], step=1)


def test_pruned_trial_names_its_epoch_and_trend() -> None:
    history = _curve((2.2, 0.30, 2.1))
    assert diagnose(history, state=TrialState.PRUNED) == (
        "pruned at epoch 1: underfitting: train accuracy 30.0% after 1 epoch (val loss 2.1)")


@pytest.mark.parametrize(("history", "diverged", "reason", "expected"), [
    (FALLING[:2], True, "train loss became nan in epoch 3: training diverged",
     "diverged: non-finite loss in epoch 3"),  # the NaN epoch never reached the history
    ([], True, "x", "diverged: non-finite loss in epoch 1"),
    (FALLING[:1], False, "interrupted: KeyboardInterrupt",
     "failed after 1 epoch: interrupted: KeyboardInterrupt"),
])
def test_failed_trials_say_why(history: list[EpochMetrics], diverged: bool, reason: str,
                               expected: str) -> None:
    assert diagnose(history, state=TrialState.FAIL, reason=reason, diverged=diverged) == expected


def test_objective_records_the_diagnosis_as_a_user_attr(search_data: SearchData) -> None:
    trial = optuna.trial.FixedTrial({"optimizer": "adam", "scheduler": "none", "lr": 3e-3,
                                     "batch_size": 32, "dropout": 0.0, "weight_decay": 1e-6})
    Objective(data=search_data, space=CLASSIC_SPACE, model_name="mlp",
              model_kwargs={"hidden": 32}, max_epochs=3, seed=0, tracker=NullTracker())(trial)
    # The synthetic classes are easy: a good setting fits them and keeps improving.
    assert trial.user_attrs["diagnosis"].startswith("converging: ")
