"""A finished study's rerun changes nothing: no test data read, no run, no model version."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.helpers import FinishedStudy, run_cli

# Each test here runs a study in a process, a server or a benchmark: seconds to minutes.
pytestmark = pytest.mark.slow


def test_rerunning_a_finished_study_shows_its_result_and_touches_nothing(
    finished_study: FinishedStudy, tmp_path: Path,
) -> None:
    root = finished_study.copy(tmp_path / "study")
    env = FinishedStudy.env(root)
    client = MlflowClient(f"sqlite:///{root}/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("mnist")
    assert experiment is not None
    runs_before = len(client.search_runs([experiment.experiment_id]))
    versions_before = len(client.search_model_versions("name='mnist-study-mnist'"))
    assert versions_before == 1

    # The test files go away: a rerun that opened one would fail.
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for test_file in (root / "data").glob("t10k-*"):
        test_file.rename(hidden / test_file.name)
    again = run_cli(root, *FinishedStudy.args(), env=env)
    assert again.returncode == 0, again.stderr
    assert "nothing ran now and no test data was read" in again.stdout
    printed = re.compile(r"TEST accuracy\s+\S+%.*")
    first_line = printed.search(finished_study.result.stdout)
    again_line = printed.search(again.stdout)
    assert first_line and again_line and first_line.group(0) == again_line.group(0)  # stored
    assert len(client.search_runs([experiment.experiment_id])) == runs_before  # no new run
    assert len(client.search_model_versions("name='mnist-study-mnist'")) == versions_before

    # A bigger budget is work to do: the study goes on, and is evaluated (test set) again.
    for test_file in hidden.iterdir():
        test_file.rename(root / "data" / test_file.name)
    more = run_cli(root, *FinishedStudy.args("--n-trials", str(FinishedStudy.N_TRIALS + 1)),
                   env=env)
    assert more.returncode == 0, more.stderr
    assert "nothing ran now" not in more.stdout
    assert len(client.search_model_versions("name='mnist-study-mnist'")) == 2
