"""Trials searched in cohorts are recorded exactly as solo trials are: states, values,
pruning, divergence, interrupts, MLflow runs and checkpoints."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import optuna
import pytest
import torch
from optuna.trial import TrialState

from data_pipeline import MnistFiles, SearchData, prepare_search_data
from study.run.cohort_search import _trials, search_in_cohorts
from study.run.evaluation import evaluate_best
from study.run.objective import Objective, TrialRun
from study.search.early_stopping import EarlyStopping
from study.search.strategy import FIRST_DECISION, make_pruner
from study.store.optuna_private import heartbeat_ages
from study.tracking import MlflowTracker, Tracker
from study.train.training import NonFiniteLossError
from tests.helpers import CLASSIC_SPACE

GOOD = {"optimizer": "adam", "scheduler": "none", "lr": 3e-3, "batch_size": "0032",
        "dropout": 0.0, "weight_decay": 1e-6}
GOOD_SGD = {**GOOD, "optimizer": "sgd", "lr": 0.05, "sgd_momentum": 0.9}
HOPELESS = {**GOOD, "optimizer": "sgd", "lr": 1e-4, "sgd_momentum": 0.8, "batch_size": "1024"}
HOPELESS_AT_32 = {**HOPELESS, "batch_size": GOOD["batch_size"]}  # in GOOD's cohort
DIVERGING = {**GOOD, "optimizer": "sgd", "lr": 1e8, "sgd_momentum": 0.9}
EPOCHS = 2
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> MlflowTracker:
    tracker = MlflowTracker(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
    tracker.start_study(study_name="cohorts", params={}, tags={})
    return tracker


def _objective(data: SearchData, tracker: Tracker, *, max_epochs: int = EPOCHS) -> Objective:
    space = dataclasses.replace(CLASSIC_SPACE, lr=(1e-4, 1e9))  # room for the divergent trial
    return Objective(data=data, space=space, model_name="mlp", model_kwargs={"hidden": 16},
                     max_epochs=max_epochs, seed=0, tracker=tracker)


def _study(*enqueued: dict[str, Any], pruner: optuna.pruners.BasePruner | None = None,
           ) -> optuna.Study:
    study = optuna.create_study(pruner=pruner or optuna.pruners.NopPruner(),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for params in enqueued:
        study.enqueue_trial(params)
    return study


def test_a_cohort_records_each_trial_as_a_solo_run_would(search_data: SearchData,
                                                         tracker: MlflowTracker) -> None:
    cohort, solo = _study(GOOD, GOOD_SGD, GOOD), _study(GOOD, GOOD_SGD, GOOD)
    done: list[int] = []
    search_in_cohorts(cohort, _objective(search_data, tracker), cohort_size=3, n_trials=3,
                      timeout=None, trial_done=lambda study, trial: done.append(trial.number))
    solo.optimize(_objective(search_data, tracker), n_trials=3)
    assert sorted(done) == [0, 1, 2]  # the console heard of every trial
    for together, alone in zip(cohort.trials, solo.trials, strict=True):
        assert together.state == alone.state == TrialState.COMPLETE
        assert together.params == alone.params
        assert together.value == pytest.approx(alone.value, rel=1e-5)  # the same training
        assert list(together.intermediate_values) == [1, 2]  # reported every epoch
        assert set(together.user_attrs) == set(alone.user_attrs)  # the same attributes
        run = tracker.client.get_run(together.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert len(tracker.client.get_metric_history(run.info.run_id, "val_loss")) == EPOCHS


def test_the_best_cohort_trial_restores_from_its_checkpoint(search_data: SearchData,
                                                            synthetic_files: MnistFiles,
                                                            tracker: MlflowTracker) -> None:
    study = _study(GOOD, GOOD_SGD)
    search_in_cohorts(study, _objective(search_data, tracker), cohort_size=2, n_trials=2,
                      timeout=None)
    result, _ = evaluate_best(study, files=synthetic_files, data=search_data, tracker=tracker,
                              model_name="mlp", model_kwargs={"hidden": 16}, device=CPU)
    assert math.isclose(result.restored_val_loss, study.best_value, rel_tol=1e-5)


def test_pruned_and_diverged_members_leave_and_the_others_finish(
    search_data: SearchData, tracker: MlflowTracker,
) -> None:
    # Chance-level loss (ln 10 = 2.3) after an epoch is pruned; the good settings stay below.
    pruner = optuna.pruners.ThresholdPruner(upper=2.0)
    study = _study(GOOD, DIVERGING, HOPELESS, HOPELESS, pruner=pruner)
    search_in_cohorts(study, _objective(search_data, tracker), cohort_size=2, n_trials=4,
                      timeout=None)
    good, diverged, hopeless, mate = study.trials
    assert diverged.state == TrialState.FAIL and "diverged" in diverged.user_attrs["fail_reason"]
    assert good.state == TrialState.COMPLETE  # its cohort-mate failed alone
    assert good.user_attrs["epochs_trained"] == EPOCHS
    assert hopeless.state == mate.state == TrialState.PRUNED  # both leave after epoch 1
    assert hopeless.user_attrs["epochs_trained"] == 1
    for trial, status in ((good, "FINISHED"), (hopeless, "KILLED"), (diverged, "FAILED")):
        assert tracker.client.get_run(trial.user_attrs["mlflow_run_id"]).info.status == status


def test_the_first_cohort_prunes_its_members_against_each_other(
    search_data: SearchData, tracker: MlflowTracker,
) -> None:
    # No trial has finished when a cohort's first members reach the first decision epoch:
    # Optuna's median rule would let all six train to the end. Peers count
    # (study.search.peer_pruner).
    good = [{**GOOD, "lr": lr} for lr in (1e-3, 2e-3, 3e-3, 5e-3)]
    slow = HOPELESS_AT_32
    # It reports first: judged only after all its peers have reported the epoch too.
    # An epoch past the decision: a trial at its last epoch completes whatever the pruner says.
    epochs = FIRST_DECISION + 1
    study = _study(slow, *good, GOOD_SGD, pruner=make_pruner("median", max_epochs=epochs))
    search_in_cohorts(study, _objective(search_data, tracker, max_epochs=epochs),
                      cohort_size=6, n_trials=6, timeout=None)
    hopeless = study.trials[0]
    assert hopeless.state == TrialState.PRUNED
    assert hopeless.user_attrs["epochs_trained"] == FIRST_DECISION
    assert any(t.state == TrialState.COMPLETE for t in study.trials)


@pytest.fixture(params=[None, 2], ids=["holdout", "2-fold"])
def folds(request: pytest.FixtureRequest, synthetic_files: MnistFiles) -> SearchData:
    """The synthetic data as a holdout and as two folds: cohorts must treat both as solo."""
    return prepare_search_data(synthetic_files, val_fraction=0.25, seed=0,
                               cv_folds=request.param, device=CPU)


def test_early_stopping_ends_a_member_as_it_ends_a_solo_trial(
    folds: SearchData, tracker: MlflowTracker,
) -> None:
    data, cv_folds = folds, (None if folds.k == 1 else folds.k)
    objective = dataclasses.replace(_objective(data, tracker), max_epochs=4,
                                    early_stopping=EarlyStopping(patience=1, min_delta=0.02))
    trials = (GOOD, GOOD_SGD, HOPELESS_AT_32)
    cohort, solo = _study(*trials), _study(*trials)
    search_in_cohorts(cohort, objective, cohort_size=3, n_trials=3, timeout=None)
    solo.optimize(objective, n_trials=3)
    attr = "stopped_epoch" if cv_folds is None else "fold_stopped_epochs"
    stopped = [t.user_attrs.get(attr) for t in solo.trials]
    assert any(stopped) and not all(stopped)  # the slow learner stopped, a good one did not
    for together, alone in zip(cohort.trials, solo.trials, strict=True):
        assert together.state == alone.state == TrialState.COMPLETE
        assert together.user_attrs.get(attr) == alone.user_attrs.get(attr)
        assert together.user_attrs["epochs_trained"] == alone.user_attrs["epochs_trained"]
        assert together.value == pytest.approx(alone.value, rel=1e-5)


def test_the_deadline_ends_a_cohort_as_it_ends_a_solo_trial(
    folds: SearchData, tracker: MlflowTracker,
) -> None:
    # One plan everywhere: at the time budget's end a cohort's members stop as solo trials do.
    data, cv_folds = folds, (None if folds.k == 1 else folds.k)
    objective = dataclasses.replace(_objective(data, tracker), max_epochs=4,
                                    deadline=time.perf_counter() - 1.0)
    cohort, solo = _study(GOOD, GOOD_SGD), _study(GOOD, GOOD_SGD)
    search_in_cohorts(cohort, objective, cohort_size=2, n_trials=2, timeout=None)
    solo.optimize(objective, n_trials=2)
    for together, alone in zip(cohort.trials, solo.trials, strict=True):
        assert together.state == alone.state == (
            TrialState.COMPLETE if cv_folds is None else TrialState.PRUNED)
        assert together.user_attrs["epochs_trained"] == alone.user_attrs["epochs_trained"] == 1
        assert together.user_attrs.get("stopped_by") == alone.user_attrs.get("stopped_by")


def test_an_interrupt_fails_every_trial_of_the_round(search_data: SearchData,
                                                     tracker: MlflowTracker,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = Objective.record_epoch

    def interrupted(self: Objective, run: TrialRun, *args: Any, **kwargs: Any) -> None:
        calls.append(run.trial.number)
        if len(calls) == 3:  # the second member's first epoch: mid-cohort
            raise KeyboardInterrupt
        real(self, run, *args, **kwargs)

    monkeypatch.setattr(Objective, "record_epoch", interrupted)
    study = _study(GOOD, GOOD_SGD, HOPELESS)
    with pytest.raises(KeyboardInterrupt):
        search_in_cohorts(study, _objective(search_data, tracker), cohort_size=3, n_trials=3,
                          timeout=None)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3  # none stays RUNNING
    for trial in study.trials:
        assert "interrupted" in trial.user_attrs["fail_reason"]
        run = tracker.client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FAILED"  # nor does its MLflow run


def test_the_budget_counts_every_trial(search_data: SearchData, tracker: MlflowTracker) -> None:
    study = _study()
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))  # an earlier run's
    search_in_cohorts(study, _objective(search_data, tracker), cohort_size=4, n_trials=6,
                      timeout=None)
    assert len(study.trials) == 6  # the budget is the study's total, as MaxTrialsCallback's


def test_trials_another_worker_starts_mid_ask_leave_no_room(
    search_data: SearchData, tracker: MlflowTracker, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another worker on the same storage starts two trials just after this one starts its
    # first: the budget of 3 is taken, so this worker asks no second or third member.
    study = _study()
    objective = _objective(search_data, tracker)
    start = objective.start

    def first_then_another_worker(trial: optuna.Trial) -> TrialRun:
        run = start(trial)
        if trial.number == 0:
            other = optuna.load_study(study_name=study.study_name, storage=study._storage)
            other.ask(), other.ask()
        return run

    monkeypatch.setattr(objective, "start", first_then_another_worker)
    search_in_cohorts(study, objective, cohort_size=3, n_trials=3, timeout=None)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING,
                                               TrialState.RUNNING]  # theirs still run


def test_a_storage_that_beats_gets_no_warning_that_ask_cannot_beat(
        search_data: SearchData, tracker: MlflowTracker, tmp_path: Path) -> None:
    # The cohort driver beats for every trial it asks; Optuna's warning would say otherwise.
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/o.db", heartbeat_interval=60)
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        search_in_cohorts(study, _objective(search_data, tracker), cohort_size=2, n_trials=2,
                          timeout=None)
    assert [str(w.message) for w in seen if "Heartbeat" in str(w.message)] == []
    assert len(study.trials) == 2



def test_a_trial_beats_from_the_moment_it_is_asked(
        search_data: SearchData, tracker: MlflowTracker, tmp_path: Path) -> None:
    # A worker killed within the heartbeat interval of an ask must leave a trial that goes
    # stale: its first heartbeat is written at once, not at the next periodic beat (60 s here).
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/o.db", heartbeat_interval=60)
    study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    beats: dict[int, dict[int, float]] = {}

    def look(number: int, metrics: object) -> None:
        trial_ids = [t._trial_id for t in study.get_trials(deepcopy=False,
                                                           states=(TrialState.RUNNING,))]
        beats[number] = heartbeat_ages(study, trial_ids)

    objective = dataclasses.replace(_objective(search_data, tracker, max_epochs=1), on_epoch=look)
    search_in_cohorts(study, objective, cohort_size=1, n_trials=3, timeout=None)
    assert sorted(beats) == [0, 1, 2]  # each trial's epoch, seen while it ran
    assert all(len(ages) == 1 for ages in beats.values())  # its heartbeat already there

def test_the_console_names_one_trial_or_several() -> None:
    runs = [cast(TrialRun, SimpleNamespace(trial=SimpleNamespace(number=n))) for n in (8, 9, 10)]
    assert _trials(runs[:1]) == "trial 8"
    assert _trials(runs) == "trials 8, 9 and 10"


def test_cross_validated_trials_train_their_folds_in_cohorts(
    synthetic_files: MnistFiles, tracker: MlflowTracker,
) -> None:
    folds = prepare_search_data(synthetic_files, val_fraction=0.25, seed=0, cv_folds=3,
                                device=CPU)
    cohort, solo = _study(GOOD, GOOD_SGD), _study(GOOD, GOOD_SGD)
    search_in_cohorts(cohort, _objective(folds, tracker), cohort_size=2, n_trials=2,
                      timeout=None)
    solo.optimize(_objective(folds, tracker), n_trials=2)
    for together, alone in zip(cohort.trials, solo.trials, strict=True):
        assert together.state == TrialState.COMPLETE
        assert list(together.intermediate_values) == [1, 2, 3]  # one report per fold
        assert together.user_attrs["fold_val_losses"] == pytest.approx(
            alone.user_attrs["fold_val_losses"], rel=1e-5)


def test_one_trial_in_k_draws_the_batch_size_the_next_take(search_data: SearchData,
                                                            tracker: MlflowTracker) -> None:
    # Random sampling over six batch sizes: trials 0, 3, 6 draw, the two after each take its
    # size (three independent draws agree with chance 6**-2, so the sizes do change too).
    study = _study(pruner=optuna.pruners.NopPruner())
    sampler = study.sampler
    space = dataclasses.replace(CLASSIC_SPACE, lr=(1e-3, 1e-2))
    objective = Objective(data=search_data, space=space, model_name="mlp",
                          model_kwargs={"hidden": 16}, max_epochs=1, seed=0, tracker=tracker)
    search_in_cohorts(study, objective, cohort_size=3, n_trials=9, timeout=None)
    sizes = [t.params["batch_size"] for t in study.trials]
    assert sizes[0:3] == [sizes[0]] * 3 and sizes[3:6] == [sizes[3]] * 3
    assert sizes[6:9] == [sizes[6]] * 3
    assert len(set(sizes)) > 1  # a new draw every K trials, not one size for the study
    assert len({t.params["lr"] for t in study.trials}) == 9  # the rest is sampled freely
    assert study.sampler is sampler  # the study's own sampler is back


def test_the_sampler_s_start_up_trials_draw_their_own_batch_sizes(
    search_data: SearchData, tracker: MlflowTracker,
) -> None:
    # Fixed from trial 0, the first cohort would show the sampler one batch size only.
    study = _study(pruner=optuna.pruners.NopPruner())
    space = dataclasses.replace(CLASSIC_SPACE, lr=(1e-3, 1e-2))
    objective = Objective(data=search_data, space=space, model_name="mlp",
                          model_kwargs={"hidden": 16}, max_epochs=1, seed=0, tracker=tracker)
    search_in_cohorts(study, objective, cohort_size=3, n_trials=9, timeout=None, free_draws=3)
    sizes = [t.params["batch_size"] for t in study.trials]
    assert len(set(sizes[0:3])) > 1  # start-up: each its own (three agree with chance 1/36)
    assert sizes[3:6] == [sizes[3]] * 3 and sizes[6:9] == [sizes[6]] * 3  # then one in K


def test_an_enqueued_batch_size_is_kept_in_a_round(search_data: SearchData,
                                                   tracker: MlflowTracker) -> None:
    study = _study(GOOD, HOPELESS)  # batch sizes 32 and 1024, given by hand
    search_in_cohorts(study, _objective(search_data, tracker), cohort_size=2, n_trials=2,
                      timeout=None)
    assert [t.params["batch_size"] for t in study.trials] == ["0032", "1024"]


def test_a_new_trial_takes_the_place_of_one_that_left(search_data: SearchData,
                                                      tracker: MlflowTracker) -> None:
    # DIVERGING fails in epoch 1; GOOD_SGD (asked then) joins GOOD's cohort for its epoch 2.
    cohort, solo = _study(GOOD, DIVERGING, GOOD_SGD), _study(GOOD, DIVERGING, GOOD_SGD)
    search_in_cohorts(cohort, _objective(search_data, tracker), cohort_size=2, n_trials=3,
                      timeout=None)
    solo.optimize(_objective(search_data, tracker), n_trials=3, catch=(NonFiniteLossError,))
    good, diverged, joined = cohort.trials
    assert [t.state for t in cohort.trials] == [TrialState.COMPLETE, TrialState.FAIL,
                                                TrialState.COMPLETE]
    assert good.datetime_complete is not None and joined.datetime_start is not None
    assert joined.datetime_start < good.datetime_complete  # it joined, it did not wait
    assert joined.user_attrs["epochs_trained"] == EPOCHS  # all its own epochs
    assert list(joined.intermediate_values) == [1, 2]  # numbered from its own first
    for together, alone in ((good, solo.trials[0]), (joined, solo.trials[2])):
        assert together.value == pytest.approx(alone.value, rel=1e-5)  # as if trained alone
