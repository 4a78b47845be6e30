"""The issue's acceptance run on the real MNIST: 20 trials x 8 epochs of the seed MLP on CPU."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from tests.helpers import cli_env


@pytest.mark.slow
def test_twenty_trial_mlp_study_reaches_97_8_percent_on_the_test_set(
    tmp_path: Path, real_mnist_dir: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "study", "run", "--n-trials", "20", "--max-epochs", "8",
         "--data-dir", str(real_mnist_dir), "--device", "cpu", "--no-progress"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    print(result.stdout)  # the summary, kept in the CI log
    match = re.search(r"TEST accuracy\s+([\d.]+)%", result.stdout)
    assert match is not None
    assert float(match.group(1)) >= 97.8  # the mission's bar for the seed MLP

    study = optuna.load_study(study_name="mnist", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert len(study.trials) == 20  # exactly the requested trials
    states = [t.state for t in study.trials]
    assert TrialState.PRUNED in states  # the default median pruner stopped some
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    for trial in study.trials:
        history = client.get_metric_history(trial.user_attrs["mlflow_run_id"], "val_loss")
        assert len(history) == trial.user_attrs["epochs_trained"]  # per-epoch history
