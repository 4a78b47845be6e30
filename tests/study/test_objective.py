from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from data_pipeline import SearchData
from study.objective import Objective
from study.search_space import SearchSpace
from study.tracking import MlflowTracker, NullTracker, Tracker
from study.training import NonFiniteLossError

GOOD = {"optimizer": "adam", "scheduler": "none", "lr": 3e-3, "batch_size": "0032",
        "dropout": 0.0, "weight_decay": 1e-6}
# Too small a learning rate to learn anything in a few epochs: the median pruner must stop it.
HOPELESS = {**GOOD, "optimizer": "sgd", "lr": 1e-4, "sgd_momentum": 0.8, "batch_size": "1024"}
DIVERGING = {**GOOD, "optimizer": "sgd", "lr": 3e-2, "sgd_momentum": 0.8}


def _objective(data: SearchData, tracker: Tracker, max_epochs: int = 4) -> Objective:
    space = SearchSpace(lr=(1e-4, 1e9))  # wide enough for the planted divergent trial
    return Objective(data=data, space=space, model_name="mlp", model_kwargs={"hidden": 32},
                     max_epochs=max_epochs, seed=0, tracker=tracker)


def test_fixed_trial_returns_the_best_validation_loss(search_data: SearchData) -> None:
    trial = optuna.trial.FixedTrial(GOOD)
    value = _objective(search_data, NullTracker())(trial)
    assert math.isfinite(value) and value < 2.3  # learned something beyond chance (ln 10)
    assert trial.user_attrs["best_val_loss"] == value  # value is the best epoch's loss
    assert trial.user_attrs["epochs_trained"] == 4


def test_pruning_through_a_real_study(search_data: SearchData, tmp_path: Path) -> None:
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/mlflow.db")
    tracker.start_study(study_name="p", params={}, tags={})
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=3,
                                                                   n_warmup_steps=1))
    for params in [GOOD] * 3 + [HOPELESS]:
        study.enqueue_trial(params)
    study.optimize(_objective(search_data, tracker), n_trials=4)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] * 3 + [TrialState.PRUNED]  # hopeless one stopped
    pruned = study.trials[3]
    assert pruned.user_attrs["epochs_trained"] < 4  # it stopped before the last epoch
    run = tracker.client.get_run(pruned.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"  # MLflow tells the same story as Optuna
    history = tracker.client.get_metric_history(run.info.run_id, "val_loss")
    assert len(history) == pruned.user_attrs["epochs_trained"]  # one point per epoch run


def test_diverging_trial_fails_with_its_reason_and_the_study_goes_on(
    search_data: SearchData, tmp_path: Path
) -> None:
    search_data.train.x[0, 0, 0, 0] = float("nan")  # a poisoned pixel makes the loss NaN
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/mlflow.db")
    tracker.start_study(study_name="d", params={}, tags={})
    study = optuna.create_study()
    study.enqueue_trial(DIVERGING)
    study.optimize(_objective(search_data, tracker), n_trials=1, catch=(NonFiniteLossError,))
    trial = study.trials[0]
    assert trial.state == TrialState.FAIL  # recorded, not a fake 0.0 or NaN value
    assert "diverged" in trial.user_attrs["fail_reason"]
    run = MlflowClient(tracker.tracking_uri).get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert "diverged" in run.data.tags["optuna.fail_reason"]


def test_interrupt_leaves_no_running_mlflow_run(search_data: SearchData, tmp_path: Path) -> None:
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/mlflow.db")
    tracker.start_study(study_name="i", params={}, tags={})
    objective = _objective(search_data, tracker)

    def interrupted(trial: optuna.Trial) -> float:
        trial.report = _raise_keyboard_interrupt  # type: ignore[method-assign]
        return objective(trial)

    study = optuna.create_study()
    study.enqueue_trial(GOOD)  # trains sanely until the planted interrupt at the first report
    with pytest.raises(KeyboardInterrupt):
        study.optimize(interrupted, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.FAIL  # Optuna records the interrupted trial
    run = tracker.client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"  # and MLflow does not show it RUNNING forever
    assert "interrupted" in run.data.tags["optuna.fail_reason"]


def _raise_keyboard_interrupt(*args: Any, **kwargs: Any) -> None:
    raise KeyboardInterrupt


def test_same_seed_gives_the_same_trial_bit_for_bit(search_data: SearchData) -> None:
    values = [_objective(search_data, NullTracker())(optuna.trial.FixedTrial(GOOD))
              for _ in range(2)]
    assert values[0] == values[1]  # CPU training is deterministic for a seed
