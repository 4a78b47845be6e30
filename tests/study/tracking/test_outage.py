"""An MLflow outage mid-study: bounded waits, training goes on, nothing is lost.

A real `mlflow server` is killed while a real `mnist-study run` trains, then started again;
`mnist-study sync-mlflow` back-fills what the run spooled, and the same command then
evaluates the study's best trial.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from study.store.record import SPOOLED_RUNS_ATTR
from study.tracking import CHECKPOINT_PATH, apply_op
from study.tracking.spool import SPOOL_KEY_TAG, read_ops, replay
from tests.helpers import cli_env, free_port, run_cli
from tests.mlflow_server import MlflowServer
from tests.synthetic import write_synthetic_mnist

# Each test here runs a study in a process, a server or a benchmark: seconds to minutes.
pytestmark = pytest.mark.slow


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(cwd, *args, timeout=300)  # a study against a stopped server takes a while


def _complete(storage: str) -> int:
    try:
        study = optuna.load_study(study_name="mnist", storage=storage)
    except KeyError:
        return 0
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def test_a_tracking_server_lost_mid_study_is_spooled_and_back_filled(
    tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    server = MlflowServer(tmp_path, free_port())
    request.addfinalizer(server.kill)  # the restarted server too: no server outlives the test
    server.start()
    data = write_synthetic_mnist(tmp_path / "data", n_train=2000)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    command = ["run", "--data-dir", str(data), "--allow-noncanonical-data", "--no-progress",
           "--storage", storage, "--tracking-uri", server.url, "--n-trials", "4",
           "--max-epochs", "3", "--pruner", "none", "--hidden", "16",
           "--tracking-timeout", "6", "--mlflow-spool", str(tmp_path / "spool")]
    proc = subprocess.Popen([sys.executable, "-m", "study", *command], cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while _complete(storage) < 1 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        server.kill()  # gone for good, mid-study
        killed_at = time.monotonic()
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    after_kill = time.monotonic() - killed_at
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr  # no chain of tracebacks...
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"mnist-study: error: MLflow tracking server {server.url} stopped "
                           f"answering")  # ...one line naming the tracking URI
    assert "mnist-study sync-mlflow" in last  # and how to back-fill
    study = optuna.load_study(study_name="mnist", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4  # training went on
    assert after_kill < 120  # bounded: not MLflow's minutes of retries per call
    spooled = [op for path in (tmp_path / "spool" / "mnist").glob("*.jsonl")
               for op in read_ops(path)]
    assert any(op["op"] == "create_run" for op in spooled)  # later trials live in the spool

    server.start()  # the server is back
    synced = _cli(tmp_path, "sync-mlflow", "--storage", storage, "--tracking-uri", server.url,
                  "--mlflow-spool", str(tmp_path / "spool"))
    assert synced.returncode == 0, synced.stderr
    assert "back-filled" in synced.stdout
    again = _cli(tmp_path, "sync-mlflow", "--storage", storage, "--tracking-uri", server.url,
                 "--mlflow-spool", str(tmp_path / "spool"))
    assert "nothing to back-fill" in again.stdout  # idempotent

    client = MlflowClient(server.url)
    study = optuna.load_study(study_name="mnist", storage=storage)
    mapping = study.user_attrs[SPOOLED_RUNS_ATTR]
    for trial in study.get_trials(deepcopy=False):
        run_id = trial.user_attrs["mlflow_run_id"]
        run = client.get_run(mapping.get(run_id, run_id))  # every trial has its run
        assert run.info.status == "FINISHED"  # with its state
        assert run.data.tags["optuna.state"] == "COMPLETE"
        assert run.data.params["lr"]  # its params
        assert (SPOOL_KEY_TAG in run.data.tags) == (run_id in mapping)  # tagged if spooled
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert len(history) == trial.user_attrs["epochs_trained"]  # every epoch's metrics
        with tempfile.TemporaryDirectory() as tmp:  # and its checkpoint
            local = client.download_artifacts(run.info.run_id, CHECKPOINT_PATH, tmp)
            assert Path(local).is_file()
    experiment = client.get_experiment_by_name("mnist")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}  # the cut-off parent run ended too
    assert len(runs) == 1 + 4  # one parent, one run per trial, nothing twice

    resumed = _cli(tmp_path, *command)  # the same command now evaluates the best trial
    assert resumed.returncode == 0, resumed.stderr
    assert "TEST accuracy" in resumed.stdout


def test_a_replay_cut_short_resumes_without_making_a_run_twice(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("e")
    spool = tmp_path / "spool"
    spool.mkdir()
    ops = [{"op": "create_run", "key": "spool-a", "experiment_id": experiment,
            "run_name": "trial-0000", "tags": {"optuna.trial_number": "0"}},
           {"op": "log_batch", "run": "spool-a", "metrics": [["val_loss", 0.5, 1, 1]],
            "params": {"lr": "0.1"}, "tags": {}},
           {"op": "terminate", "run": "spool-a", "status": "FINISHED"}]
    (spool / "p.jsonl").write_text("".join(json.dumps(op) + "\n" for op in ops))
    calls = []

    def fail_after_create(op: dict[str, Any], runs: Mapping[str, str]) -> str | None:
        calls.append(op["op"])
        if op["op"] == "log_batch":
            raise OSError("server gone again")
        return apply_op(client, op, runs, spool_dir=spool)

    with pytest.raises(OSError):
        replay(spool, fail_after_create)  # the run is made, then the replay is cut short
    result = replay(spool, lambda op, runs: apply_op(client, op, runs, spool_dir=spool))
    assert result.operations == 2  # it went on from where it stopped
    runs = client.search_runs([experiment])
    assert len(runs) == 1  # the run was not made twice
    assert runs[0].info.status == "FINISHED" and runs[0].data.params == {"lr": "0.1"}
