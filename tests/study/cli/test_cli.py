"""The CLI as a user runs it: real SQLite stores, synthetic IDX data, a real subprocess where
the process matters (exit codes, signals, what an interpreter imports) and main() in this
process elsewhere."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from tests.helpers import (
    STUDY_TRAIN_IMAGES,
    FinishedStudy,
    cli_env,
    run_cli,
    run_main,
    small_run_args,
)
from tests.synthetic import write_synthetic_mnist

FLAGS = ["--study-name", "--storage", "--n-trials", "--timeout", "--max-epochs", "--model",
         "--sampler", "--pruner", "--device", "--data-dir", "--tracking-uri", "--seed",
         "--val-fraction", "--no-progress", "--config", "--early-stopping-patience",
         "--early-stopping-min-delta", "--baseline"]


def _finished(storage: str, name: str = "mnist") -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=storage)
    return [t for t in study.trials if t.state.is_finished()]


def test_help_documents_every_flag_with_its_default() -> None:
    out = run_cli(Path.cwd(), "run", "--help").stdout
    for flag in FLAGS:
        assert flag in out  # the contract other issues build on
    assert "default sqlite:///optuna.db" in out and "default sha" in out
    # The [search_space] table's keys too, with their defaults: what the study searches.
    assert 'norms = ["batch", "none"]' in out and "lr_sgd = [0.01, 0.3]" in out


@pytest.mark.slow
def test_smoke_run_with_defaults_then_resume(finished_study: FinishedStudy,
                                             tmp_path: Path) -> None:
    first = finished_study.result  # `run` with the default stores, data dir from the env
    assert "TEST accuracy" in first.stdout and "best trial #" in first.stdout
    root = finished_study.copy(tmp_path / "study")
    env = FinishedStudy.env(root)
    storage = "sqlite:///optuna.db"  # default storage in the working directory
    assert (root / "optuna.db").exists() and (root / "mlflow" / "mlflow.db").exists()
    trials = _finished(f"sqlite:///{root}/optuna.db")
    assert len(trials) == FinishedStudy.N_TRIALS  # exactly the requested trials

    client = MlflowClient(f"sqlite:///{root}/mlflow/mlflow.db")
    experiment = client.get_experiment_by_name("mnist")
    assert experiment is not None  # the study's experiment exists, named after the study
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("mnist_study.role") == "study"]
    children = [r for r in runs if r.data.tags.get("mnist_study.role") == "trial"]
    assert len(parents) == 1 and len(children) == 3  # one parent, one child per trial
    assert "test_accuracy" in parents[0].data.metrics
    # The parent's own names never mix with the trials' in MLflow's columns and sort.
    trial_keys = {*children[0].data.metrics, *children[0].data.params}
    assert "study.best_val_loss" in parents[0].data.metrics
    assert not trial_keys & {*parents[0].data.metrics, *parents[0].data.params}
    assert "config.dropout" not in parents[0].data.params  # (the search space is a table)
    assert parents[0].data.params["config.max_epochs"] == "2"
    for trial in trials:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])  # Optuna -> MLflow join
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert len(history) == trial.user_attrs["epochs_trained"]  # one point per epoch run

    again = run_cli(root, *FinishedStudy.args(), env=env)
    assert again.returncode == 0, again.stderr
    assert len(_finished(f"sqlite:///{root}/optuna.db")) == 3  # resumed, nothing re-run
    more = run_cli(root, *FinishedStudy.args("--n-trials", "5", "--storage", storage), env=env)
    assert more.returncode == 0, more.stderr
    assert len(_finished(f"sqlite:///{root}/optuna.db")) == 5  # budget is the study total


@pytest.mark.slow
def test_toml_config_is_used_and_flags_override_it(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    config = tmp_path / "study.toml"
    config.write_text(f'study-name = "from-toml"\nn_trials = 2\ndata_dir = "{data}"\n'
                      f'storage = "sqlite:///{tmp_path}/o.db"\n'
                      f'tracking_uri = "sqlite:///{tmp_path}/m.db"\n'
                      '[search_space]\noptimizers = ["adam"]\nschedulers = ["none"]\n')
    result = run_cli(tmp_path, *small_run_args("--config", str(config), "--n-trials", "1"))
    assert result.returncode == 0, result.stderr
    trials = _finished(f"sqlite:///{tmp_path}/o.db", name="from-toml")
    assert len(trials) == 1  # the flag beat the file's n_trials = 2
    assert trials[0].params["optimizer"] == "adam"  # the file's search space was used


@pytest.mark.parametrize(("args", "message"), [
    (["--val-fraction", "2"], "val_fraction must be in (0, 1), but got val_fraction=2.0"),
    (["--storage", "optuna.db"], "is not a URL"),
    (["--tracking-uri", "file:///tmp/x"], "MLflow 3 no longer accepts"),
    (["--device", "cuda"], "sees no CUDA device"),
    (["--device", "cuda:1"], "--device cuda:1 was requested but torch"),
    (["--device", "gpu"], "device must be one of ['auto', 'cpu', 'cuda'] or cuda:N"),
    (["--storage", "journal:/tmp"], "/tmp is a directory; name a file in it"),
    # Read-only even for root (tests may run as root, whom chmod does not stop): sysfs takes no
    # new files, and /proc no new folders.
    (["--storage", "journal:/sys/optuna.log"], "cannot write in /sys"),
    (["--tracking-uri", "sqlite:////sys/mlflow.db"], "cannot write in /sys"),
    (["--storage", "sqlite:////proc/x/y.db"], "cannot write in /proc"),
    (["--tracking-uri", "bogus://x"], "'bogus://x' has a scheme MLflow has no store for"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    if "cuda" in args or "cuda:1" in args:
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA, so --device cuda is valid here")
    result = run_cli(tmp_path, *small_run_args("--data-dir", str(tmp_path), *args))
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert error_lines == [error_lines[0]] and message in error_lines[0]  # one clear line
    assert "Traceback" not in result.stderr  # and nothing else
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, no folder made


def test_a_sqlite_path_under_a_file_is_one_line_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    for flag, name in (("--storage", "optuna.db"), ("--tracking-uri", "mlflow.db")):
        url = f"sqlite:///{tmp_path}/notes.txt/{name}"
        result = run_cli(tmp_path, *small_run_args("--data-dir", str(tmp_path), flag, url))
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines()[-1] == (  # one line, the last, naming the culprit
            f"mnist-study: error: {flag} {url}: {tmp_path}/notes.txt is a file, not a "
            f"directory; choose another path")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing created


@pytest.mark.parametrize("args", [
    ["--data-dir", "no-such-dir", "--no-download"],  # a misspelled --data-dir
    ["--storage", "sqlite:///typo/optuna.db", "--tracking-uri", "sqlite:///typo2/mlflow.db",
     "--data-dir", "no-such-dir", "--no-download"],
    ["--tracking-uri", "bogus://x"],  # good data, bad tracking URI: no optuna.db either
], ids=["data-dir", "store-folders", "tracking-uri"])
def test_a_refused_run_leaves_nothing_behind(tmp_path: Path, args: list[str]) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = run_main(workdir, *small_run_args("--data-dir", str(data), *args))
    assert result.returncode == 2, result.stderr
    # Everything was checked before a store was made: no empty optuna.db, mlflow/mlflow.db,
    # lock file, or folder named after a typo.
    assert sorted(p.name for p in workdir.iterdir()) == []


def test_batch_sizes_larger_than_the_train_split_are_refused(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data")  # 400 images: 300 train at 3:1
    config = tmp_path / "study.toml"
    config.write_text("[search_space]\nbatch_sizes = [64, 512, 1024]\n")
    result = run_main(tmp_path, *small_run_args("--data-dir", str(data), "--n-trials", "1",
                                                "--config", str(config)))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (  # the split's size, the culprits and the fix
        "mnist-study: error: search_space batch_sizes [512, 1024] are larger than the train "
        "split, which has 300 images; set [search_space] batch_sizes in the --config file to "
        "sizes up to 300")
    assert not (tmp_path / "optuna.db").exists()  # refused before a store was made


@pytest.mark.slow
def test_resuming_with_another_tracking_store_names_the_study_s_own(
    finished_study: FinishedStudy, tmp_path: Path,
) -> None:
    root = finished_study.copy(tmp_path / "study")  # made with the default mlflow/mlflow.db
    env = FinishedStudy.env(root)
    other = f"sqlite:///{root}/elsewhere/mlflow.db"
    refused = run_main(root, *FinishedStudy.args("--tracking-uri", other), env=env)
    assert refused.returncode == 2, refused.stderr
    own = f"sqlite:///{root}/mlflow/mlflow.db"
    line = refused.stderr.splitlines()[-1]
    assert f"keeps its MLflow runs and checkpoints in {own}" in line  # where they are
    assert f"pass --tracking-uri {own}" in line  # and how to point at them
    assert not (root / "elsewhere").exists()  # no empty store made on the way
    # The same store named by a relative path is the same store: the resume runs.
    resumed = run_cli(root, *FinishedStudy.args("--tracking-uri", "sqlite:///mlflow/mlflow.db",
                                                "--n-trials", "4"), env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert len(_finished(f"sqlite:///{root}/optuna.db")) == 4


# Parsing the command line: every --help, every kind of argparse error, and a valid line of each
# command (parsed, not run). Each runs through main() or the parser in one fresh interpreter.
_HELPS = [["--help"], *([command, "--help"] for command in
                        ("run", "audit", "dashboard", "ui", "sync-mlflow"))]
_ERRORS = [
    ["run", "--bogus"],  # an unknown flag
    ["run", "--sampler", "bogus"],  # a bad choice, from the sampler registry
    ["run", "--model", "resnet"],  # and from the model registry
    ["dashboard", "--port", "x"],  # a bad type
    ["ui", "--bogus"],
    ["bogus"],  # an unknown command
]
_PARSED = [
    ["dashboard", "--storage", "sqlite:///x.db", "--host", "0.0.0.0", "--port", "9000"],
    ["ui", "--tracking-uri", "sqlite:///m.db", "--port", "5001"],
    ["run", "--model", "cnn", "--sampler", "gp", "--pruner", "sha", "--cv-folds", "3"],
    ["audit", "--seed", "3", "--format", "json"],
]
# What parsing must never load: seconds of imports each, for a line the user mistyped.
_HEAVY = ("torch", "torchvision", "sklearn", "optuna", "optuna_dashboard", "mlflow", "numpy",
          "scipy", "pandas", "sqlalchemy", "PIL")


def test_help_and_argparse_errors_are_answered_without_the_heavy_libraries() -> None:
    # They used to take 9-15 s: torch, optuna and mlflow were imported before parsing.
    code = f"""
import json, sys
before = set(sys.modules)
from study.cli import build_parser, main
codes = []
for argv in {_HELPS + _ERRORS!r}:
    try:
        main(argv)
    except SystemExit as exc:
        codes.append(exc.code)
parsed = [vars(build_parser().parse_args(argv)) for argv in {_PARSED!r}]
new = {{m.split(".")[0] for m in set(sys.modules) - before}}
print(json.dumps({{"codes": codes, "parsed": parsed, "heavy": [m for m in {_HEAVY!r}
                  if m in sys.modules], "third_party": sorted(new - set(sys.stdlib_module_names)
                  - {{"study", "models", "data_pipeline"}})}}, default=str))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["codes"] == [0] * len(_HELPS) + [2] * len(_ERRORS)  # answered, as argparse does
    for said in ("unrecognized arguments: --bogus", "invalid choice: 'bogus' (choose from 'tpe'",
                 "invalid choice: 'resnet' (choose from 'mlp', 'cnn')",
                 "argument --port: invalid int value: 'x'", "argument COMMAND: invalid choice"):
        assert said in done.stderr  # each error was the parser's own line
    dashboard, ui, run, audit = result["parsed"]
    assert (dashboard["storage"], dashboard["host"], dashboard["port"]) == (
        "sqlite:///x.db", "0.0.0.0", 9000)  # server flags parsed, typed
    assert (ui["tracking_uri"], ui["host"], ui["port"]) == ("sqlite:///m.db", "127.0.0.1", 5001)
    assert (run["model"], run["sampler"], run["pruner"], run["cv_folds"]) == ("cnn", "gp", "sha", 3)
    assert (audit["seed"], audit["format"]) == (3, "json")
    assert result["heavy"] == []  # none of the heavy libraries
    assert result["third_party"] == []  # nor any other: parsing needs only the standard library


@pytest.mark.parametrize("args", [
    ["--storage", "optuna.db"], ["--storage", "journal:/tmp"],
    ["--tracking-uri", "file:///tmp/x"], ["--tracking-uri", "sqlite:////proc/x/mlflow.db"],
    ["--storage", "postgresql://u@127.0.0.1:1/db"], ["--tracking-uri", "http://127.0.0.1:1"],
    ["--data-dir", "/nonexistent/mnist", "--no-download"],
], ids=["storage-not-a-url", "journal-dir", "file-store", "tracking-unwritable",
        "postgres-unreachable", "tracking-server-unreachable", "data-missing"])
def test_a_bad_store_url_is_refused_before_torch_optuna_or_mlflow_load(args: list[str]) -> None:
    # The runner's imports take seconds: these errors used to wait for them (about 6 s).
    code = f"""
import sys
from study.cli import main
code = main(["run", *{args!r}])
print(code, [m for m in ("torch", "optuna", "mlflow", "sklearn") if m in sys.modules])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=cli_env())
    assert done.stdout.split("\n")[0] == "2 []", done.stderr  # refused, nothing heavy loaded
    assert "mnist-study: error:" in done.stderr


def test_missing_data_says_how_to_point_at_local_files(tmp_path: Path) -> None:
    result = run_main(tmp_path, *small_run_args("--data-dir", str(tmp_path / "empty"),
                                               "--no-download"))
    assert result.returncode == 2
    assert "--data-dir DIR or set MNIST_STUDY_DATA_DIR" in result.stderr


@pytest.mark.slow
def test_resume_with_another_seed_is_refused_and_loses_nothing(
    finished_study: FinishedStudy, tmp_path: Path,
) -> None:
    root = finished_study.copy(tmp_path / "study")  # made with seed 0
    refused = run_main(root, *FinishedStudy.args("--seed", "7", "--n-trials", "4"),
                      env=FinishedStudy.env(root))
    assert refused.returncode == 2
    assert "seed: stored 0, now 7" in refused.stderr
    assert len(_finished(f"sqlite:///{root}/optuna.db")) == 3  # the study is intact


@pytest.mark.slow
def test_resume_with_another_val_fraction_is_refused_and_names_the_split(
    finished_study: FinishedStudy, tmp_path: Path,
) -> None:
    root = finished_study.copy(tmp_path / "study")  # made with --val-fraction 0.25
    refused = run_main(root, *FinishedStudy.args("--val-fraction", "0.2", "--n-trials", "4"),
                      env=FinishedStudy.env(root))
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if "error" in line]
    assert len(errors) == 1  # one clear line...
    assert "val_fraction: stored 0.25, now 0.2" in errors[0]  # ...naming the setting
    assert "split_fingerprint: stored" in errors[0]  # and that the split itself differs
    assert "new --study-name" in errors[0]  # and what to do
    assert len(_finished(f"sqlite:///{root}/optuna.db")) == 3  # the study is intact


@pytest.mark.slow
def test_early_stopping_is_part_of_the_study_s_identity(finished_study: FinishedStudy,
                                                        tmp_path: Path) -> None:
    root = finished_study.copy(tmp_path / "study")  # made without early stopping
    refused = run_main(root, *FinishedStudy.args("--early-stopping-patience", "2",
                                                "--n-trials", "4"),
                      env=FinishedStudy.env(root))
    assert refused.returncode == 2
    assert "early_stopping: stored [8, 0.0], now [2, 0.0]" in refused.stderr


@pytest.mark.parametrize(("sig", "code", "said"), [
    (signal.SIGINT, 130, "interrupted"),  # Ctrl-C
    (signal.SIGTERM, 143, "stopped by SIGTERM"),  # kill, a batch scheduler, docker stop
])
@pytest.mark.slow
def test_a_stop_signal_records_what_finished_and_the_same_command_resumes(
    tmp_path: Path, sig: signal.Signals, code: int, said: str,
) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=2000)
    args = ["run", "--data-dir", str(data), "--allow-noncanonical-data", "--no-progress",
            "--n-trials", "40", "--max-epochs", "6", "--pruner", "none"]
    proc = subprocess.Popen([sys.executable, "-m", "study", *args], cwd=tmp_path, env=cli_env(),
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
    # One line says it: no traceback, no Optuna report of the interrupted trial as a failure.
    assert "Traceback" not in stderr and "failed with" not in stderr, stderr
    assert len([line for line in stderr.splitlines() if "mnist-study:" in line]) == 1
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
    resumed = run_cli(tmp_path, *[total if a == "40" else a for a in args])
    assert resumed.returncode == 0, resumed.stderr
    assert len(_finished(storage)) == int(total)  # the earlier trials were kept, not redone
    drawn = [tuple(sorted(t.params.items())) for t in _finished(storage)]
    assert len(set(drawn)) == len(drawn)  # the resumed run drew new parameters, no replay


def test_a_cohort_too_big_for_memory_is_refused_in_one_line(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    workdir = tmp_path / "work"
    workdir.mkdir()
    # A billion members cannot fit in any machine's memory, whatever this one has free.
    result = run_main(workdir, *small_run_args("--data-dir", str(data), "--n-trials", "2",
                                              "--cohort-size", "1000000000"))
    assert result.returncode == 2, result.stderr
    line = result.stderr.splitlines()[-1]
    assert line.startswith("mnist-study: error: --cohort-size 1000000000 does not fit on cpu:")
    assert "use --cohort-size" in line and "Traceback" not in result.stderr
    assert sorted(p.name for p in workdir.iterdir()) == []  # refused before any store


def test_cuda_graph_on_the_cpu_warns_once_and_trains_eagerly_and_the_device_is_recorded(
    tmp_path: Path,
) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    result = run_main(tmp_path, *small_run_args("--data-dir", str(data), "--n-trials", "2",
                                               "--no-warm-start", "--cuda-graph",
                                               "--matmul-precision", "high"))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "--cuda-graph" in line]
    assert len(warnings) == 1 and "needs a CUDA device: on cpu every step runs eagerly" in \
        warnings[0]
    trials = _finished(f"sqlite:///{tmp_path}/optuna.db")
    assert len(trials) == 2 and {t.user_attrs["device"] for t in trials} == {"cpu"}
    study = optuna.load_study(study_name="mnist", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert study.user_attrs["matmul_precision"] == "high"  # recorded with the study


@pytest.mark.slow
def test_the_plan_is_the_first_line_of_the_search(finished_study: FinishedStudy) -> None:
    # A trial count, no budget: the count, the epochs, and the recipes the study starts from.
    lines = finished_study.result.stderr.splitlines()
    plan = [line for line in lines if "trials: up to 2 epochs a trial" in line]
    assert [line.split(" ", 1)[1] for line in plan] == [
        f"{FinishedStudy.N_TRIALS} trials: up to 2 epochs a trial "
        f"(warm start: fast start, best known, seed recipe)"]
    study = optuna.load_study(study_name="mnist",
                              storage=f"sqlite:///{finished_study.root}/optuna.db")
    assert [t.user_attrs.get("warm_start", "").split(" (")[0] for t in study.trials[:3]] == [
        "fast start", "best known", "seed recipe"]


def test_a_budget_too_short_for_one_trial_is_refused_before_any_store(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data")
    args = small_run_args("--data-dir", str(data), "--timeout", "2s", "--max-epochs", "100000")
    result = run_main(tmp_path, *args)
    assert result.returncode == 2, result.stderr
    line = result.stderr.splitlines()[-1]
    assert line.startswith("mnist-study: error: a 2 s budget cannot train one mlp trial of "
                           "100000 epochs here")
    assert "give --timeout" in line and "or fewer --max-epochs" in line
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow").exists()


def test_a_bad_timeout_is_one_line(tmp_path: Path) -> None:
    result = run_main(tmp_path, *small_run_args("--timeout", "ten minutes"))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "mnist-study: error: command line: timeout must be seconds or a duration such as 90s, "
        "10m, 1h or 1h30m, but got timeout='ten minutes'")


@pytest.mark.slow
def test_a_timed_run_plans_its_budget_and_ends_at_it(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data")
    started = time.perf_counter()
    result = run_cli(tmp_path, *small_run_args("--data-dir", str(data), "--timeout", "15s",
                                               "--max-epochs", "40"))
    wall = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    plan = [line for line in result.stderr.splitlines() if " budget: " in line]
    assert len(plan) == 1 and "15 s budget: rungs at 2, 6, 18 of 40 epochs, about" in plan[0]
    assert "warm start: fast start, best known, seed recipe" in plan[0]
    assert "TEST accuracy" in result.stdout
    study = optuna.load_study(study_name="mnist", storage=f"sqlite:///{tmp_path}/optuna.db")
    states = {t.state for t in study.trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert len(study.trials) >= 3  # time alone was the budget
    # The search ends at the budget; evaluation, publishing and start-up come on top.
    last = max(t.datetime_complete for t in study.trials if t.datetime_complete)
    first = min(t.datetime_start for t in study.trials if t.datetime_start)
    assert (last - first).total_seconds() < 15
    assert wall < 15 + 60
