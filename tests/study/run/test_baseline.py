"""The seed recipe as a baseline: its own MLflow run beside the trials, once per study, shown
beside the best trial; no Optuna trial and no test data."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from study.search.warm_start import SEED_RECIPE
from tests.helpers import STUDY_TRAIN_IMAGES, run_cli, small_run_args
from tests.synthetic import write_synthetic_mnist

# Each test here runs a study in a process, a server or a benchmark: seconds to minutes.
pytestmark = pytest.mark.slow


def test_the_seed_recipe_runs_once_beside_the_study(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    args = small_run_args("--data-dir", str(data), "--n-trials", "2", "--baseline")
    first = run_cli(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    assert "seed recipe (baseline, SGD lr 0.05, StepLR 5/0.5, batch 64): val accuracy" \
        in first.stdout  # beside the best trial's scores

    study = optuna.load_study(study_name="mnist", storage=f"sqlite:///{tmp_path}/optuna.db")
    ran = [t for t in study.trials if t.state != TrialState.WAITING]  # the 3rd recipe waits
    assert len(ran) == 2  # no Optuna trial: not in the sampler's model or the budget
    stored = study.user_attrs["baseline"]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("mnist")
    assert experiment is not None
    baselines = client.search_runs([experiment.experiment_id],
                                   "tags.`mnist_study.role` = 'baseline'")
    assert len(baselines) == 1
    run = baselines[0]
    assert run.info.run_name == "baseline (seed recipe) complete"
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.05" and run.data.params["sgd_momentum"] == "0.0"
    assert run.data.params["weight_decay"] == "0.0" and run.data.params["step_size"] == "5"
    assert run.data.params == {k: str(v) for k, v in SEED_RECIPE.as_params().items()}
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert sorted(m.step for m in history) == [1, 2]  # every epoch, as a trial's
    assert min(m.value for m in history) == stored["val_loss"]
    assert stored["mlflow_run_id"] == run.info.run_id
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.metrics["baseline_val_acc"] == stored["val_acc"]
    assert "seed recipe (baseline" in parent.data.tags["mlflow.note.content"]

    # Resumed with a bigger budget: the stored baseline is shown, not trained again.
    more = run_cli(tmp_path, *[("3" if a == "2" and args[i - 1] == "--n-trials" else a)
                               for i, a in enumerate(args)])
    assert more.returncode == 0, more.stderr
    assert len(client.search_runs([experiment.experiment_id],
                                  "tags.`mnist_study.role` = 'baseline'")) == 1
    assert "seed recipe (baseline" in more.stdout
