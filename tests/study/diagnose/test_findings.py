"""A trial's findings reach its user attrs and MLflow tags; --prune-diagnosed acts on them."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState

from data_pipeline import MnistFiles, SearchData, prepare_search_data
from study.run.objective import Objective, TrialRun
from study.store.record import FINDINGS_ARTIFACT
from study.tracking import MlflowTracker
from study.train.training import NonFiniteLossError
from tests.helpers import CLASSIC_SPACE

GOOD = {"optimizer": "adam", "scheduler": "none", "lr": 3e-3, "batch_size": "0032",
        "dropout": 0.0, "weight_decay": 1e-6}
EPOCHS = 3


@pytest.fixture
def data(synthetic_files: MnistFiles) -> SearchData:
    return prepare_search_data(synthetic_files, val_fraction=0.25, seed=0,
                               device=torch.device("cpu"))


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> MlflowTracker:
    tracker = MlflowTracker(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")
    tracker.start_study(study_name="findings", params={}, tags={})
    return tracker


@dataclasses.dataclass(kw_only=True)
class DeadObjective(Objective):
    """Builds networks whose hidden ReLUs can never fire: a planted dying-ReLU trial."""

    def build(self, run: TrialRun, i: int) -> tuple[torch.nn.Module, torch.Generator]:
        model, generator = super().build(run, i)
        with torch.no_grad():
            dict(model.named_parameters())["net.1.bias"].fill_(-1e3)
        return model, generator


def _objective(data: SearchData, tracker: MlflowTracker, *, prune_diagnosed: bool = False,
               kind: type[Objective] = Objective) -> Objective:
    return kind(data=data, space=CLASSIC_SPACE, model_name="mlp", model_kwargs={"hidden": 16},
                max_epochs=EPOCHS, seed=0, tracker=tracker, prune_diagnosed=prune_diagnosed)


def _one_trial(objective: Objective, params: dict[str, object] = GOOD) -> FrozenTrial:
    study = optuna.create_study()
    study.enqueue_trial(params)
    study.optimize(objective, n_trials=1, catch=(NonFiniteLossError,))
    return study.trials[0]


def test_a_dead_network_is_diagnosed_in_both_uis(data: SearchData,
                                                 tracker: MlflowTracker) -> None:
    trial = _one_trial(_objective(data, tracker, kind=DeadObjective))
    assert trial.state == TrialState.COMPLETE  # off by default: diagnosed, not pruned
    assert "dying_relu" in trial.user_attrs["findings"]  # the kinds, filterable in both UIs
    # Short attrs only (a dashboard row stays one line): the lines and evidence are in MLflow.
    assert not [key for key in trial.user_attrs if key.startswith("finding.")]
    assert "findings_detail" not in trial.user_attrs
    run_id = trial.user_attrs["mlflow_run_id"]
    tags = tracker.client.get_run(run_id).data.tags
    assert "dying_relu" in tags["optuna.findings"]  # filterable in the MLflow UI
    assert tags["optuna.finding.dying_relu"].startswith("dying ReLUs: 100% of units")
    with tempfile.TemporaryDirectory() as tmp:
        detail = json.loads(Path(tracker.client.download_artifacts(
            run_id, FINDINGS_ARTIFACT, tmp)).read_text())
    [dead] = [d for d in detail if d["kind"] == "dying_relu"]
    assert dead["epoch"] == 1 and dead["evidence"]["dead_share"] == 1.0  # from epoch 1
    assert dead["summary"] == tags["optuna.finding.dying_relu"]


def test_prune_diagnosed_stops_a_dead_trial_at_once(data: SearchData,
                                                    tracker: MlflowTracker) -> None:
    trial = _one_trial(_objective(data, tracker, prune_diagnosed=True, kind=DeadObjective))
    assert trial.state == TrialState.PRUNED and trial.user_attrs["epochs_trained"] == 1
    assert "diagnosed at epoch 1: dying ReLUs" in trial.user_attrs["diagnosis"]


def test_prune_diagnosed_leaves_a_healthy_trial_alone(data: SearchData,
                                                      tracker: MlflowTracker) -> None:
    trial = _one_trial(_objective(data, tracker, prune_diagnosed=True))
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["epochs_trained"] == EPOCHS
    assert trial.user_attrs["findings"] == "none"
    assert isinstance(trial.user_attrs["final_gap"], float)  # recorded for the report


def test_a_non_finite_loss_is_a_divergence_finding(data: SearchData,
                                                   tracker: MlflowTracker) -> None:
    trial = _one_trial(_objective(data, tracker),
                       {**GOOD, "optimizer": "sgd", "lr": 1e4, "sgd_momentum": 0.9})
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["findings"].startswith("divergence")
    tags = tracker.client.get_run(trial.user_attrs["mlflow_run_id"]).data.tags
    assert "non-finite loss in epoch" in tags["optuna.finding.divergence"]
