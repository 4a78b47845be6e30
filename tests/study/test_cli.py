"""The CLI as a user runs it: a real subprocess, real SQLite stores, synthetic IDX data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.synthetic import write_synthetic_mnist

FLAGS = ["--study-name", "--storage", "--n-trials", "--timeout", "--max-epochs", "--model",
         "--sampler", "--pruner", "--device", "--data-dir", "--tracking-uri", "--seed",
         "--val-fraction", "--no-progress", "--config"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MNIST_STUDY_DATA_DIR")}
    return {**env, **extra}


def _cli(cwd: Path, *args: str, env: dict[str, str] | None = None,
         timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)


def _run_args(*extra: str) -> list[str]:
    return ["run", "--max-epochs", "2", "--allow-noncanonical-data", "--no-progress",
            "--val-fraction", "0.25", "--hidden", "16", *extra]


def _finished(storage: str, name: str = "mnist") -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=storage)
    return [t for t in study.trials if t.state.is_finished()]


def test_help_documents_every_flag_with_its_default() -> None:
    out = _cli(Path.cwd(), "run", "--help").stdout
    for flag in FLAGS:
        assert flag in out  # the contract other issues build on
    assert "default sqlite:///optuna.db" in out and "default median" in out


def test_smoke_run_with_defaults_then_resume(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data")
    env = _env(MNIST_STUDY_DATA_DIR=str(data))  # the data dir comes from the environment
    first = _cli(tmp_path, *_run_args("--n-trials", "3"), env=env)
    assert first.returncode == 0, first.stderr
    assert "TEST accuracy" in first.stdout and "best trial #" in first.stdout
    storage = "sqlite:///optuna.db"  # default storage in the working directory
    assert (tmp_path / "optuna.db").exists() and (tmp_path / "mlflow" / "mlflow.db").exists()
    trials = _finished(f"sqlite:///{tmp_path}/optuna.db")
    assert len(trials) == 3  # exactly the requested trials

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("mnist")
    assert experiment is not None  # the study's experiment exists, named after the study
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("mnist_study.role") == "study"]
    children = [r for r in runs if r.data.tags.get("mnist_study.role") == "trial"]
    assert len(parents) == 1 and len(children) == 3  # one parent, one child per trial
    assert "test_accuracy" in parents[0].data.metrics
    for trial in trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])  # Optuna -> MLflow join
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert len(history) == trial.user_attrs["epochs_trained"]  # one point per epoch run

    again = _cli(tmp_path, *_run_args("--n-trials", "3"), env=env)
    assert again.returncode == 0, again.stderr
    assert len(_finished(f"sqlite:///{tmp_path}/optuna.db")) == 3  # resumed, nothing re-run
    more = _cli(tmp_path, *_run_args("--n-trials", "5", "--storage", storage), env=env)
    assert more.returncode == 0, more.stderr
    assert len(_finished(f"sqlite:///{tmp_path}/optuna.db")) == 5  # budget is the study total


def test_toml_config_is_used_and_flags_override_it(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data")
    config = tmp_path / "study.toml"
    config.write_text(f'study-name = "from-toml"\nn_trials = 2\ndata_dir = "{data}"\n'
                      f'storage = "sqlite:///{tmp_path}/o.db"\n'
                      f'tracking_uri = "sqlite:///{tmp_path}/m.db"\n'
                      '[search_space]\noptimizers = ["adam"]\nschedulers = ["none"]\n')
    result = _cli(tmp_path, *_run_args("--config", str(config), "--n-trials", "1"))
    assert result.returncode == 0, result.stderr
    trials = _finished(f"sqlite:///{tmp_path}/o.db", name="from-toml")
    assert len(trials) == 1  # the flag beat the file's n_trials = 2
    assert trials[0].params["optimizer"] == "adam"  # the file's search space was used


@pytest.mark.parametrize(("args", "message"), [
    (["--val-fraction", "2"], "val_fraction must be in (0, 1), but got val_fraction=2.0"),
    (["--storage", "optuna.db"], "is not a URL"),
    (["--tracking-uri", "file:///tmp/x"], "MLflow 3 no longer accepts"),
    (["--device", "cuda"], "sees no CUDA device"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    if "cuda" in args:
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA, so --device cuda is valid here")
    result = _cli(tmp_path, *_run_args("--data-dir", str(tmp_path), *args))
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert error_lines == [error_lines[0]] and message in error_lines[0]  # one clear line


def test_missing_data_says_how_to_point_at_local_files(tmp_path: Path) -> None:
    result = _cli(tmp_path, *_run_args("--data-dir", str(tmp_path / "empty"), "--no-download"))
    assert result.returncode == 2
    assert "--data-dir DIR or set MNIST_STUDY_DATA_DIR" in result.stderr


def test_resume_with_another_seed_is_refused_and_loses_nothing(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data")
    base = _run_args("--data-dir", str(data), "--n-trials", "2")
    assert _cli(tmp_path, *base).returncode == 0
    refused = _cli(tmp_path, *base, "--seed", "7", "--n-trials", "4")
    assert refused.returncode == 2
    assert "seed: stored 0, now 7" in refused.stderr
    assert len(_finished(f"sqlite:///{tmp_path}/optuna.db")) == 2  # the study is intact


def test_resume_with_another_val_fraction_is_refused_and_names_the_split(
    tmp_path: Path
) -> None:
    data = write_synthetic_mnist(tmp_path / "data")
    base = [*_run_args("--data-dir", str(data), "--n-trials", "1"), "--max-epochs", "1"]
    assert _cli(tmp_path, *base).returncode == 0
    refused = _cli(tmp_path, *base, "--val-fraction", "0.2", "--n-trials", "2")
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if "error" in line]
    assert len(errors) == 1  # one clear line...
    assert "val_fraction: stored 0.25, now 0.2" in errors[0]  # ...naming the setting
    assert "split_fingerprint: stored" in errors[0]  # and that the split itself differs
    assert "new --study-name" in errors[0]  # and what to do
    assert len(_finished(f"sqlite:///{tmp_path}/optuna.db")) == 1  # the study is intact


@pytest.mark.parametrize(("sig", "code", "said"), [
    (signal.SIGINT, 130, "interrupted"),  # Ctrl-C
    (signal.SIGTERM, 143, "stopped by SIGTERM"),  # kill, a batch scheduler, docker stop
])
def test_a_stop_signal_records_what_finished_and_the_same_command_resumes(
    tmp_path: Path, sig: signal.Signals, code: int, said: str,
) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=2000)
    args = ["run", "--data-dir", str(data), "--allow-noncanonical-data", "--no-progress",
            "--n-trials", "40", "--max-epochs", "6", "--pruner", "none"]
    proc = subprocess.Popen([sys.executable, "-m", "study", *args], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            if len(_finished(storage)) >= 2:
                break
        except KeyError:  # the study does not exist yet
            continue
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert f"{said}; finished trials are saved, rerun the same command to resume" in stderr
    done = _finished(storage)
    assert len(done) >= 2  # finished trials survived the interrupt
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("mnist")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}  # every run ended truthfully
    parent = [r for r in runs if r.data.tags.get("mnist_study.role") == "study"][0]
    assert parent.info.status == "KILLED"
    # The same command resumes (a smaller total keeps the test short): one more trial, then done.
    total = str(len(_finished(storage)) + 1)
    resumed = _cli(tmp_path, *[total if a == "40" else a for a in args])
    assert resumed.returncode == 0, resumed.stderr
    assert len(_finished(storage)) == int(total)  # the earlier trials were kept, not redone
    drawn = [tuple(sorted(t.params.items())) for t in _finished(storage)]
    assert len(set(drawn)) == len(drawn)  # the resumed run drew new parameters, no replay
