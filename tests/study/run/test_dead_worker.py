"""A worker killed with SIGKILL: the next run says what it sees and leaves nothing RUNNING."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy.exc import OperationalError

from study.config import StudyConfig
from study.errors import ConfigError
from study.run.runner import _budget_notes
from study.store.liveness import RunningTrial, describe_running
from study.store.storage import open_storage
from tests.synthetic import write_synthetic_mnist


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("MLFLOW_TRACKING_URI", "MNIST_STUDY_DATA_DIR")}


def _study(storage: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name="mnist", storage=storage)
    except KeyError:
        return None


def _mid_trial(storage: str) -> bool:
    """One trial finished and another has reported an epoch; a locked store reads as no."""
    try:
        study = _study(storage)
    except (OperationalError, StorageInternalError):  # the frozen worker may hold the lock
        return False
    if study is None:
        return False
    trials = study.get_trials(deepcopy=False)
    return any(t.state == TrialState.COMPLETE for t in trials) and any(
        t.state == TrialState.RUNNING and t.intermediate_values for t in trials)


@pytest.mark.slow
def test_a_killed_worker_is_failed_retried_and_closed_by_the_next_run(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=2000)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    args = ["run", "--data-dir", str(data), "--allow-noncanonical-data", "--no-progress",
            "--max-epochs", "6", "--pruner", "none", "--hidden", "16",
            "--no-warm-start"]  # no queued recipe ahead of the retry
    worker = subprocess.Popen([sys.executable, "-m", "study", *args, "--n-trials", "50"],
                              cwd=tmp_path, env=_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:  # kill it mid-trial, after one trial finished
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert worker.poll() is None, worker.communicate()
            if _mid_trial(storage):
                # Freeze it and look again: the trial may have ended since the first look.
                worker.send_signal(signal.SIGSTOP)
                if _mid_trial(storage):
                    break
                worker.send_signal(signal.SIGCONT)
            time.sleep(0.2)
        else:
            pytest.fail("the worker never had a trial running after one finished")
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        worker.communicate()
    study = _study(storage)
    assert study is not None
    killed = [t for t in study.get_trials() if t.state == TrialState.RUNNING][0]
    finished = len([t for t in study.get_trials() if t.state.is_finished()])

    # At once, well within the heartbeat's grace period: the pid tells the worker is gone.
    rerun = subprocess.run([sys.executable, "-m", "study", *args, "--n-trials",
                            str(finished + 2)], cwd=tmp_path, env=_env(), text=True,
                           capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    said = f"trial {killed.number} was RUNNING, but its process (pid {worker.pid} on " \
           f"{socket.gethostname()}) is gone: it is failed and retried now"
    assert said in rerun.stderr  # the re-run says what it sees
    trials = optuna.load_study(study_name="mnist", storage=storage).get_trials()
    assert trials[killed.number].state == TrialState.FAIL
    assert "is gone" in trials[killed.number].user_attrs["fail_reason"]  # and why
    retried = [t for t in trials
               if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE  # the retry ran
    assert retried[0].params == killed.params
    assert "is gone" in retried[0].user_attrs["fail_reason"]  # and keeps the reason
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.FAIL}  # none RUNNING

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("mnist")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}  # no run of the dead one stays open
    dead_parent = client.get_run(killed.user_attrs["worker"])
    assert dead_parent.info.status == "FAILED"
    assert "is gone" in dead_parent.data.tags["mnist_study.fail_reason"]
    assert client.get_run(killed.user_attrs["mlflow_run_id"]).info.status == "FAILED"


def test_a_live_or_crashed_worker_elsewhere_is_described_with_its_heartbeat() -> None:
    young = RunningTrial(number=1, trial_id=2, heartbeat_age=12.0, started_age=40.0, worker="")
    assert describe_running(young, grace_seconds=120) == (
        "trial 1 is RUNNING with a heartbeat 12 s old: a crashed worker's or a live one's; if "
        "its worker is gone it is failed and retried after the 120 s grace period (in 108 s)")
    old = RunningTrial(number=1, trial_id=2, heartbeat_age=300.0, started_age=400.0, worker="")
    assert "its worker is gone; it is failed now" in describe_running(old, grace_seconds=120)
    journal = RunningTrial(number=3, trial_id=4, heartbeat_age=None, started_age=5.0, worker="")
    assert "no heartbeats on a journal file" in describe_running(journal, grace_seconds=None)


def test_the_summary_s_budget_arithmetic_names_what_is_missing() -> None:
    counts = Counter({"COMPLETE": 3, "RUNNING": 1})
    (note,) = _budget_notes(counts, n_trials=5)
    assert note.startswith("budget: 3 of --n-trials 5 finished; 1 RUNNING")
    assert _budget_notes(Counter({"COMPLETE": 5}), n_trials=5) == []  # nothing to explain


def test_the_grace_period_is_a_setting(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/o.db", grace_seconds=90)
    assert isinstance(storage, RDBStorage) and storage.grace_period == 90
    assert StudyConfig(heartbeat_grace=300).heartbeat_grace == 300
    with pytest.raises(ConfigError, match="heartbeat_grace must be at least 60"):
        StudyConfig(heartbeat_grace=10)  # shorter than two heartbeats: live workers look dead
