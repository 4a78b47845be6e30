"""Cross-validation: the objective over K folds, its pruning, MLflow metrics and final test."""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from data_pipeline import CvData, MnistFiles, Normalizer, prepare_audited_data
from study.config import resolve_config
from study.cv import CvObjective, evaluate_cv_on_test, split_fold_states
from study.errors import ConfigError, StudyError
from study.search_space import SearchSpace
from study.tracking import MlflowTracker, NullTracker, Tracker
from study.training import NonFiniteLossError

GOOD = {"optimizer": "adam", "scheduler": "none", "lr": 3e-3, "batch_size": "0032",
        "dropout": 0.0, "weight_decay": 1e-6}
# Far too small a learning rate to learn in two epochs: the median pruner must stop it.
HOPELESS = {**GOOD, "optimizer": "sgd", "lr": 1e-4, "sgd_momentum": 0.8, "batch_size": "1024"}
K, EPOCHS = 3, 2


@pytest.fixture
def cv_data(synthetic_files: MnistFiles) -> CvData:
    audited = prepare_audited_data(synthetic_files, val_fraction=0.1, seed=0, cv_folds=K,
                                   near_threshold=0.0, drop_duplicates=False,
                                   device=torch.device("cpu"))
    assert isinstance(audited.data, CvData)  # --cv-folds gives folds
    return audited.data


def _objective(data: CvData, tracker: Tracker) -> CvObjective:
    return CvObjective(data=data, space=SearchSpace(), model_name="mlp",
                       model_kwargs={"hidden": 16}, max_epochs=EPOCHS, seed=0, tracker=tracker)


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> MlflowTracker:
    """One store for the module: creating an MLflow database costs seconds."""
    tracker = MlflowTracker(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
    tracker.start_study(study_name="cv", params={}, tags={})
    return tracker


def test_value_is_the_mean_of_the_folds_with_per_fold_metrics(cv_data: CvData,
                                                              tracker: MlflowTracker) -> None:
    trial = optuna.trial.FixedTrial(GOOD)
    value = _objective(cv_data, tracker)(trial)
    losses = trial.user_attrs["fold_val_losses"]
    assert len(losses) == K and value == statistics.fmean(losses)  # mean over all K folds
    assert trial.user_attrs["epochs_trained"] == K * EPOCHS  # every fold trained fully
    run_id = trial.user_attrs["mlflow_run_id"]
    client = tracker.client
    for k in range(1, K + 1):
        history = client.get_metric_history(run_id, f"fold{k}/val_loss")
        assert [m.step for m in history] == [1, 2]  # fold k's epochs, over step = epoch
    folds = client.get_metric_history(run_id, "fold_val_loss")
    assert [m.value for m in sorted(folds, key=lambda m: m.step)] == losses  # step = fold
    seen = sorted(client.get_metric_history(run_id, "val_loss"), key=lambda m: m.step)
    assert [m.step for m in seen] == [1, 2, 3] and seen[-1].value == value  # running mean
    tags = client.get_run(run_id).data.tags
    assert tags["split_fingerprint"] == cv_data.split_fingerprint  # every trial names its split


def test_pruning_happens_at_fold_granularity(cv_data: CvData, tracker: MlflowTracker) -> None:
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=2,
                                                                   n_warmup_steps=1))
    for params in (GOOD, GOOD, HOPELESS):
        study.enqueue_trial(params)
    study.optimize(_objective(cv_data, tracker), n_trials=3)
    hopeless = study.trials[2]
    assert hopeless.state == TrialState.PRUNED  # stopped by the pruner...
    assert list(hopeless.intermediate_values) == [1]  # ...after its first fold, not an epoch
    assert hopeless.user_attrs["folds_done"] == 1  # the other folds never trained
    assert hopeless.user_attrs["epochs_trained"] == EPOCHS  # the fold ran its epochs in full
    assert list(study.trials[0].intermediate_values) == [1, 2, 3]  # one report per fold
    run = tracker.client.get_run(hopeless.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"  # MLflow tells the same story as Optuna


def test_diverging_fold_fails_the_trial_with_its_reason(cv_data: CvData) -> None:
    # A zero std turns every pixel into inf or NaN: the loss cannot stay finite.
    broken = dataclasses.replace(cv_data, normalizers=(Normalizer(mean=0.0, std=0.0),) * K)
    study = optuna.create_study()
    study.enqueue_trial(GOOD)
    study.optimize(_objective(broken, NullTracker()), n_trials=1, catch=(NonFiniteLossError,))
    trial = study.trials[0]
    assert trial.state == TrialState.FAIL  # recorded, not a made-up value
    assert "diverged" in trial.user_attrs["fail_reason"]  # with the reason
    assert trial.user_attrs["folds_done"] == 0  # it failed inside the first fold


def test_restored_fold_models_reproduce_the_value_then_meet_the_test_set(
    cv_data: CvData, synthetic_files: MnistFiles
) -> None:
    tracker = NullTracker()
    study = optuna.create_study()
    study.enqueue_trial(GOOD)
    study.optimize(_objective(cv_data, tracker), n_trials=1)
    result = evaluate_cv_on_test(study, files=synthetic_files, data=cv_data, tracker=tracker,
                                 model_name="mlp", model_kwargs={"hidden": 16},
                                 device=torch.device("cpu"))
    assert math.isclose(result.restored_val_loss, study.best_value, rel_tol=1e-9)  # restored
    assert result.test_acc > 0.5  # the K models learned the synthetic classes


def test_a_checkpoint_of_another_fold_count_is_a_clear_error() -> None:
    state = {"fold4.layer.weight": torch.zeros(1)}
    with pytest.raises(StudyError, match="another --cv-folds"):
        split_fold_states(state, 3)


def test_cv_settings_come_from_flags_or_toml_and_are_validated(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text("cv-folds = 4\nnear-duplicate-threshold = 0.1\ndrop-duplicates = true\n")
    config = resolve_config({}, config_path=toml, env={})
    assert (config.cv_folds, config.near_duplicate_threshold, config.drop_duplicates) == (
        4, 0.1, True)  # TOML keys are the flag names
    assert resolve_config({}, config_path=None, env={}).cv_folds is None  # holdout by default
    with pytest.raises(ConfigError, match="cv_folds must be >= 2, but got cv_folds=1"):
        resolve_config({"cv_folds": 1}, config_path=None, env={})
    with pytest.raises(ConfigError, match=r"near_duplicate_threshold must be in \[0, 1\)"):
        resolve_config({"near_duplicate_threshold": 1.0}, config_path=None, env={})
