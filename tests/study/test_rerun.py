"""A finished study's rerun changes nothing: no test data read, no run, no model version."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from tests.helpers import STUDY_TRAIN_IMAGES
from tests.synthetic import write_synthetic_mnist


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MNIST_STUDY_DATA_DIR")}
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_rerunning_a_finished_study_shows_its_result_and_touches_nothing(
    tmp_path: Path,
) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    args = ["run", "--data-dir", str(data), "--allow-noncanonical-data", "--no-progress",
            "--n-trials", "2", "--max-epochs", "2", "--hidden", "16", "--val-fraction", "0.25"]
    first = _cli(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("mnist")
    assert experiment is not None
    runs_before = len(client.search_runs([experiment.experiment_id]))
    versions_before = len(client.search_model_versions("name='mnist-study-mnist'"))
    assert versions_before == 1

    # The test files go away: a rerun that opened one would fail.
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for test_file in data.glob("t10k-*"):
        test_file.rename(hidden / test_file.name)
    again = _cli(tmp_path, *args)
    assert again.returncode == 0, again.stderr
    assert "nothing ran now and no test data was read" in again.stdout
    printed = re.compile(r"TEST accuracy\s+\S+%.*")
    first_line, again_line = printed.search(first.stdout), printed.search(again.stdout)
    assert first_line and again_line and first_line.group(0) == again_line.group(0)  # stored
    assert len(client.search_runs([experiment.experiment_id])) == runs_before  # no new run
    assert len(client.search_model_versions("name='mnist-study-mnist'")) == versions_before

    # A bigger budget is work to do: the study goes on, and is evaluated (test set) again.
    for test_file in hidden.iterdir():
        test_file.rename(data / test_file.name)
    more = _cli(tmp_path, *[("3" if a == "2" and args[i - 1] == "--n-trials" else a)
                            for i, a in enumerate(args)])
    assert more.returncode == 0, more.stderr
    assert "nothing ran now" not in more.stdout
    assert len(client.search_model_versions("name='mnist-study-mnist'")) == 2
