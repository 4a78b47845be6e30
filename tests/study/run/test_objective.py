"""The objective over its folds: holdout is one fold, cross-validation three; one suite for both.

Every test runs for both partitions. Where they differ, it is in what the pruner watches
(epochs of the one fold, or folds) and in the fold-named metrics and attributes.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

from data_pipeline import MnistFiles, Normalizer, SearchData, prepare_search_data
from study.errors import StudyError
from study.run.checkpoints import split_fold_states
from study.run.evaluation import evaluate_best
from study.run.objective import Objective
from study.search.early_stopping import EarlyStopping
from study.store.record import UNJUDGED_ATTR
from study.tracking import MlflowTracker, NullTracker, Tracker
from study.train.training import NonFiniteLossError
from tests.helpers import CLASSIC_SPACE

GOOD = {"optimizer": "adam", "scheduler": "none", "lr": 3e-3, "batch_size": "0032",
        "dropout": 0.0, "weight_decay": 1e-6}
# Far too small a learning rate to learn in an epoch: the median pruner must stop it.
HOPELESS = {**GOOD, "optimizer": "sgd", "lr": 1e-4, "sgd_momentum": 0.8, "batch_size": "1024"}
EPOCHS = 2
CPU = torch.device("cpu")


@pytest.fixture(params=[1, 3], ids=["holdout", "3-fold"])
def data(request: pytest.FixtureRequest, synthetic_files: MnistFiles) -> SearchData:
    cv_folds = None if request.param == 1 else request.param
    return prepare_search_data(synthetic_files, val_fraction=0.25, seed=0, cv_folds=cv_folds,
                               device=CPU)


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> MlflowTracker:
    """One store for the module: creating an MLflow database costs seconds."""
    tracker = MlflowTracker(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
    tracker.start_study(study_name="objective", params={}, tags={})
    return tracker


def _objective(data: SearchData, tracker: Tracker) -> Objective:
    return Objective(data=data, space=CLASSIC_SPACE, model_name="mlp",
                     model_kwargs={"hidden": 16}, max_epochs=EPOCHS, seed=0, tracker=tracker)


def _prefix(data: SearchData, fold: int) -> str:
    return "" if data.k == 1 else f"fold{fold}/"


def test_value_is_the_mean_of_the_folds_best_epochs(data: SearchData,
                                                    tracker: MlflowTracker) -> None:
    trial = optuna.trial.FixedTrial(GOOD)
    value = _objective(data, tracker)(trial)
    run_id = trial.user_attrs["mlflow_run_id"]
    client = tracker.client
    best = []
    for fold in range(1, data.k + 1):
        history = client.get_metric_history(run_id, f"{_prefix(data, fold)}val_loss")
        epochs = sorted(history, key=lambda m: m.step)[:EPOCHS]  # K folds: the fold's epochs
        assert [m.step for m in epochs] == [1, 2]  # every epoch, over step = epoch
        best.append(min(m.value for m in epochs))
    assert math.isclose(value, statistics.fmean(best), rel_tol=1e-9)  # mean of best epochs
    assert trial.user_attrs["best_val_loss"] == value
    assert trial.user_attrs["epochs_trained"] == data.k * EPOCHS  # every fold trained fully
    tags = client.get_run(run_id).data.tags
    assert tags["split_fingerprint"] == data.split_fingerprint  # every trial names its split
    if data.k == 1:
        assert trial.user_attrs["best_epoch"] in (1, 2)
        assert "cv_folds" not in tags
        return
    assert tags["cv_folds"] == str(data.k)
    assert trial.user_attrs["fold_val_losses"] == best  # the folds, in order
    seen = sorted(client.get_metric_history(run_id, "val_loss"), key=lambda m: m.step)
    assert [m.step for m in seen] == [1, 2, 3]  # the running mean Optuna saw, step = fold
    assert seen[-1].value == value
    folds = sorted(client.get_metric_history(run_id, "fold_val_loss"), key=lambda m: m.step)
    assert [m.value for m in folds] == best


def test_early_stopping_completes_the_trial_at_its_best_epoch(data: SearchData,
                                                              tracker: MlflowTracker) -> None:
    # min_delta 10: no epoch after the first counts as better, so each fold stops at epoch 2.
    objective = dataclasses.replace(_objective(data, tracker), max_epochs=4,
                                    early_stopping=EarlyStopping(patience=1, min_delta=10.0))
    study = optuna.create_study()
    study.enqueue_trial(GOOD)
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["epochs_trained"] == 2 * data.k
    run = tracker.client.get_run(trial.user_attrs["mlflow_run_id"])
    if data.k == 1:
        assert trial.user_attrs["stopped_epoch"] == 2
        assert run.data.tags["optuna.stopped_epoch"] == "2"  # filterable in the MLflow UI
        assert run.info.run_name.endswith("complete, stopped@2")
        assert list(trial.intermediate_values) == [1, 2]
    else:
        assert trial.user_attrs["fold_stopped_epochs"] == [2] * data.k
    # Its value and checkpoint are its best epoch's, as for a trial that ran to the end.
    assert trial.value == trial.user_attrs["best_val_loss"]
    restored = tracker.load_checkpoint(trial.user_attrs["mlflow_run_id"])
    assert restored  # the best epoch's weights were saved


def test_at_the_deadline_a_trial_ends_with_its_best_epoch_so_far(
        data: SearchData, tracker: MlflowTracker) -> None:
    # A deadline already passed: the first epoch (of each fold) is the last.
    objective = dataclasses.replace(_objective(data, tracker), max_epochs=4,
                                    deadline=time.perf_counter() - 1.0)
    study = optuna.create_study()
    study.enqueue_trial(GOOD)
    study.optimize(objective, n_trials=1, catch=())
    trial = study.trials[0]
    if data.k == 1:  # a holdout trial keeps what it learnt: COMPLETE, tested if best
        assert trial.state == TrialState.COMPLETE
        assert trial.user_attrs["epochs_trained"] == 1
        assert trial.user_attrs["stopped_epoch"] == 1
        assert trial.user_attrs["stopped_by"] == "time budget"
        run = tracker.client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.data.tags["optuna.stopped_by"] == "time budget"  # the MLflow run says so
        assert trial.value == trial.user_attrs["best_val_loss"]
    else:  # one fold of three is no cross-validated score
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs["epochs_trained"] == 1
        assert "the time budget ran out after fold 1 of 3" in trial.user_attrs["diagnosis"]


def test_early_stopping_waits_for_a_trial_that_improves(data: SearchData,
                                                        tracker: MlflowTracker) -> None:
    objective = dataclasses.replace(_objective(data, tracker), max_epochs=3,
                                    early_stopping=EarlyStopping(patience=2))
    study = optuna.create_study()
    study.enqueue_trial(GOOD)
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.user_attrs["epochs_trained"] == 3 * data.k  # 2 stale epochs never happened
    assert "stopped_epoch" not in trial.user_attrs and "fold_stopped_epochs" not in \
        trial.user_attrs


def test_the_pruner_watches_epochs_of_one_fold_or_folds_of_k(data: SearchData,
                                                              tracker: MlflowTracker) -> None:
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=2,
                                                                   n_warmup_steps=0))
    for params in (GOOD, GOOD, HOPELESS):
        study.enqueue_trial(params)
    study.optimize(_objective(data, tracker), n_trials=3)
    hopeless = study.trials[2]
    assert hopeless.state == TrialState.PRUNED
    assert list(hopeless.intermediate_values) == [1]  # after epoch 1, or after fold 1
    # One fold stops mid-training; K folds stop between folds, the pruned fold run in full.
    assert hopeless.user_attrs["epochs_trained"] == (1 if data.k == 1 else EPOCHS)
    assert list(study.trials[0].intermediate_values) == list(range(1, 1 + (
        EPOCHS if data.k == 1 else data.k)))  # one report per epoch, or per fold
    assert hopeless.user_attrs["diagnosis"].count("pruned at epoch") == 1
    run = tracker.client.get_run(hopeless.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"  # MLflow tells the same story as Optuna
    history = tracker.client.get_metric_history(run.info.run_id, f"{_prefix(data, 1)}val_loss")
    assert len([m for m in history if m.step <= EPOCHS]) >= 1
    if data.k > 1:
        assert hopeless.user_attrs["folds_done"] == 1  # the other folds never trained


class _PrunesAtStep(optuna.pruners.BasePruner):
    """Prunes every trial that reports STEP: what a pruner may ask at a trial's last step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.last_step == self.step


def test_a_trial_at_its_last_epoch_or_fold_completes_whatever_the_pruner_says(
        data: SearchData, tracker: MlflowTracker) -> None:
    # Pruning there saves nothing: every epoch (every fold) has already trained.
    last = EPOCHS if data.k == 1 else data.k
    study = optuna.create_study(pruner=_PrunesAtStep(last))
    study.enqueue_trial(GOOD)
    study.optimize(_objective(data, tracker), n_trials=1)
    assert study.trials[0].state == TrialState.COMPLETE
    assert list(study.trials[0].intermediate_values) == list(range(1, last + 1))
    # One step earlier the same pruner does prune: the rule is about the last step alone.
    study = optuna.create_study(pruner=_PrunesAtStep(last - 1))
    study.enqueue_trial(GOOD)
    study.optimize(_objective(data, tracker), n_trials=1)
    assert study.trials[0].state == TrialState.PRUNED


def test_an_unjudged_trial_is_never_pruned_and_enters_no_rung(data: SearchData,
                                                              tracker: MlflowTracker) -> None:
    # The warm start's fast start: a pruner that stops every trial at step 1 lets it train on.
    study = optuna.create_study(pruner=_PrunesAtStep(1))
    study.enqueue_trial(GOOD, user_attrs={UNJUDGED_ATTR: True})
    study.enqueue_trial(GOOD)
    study.optimize(_objective(data, tracker), n_trials=2)
    unjudged, judged = study.trials
    assert unjudged.state == TrialState.COMPLETE  # every epoch (fold) reported, none judged
    assert judged.state == TrialState.PRUNED  # the same pruner, the same parameters
    # and its values are no evidence in the pruned trial's reason: the pruner never saw them
    assert "no other trial there yet" in judged.user_attrs["diagnosis"]
    # Successive halving keeps a rung's values in the system attrs of the trials it judged.
    sha = optuna.create_study(pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1))
    sha.enqueue_trial(GOOD, user_attrs={UNJUDGED_ATTR: True})
    sha.optimize(_objective(data, tracker), n_trials=1)
    assert not any(key.startswith("completed_rung") for key in sha.trials[0].system_attrs)


def test_a_diverging_fold_fails_the_trial_with_its_reason(data: SearchData,
                                                          tracker: MlflowTracker) -> None:
    # A zero std turns every pixel into inf or NaN: the loss cannot stay finite.
    broken = dataclasses.replace(data, normalizers=(Normalizer(mean=0.0, std=0.0),) * data.k)
    study = optuna.create_study()
    study.enqueue_trial(GOOD)
    study.optimize(_objective(broken, tracker), n_trials=1, catch=(NonFiniteLossError,))
    trial = study.trials[0]
    assert trial.state == TrialState.FAIL  # recorded, not a made-up value
    assert "diverged" in trial.user_attrs["fail_reason"]  # with the reason
    assert "diverged" in trial.user_attrs["diagnosis"]
    run = tracker.client.get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["optuna.fail_reason"]
    if data.k > 1:
        assert trial.user_attrs["folds_done"] == 0  # it failed inside the first fold


def test_an_interrupt_leaves_no_running_mlflow_run(data: SearchData,
                                                   tracker: MlflowTracker) -> None:
    objective = _objective(data, tracker)

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


def test_same_seed_gives_the_same_trial_bit_for_bit(data: SearchData) -> None:
    values = [_objective(data, NullTracker())(optuna.trial.FixedTrial(GOOD)) for _ in range(2)]
    assert values[0] == values[1]  # CPU training is deterministic for a seed


def test_every_fold_is_diagnosed(data: SearchData) -> None:
    trial = optuna.trial.FixedTrial(GOOD)
    _objective(data, NullTracker())(trial)
    diagnosis = trial.user_attrs["diagnosis"]
    if data.k == 1:
        assert diagnosis.startswith("converging")  # GOOD learns the synthetic classes
    else:
        assert [f"fold {k}: converging" in diagnosis for k in (1, 2, 3)] == [True] * 3


def test_restored_models_reproduce_the_value_then_meet_the_test_set(
    data: SearchData, synthetic_files: MnistFiles, tracker: MlflowTracker
) -> None:
    study = optuna.create_study()
    study.enqueue_trial(GOOD)
    study.optimize(_objective(data, tracker), n_trials=1)
    result, restored = evaluate_best(study, files=synthetic_files, data=data, tracker=tracker,
                                     model_name="mlp", model_kwargs={"hidden": 16}, device=CPU)
    assert len(restored.models) == data.k  # a model per fold, restored once
    assert math.isclose(result.restored_val_loss, study.best_value, rel_tol=1e-6)  # restored
    assert result.test_acc > 0.5  # the models learned the synthetic classes


def test_the_search_never_reads_the_test_set(data: SearchData, synthetic_files: MnistFiles,
                                             tmp_path: Path) -> None:
    for stem, path in synthetic_files.paths.items():
        if stem.startswith("t10k"):
            path.unlink()  # gone: a search that opened them would fail
    train = synthetic_files.load("train")
    assert torch.equal(data.images, torch.from_numpy(train.images))  # its only images
    for i in range(data.k):
        fold = data.fold(i)
        assert len(fold.train) + len(fold.val) <= len(train.labels)
    value = _objective(data, NullTracker())(optuna.trial.FixedTrial(GOOD))
    assert math.isfinite(value)  # the whole trial ran without the test files


@pytest.mark.parametrize(("key", "k"), [("fold4.layer.weight", 3), ("fold1.layer.weight", 1)])
def test_a_checkpoint_of_another_fold_count_is_a_clear_error(key: str, k: int) -> None:
    with pytest.raises(StudyError, match="--cv-folds"):
        split_fold_states({key: torch.zeros(1)}, k)
