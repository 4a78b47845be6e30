"""Several `mnist-study run` processes on one study: real PostgreSQL, a real journal file.

The design's promise: workers on one shared storage work on one study together, with Optuna's
storage as the distributed engine. Each test starts real CLI subprocesses at the same time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from study.bench.workers import repeated_parameter_sets
from study.store.storage import open_storage
from study.tracking import MlflowTracker
from tests.helpers import (
    STUDY_TRAIN_IMAGES,
    assert_evaluated_once,
    cli_env,
    evaluated_here,
    free_port,
)
from tests.mlflow_server import MlflowServer
from tests.pg import create_database, drop_database, sqlalchemy_scheme
from tests.synthetic import write_synthetic_mnist

# Each test here runs a study in a process, a server or a benchmark: seconds to minutes.
pytestmark = pytest.mark.slow

SMALL_STUDY = ["--allow-noncanonical-data", "--no-progress", "--max-epochs", "2", "--hidden",
               "16", "--val-fraction", "0.25"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "study", "run", *SMALL_STUDY, *args]


@contextmanager
def _workers(*jobs: tuple[Path, list[str]]) -> Iterator[list[subprocess.Popen[str]]]:
    """Start every (working directory, command) at once; none outlives the test."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for cwd, command in jobs:
            procs.append(subprocess.Popen(command, cwd=cwd, env=cli_env(), text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 180) -> list[tuple[int, str]]:
    """(exit code, stdout + stderr) of each worker, in start order."""
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        results.append((proc.returncode, out + err))
    return results


def _study_name() -> str:
    return f"pg-{uuid.uuid4().hex[:8]}"  # one database per session: each test its own study


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1: the store workers on several machines share."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), free_port())
    server.start()
    try:
        yield server.url
    finally:
        server.kill()


def _assert_one_study_shared(study: optuna.Study, *, n_trials: int,
                             results: list[tuple[int, str]], client: MlflowClient) -> None:
    for code, output in results:
        assert code == 0, output  # every worker ends well
    assert_evaluated_once([output for _, output in results], study=study,
                          tracking_uri=client.tracking_uri)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # unique, no gaps
    assert {t.state for t in trials} <= set(FINISHED)  # nothing left RUNNING or WAITING
    assert repeated_parameter_sets(trials) == []  # nobody replayed the other's suggestion
    parents: dict[str, int] = {}
    for trial in trials:
        run_id = trial.user_attrs["mlflow_run_id"]
        run = client.get_run(run_id)  # the Optuna -> MLflow join holds in the shared store
        assert run.data.tags["optuna.trial_number"] == str(trial.number)  # the right run
        assert run.data.tags["optuna.state"] == trial.state.name  # its state tells the truth
        parent = run.data.tags["mlflow.parentRunId"]
        parents[parent] = parents.get(parent, 0) + 1
    assert len(parents) == len(results)  # every worker ran trials: they worked together
    # The budget is the study's total, not each worker's. Optuna checks it between trials, so
    # workers racing for the last slot may each start one: at most one extra per other worker.
    assert n_trials <= len(trials) <= n_trials + len(results) - 1


@pytest.mark.postgres
def test_two_workers_on_postgres_share_one_study_and_its_budget(
    postgres_url: str, mlflow_server: str, tmp_path: Path,
) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    name = _study_name()
    open_storage(postgres_url)  # the schema exists, as after a first run (see the test below)
    args = ["--storage", postgres_url, "--study-name", name, "--n-trials", "6", "--data-dir",
            str(data), "--tracking-uri", mlflow_server]
    # Two "machines": each worker has its own working directory, nothing shared on disk.
    for worker in ("a", "b"):
        (tmp_path / worker).mkdir()
    with _workers((tmp_path / "a", _command(*args)), (tmp_path / "b", _command(*args))) as procs:
        results = _finish(procs)
    study = optuna.load_study(study_name=name, storage=postgres_url)
    _assert_one_study_shared(study, n_trials=6, results=results,
                             client=MlflowClient(mlflow_server))


def test_two_workers_on_a_journal_file_share_one_study(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    journal = tmp_path / "optuna.log"
    # One machine, one working directory: both workers use the default MLflow store there,
    # made by an earlier run (a new one is the next test's business).
    MlflowTracker(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    args = ["--storage", f"journal:{journal}", "--n-trials", "6", "--data-dir", str(data)]
    with _workers((tmp_path, _command(*args)), (tmp_path, _command(*args))) as procs:
        results = _finish(procs)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="mnist", storage=storage)
    _assert_one_study_shared(study, n_trials=6, results=results,
                             client=MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db"))


# Each process imports, then for each target: checks in, waits until all have checked in, and
# runs ACTION(target) at once with the others. A race is timing: several rounds catch it.
_AT_ONCE = """
import json, pathlib, sys, time, traceback

{imports}
ready_root, me, n = pathlib.Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
failed = False
for round_, target in enumerate(json.loads(sys.argv[4])):
    ready = ready_root / str(round_)
    ready.mkdir(exist_ok=True)
    (ready / me).touch()
    deadline = time.monotonic() + 60
    while len(list(ready.iterdir())) < n and time.monotonic() < deadline:
        time.sleep(0.002)
    try:
        ({action})(target)
    except Exception:
        traceback.print_exc()
        failed = True
sys.exit(1 if failed else 0)
"""


def _all_at_once(tmp_path: Path, *, imports: str, action: str, targets: list[str],
                 n: int = 3) -> list[str]:
    """ACTION(target) in N processes released together, per target; the errors seen."""
    ready = tmp_path / "ready"
    ready.mkdir()
    script = _AT_ONCE.format(imports=imports, action=action)
    jobs = [(tmp_path, [sys.executable, "-c", script, str(ready), str(i), str(n),
                        json.dumps(targets)]) for i in range(n)]
    with _workers(*jobs) as procs:
        results = _finish(procs, timeout=150)
    return [line for code, output in results if code != 0
            for line in output.splitlines() if "Error" in line and not line.startswith(" ")]


@pytest.mark.postgres
def test_workers_starting_together_on_an_empty_postgres_database_all_open_it(
    postgres_url: str, tmp_path: Path,
) -> None:
    urls = [create_database(postgres_url, f"empty_{uuid.uuid4().hex[:8]}") for _ in range(4)]
    try:
        errors = _all_at_once(tmp_path, imports="from study.store.storage import open_storage",
                              action="open_storage", targets=urls)
    finally:
        for url in urls:
            drop_database(url)
    assert errors == []  # the README's "start several workers" works on a new database


def test_workers_starting_together_on_a_new_mlflow_sqlite_store_all_open_it(
    tmp_path: Path,
) -> None:
    # The default store, shared by the workers of one machine, made by the first of them.
    # One round: a new store takes seconds to create, and the race shows in every one.
    uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    errors = _all_at_once(
        tmp_path, targets=[uri],  # mlflow imported before the start line: it takes seconds
        imports="import mlflow.tracking\nfrom study.tracking import MlflowTracker",
        action="lambda uri: MlflowTracker(uri).start_study(study_name='s', params={}, tags={})",
        n=2)  # two workers are enough to lose
    assert errors == []  # every worker gets the store and the study's experiment


def test_unreachable_postgres_is_exit_2_and_one_line_with_the_password_hidden(
    tmp_path: Path,
) -> None:
    # The installed driver named, so that the error is the connection, not a missing driver.
    scheme = sqlalchemy_scheme()
    url = f"{scheme}://bob:s3cret@127.0.0.1:{free_port()}/db"  # nothing listens there
    result = subprocess.run(_command("--storage", url, "--data-dir", str(tmp_path)),
                            cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2  # a user-fixable error, not a crash
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr  # one actionable line, no traceback
    assert f"cannot open Optuna storage {scheme}://bob:***@127.0.0.1" in errors[0]  # redacted
    assert "Connection refused" in errors[0]  # and says why
    assert "s3cret" not in result.stderr + result.stdout  # the password never leaks


def _running_with_progress(storage: RDBStorage, name: str) -> list[FrozenTrial]:
    """RUNNING trials that reported an epoch: their heartbeat has surely been recorded."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # the worker has not created the study yet
        return []
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.intermediate_values]


def _kill_mid_trial(proc: subprocess.Popen[str], storage: RDBStorage, name: str) -> FrozenTrial:
    """SIGKILL the worker while a trial runs; SIGSTOP first so the check cannot go stale."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()  # the worker is still at work
        if _running_with_progress(storage, name):
            proc.send_signal(signal.SIGSTOP)
            running = _running_with_progress(storage, name)
            if running:
                proc.kill()
                proc.wait()
                return running[0]
            proc.send_signal(signal.SIGCONT)  # between two trials: let it go on
        time.sleep(0.1)
    pytest.fail("the worker never ran a trial")


@pytest.mark.postgres
@pytest.mark.private_api
def test_a_killed_worker_s_trial_is_failed_requeued_and_run_on_resume(
    postgres_url: str, tmp_path: Path,
) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    name = _study_name()
    args = ["--storage", postgres_url, "--study-name", name, "--data-dir", str(data),
            "--pruner", "none", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
            "--no-warm-start"]  # no queued recipes: the one WAITING trial is the retry
    product = open_storage(postgres_url)
    assert isinstance(product, RDBStorage) and product.get_heartbeat_interval() == 30  # beats
    retry = product.get_heartbeat_stale_trial_callback()
    assert isinstance(retry, RetryHeartbeatStaleTrialCallback)  # the product re-queues
    # The product's storage with its heartbeat (30 s) and grace period (120 s) shortened.
    storage = RDBStorage(postgres_url, heartbeat_interval=1, grace_period=2,
                         heartbeat_stale_trial_callback=retry)
    # A budget it cannot finish before the kill, however fast the machine.
    with _workers((tmp_path, _command(*args, "--n-trials", "50"))) as (worker,):
        killed = _kill_mid_trial(worker, storage, name)
    study = optuna.load_study(study_name=name, storage=storage)
    assert study.trials[killed.number].state == TrialState.RUNNING  # dead, but nobody knows
    time.sleep(3)  # past the grace period: the dead worker's heartbeat is stale now
    fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    assert trials[killed.number].state == TrialState.FAIL  # the stale trial is failed
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1  # and re-queued once
    assert waiting[0].params == killed.params  # with the same parameters
    origin = RetryHeartbeatStaleTrialCallback.retried_trial_number(waiting[0])
    assert origin == killed.number  # and says which trial it retries

    total = len([t for t in trials if t.state in FINISHED]) + 2  # the re-queued one + 1 new
    resumed = subprocess.run(_command(*args, "--n-trials", str(total)), cwd=tmp_path,
                             env=cli_env(), capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr  # the command resumes the study
    trials = optuna.load_study(study_name=name, storage=postgres_url).get_trials()
    assert len([t for t in trials if t.state in FINISHED]) == total  # the FAIL counts too
    assert {t.state for t in trials} <= set(FINISHED)  # the queue was drained
    retried = [t for t in trials
               if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert len(retried) == 1 and retried[0].state.is_finished()  # the re-queued trial ran
    assert retried[0].user_attrs["epochs_trained"] >= 1  # really trained, not just closed
    assert retried[0].params == killed.params  # as the killed one would have
    run_ids = (retried[0].user_attrs["mlflow_run_id"], killed.user_attrs["mlflow_run_id"])
    assert run_ids[0] != run_ids[1]  # logged to a run of its own, not the dead one's
    dead_run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run_ids[1])
    # The dead worker's run does not stay RUNNING, nor FINISHED when the kill came between
    # ending the run and recording the result: it agrees with Optuna's FAIL.
    assert dead_run.info.status == "FAILED"
    assert "heartbeat" in dead_run.data.tags["optuna.fail_reason"]  # and says why


@pytest.mark.postgres
def test_the_readme_s_plain_postgresql_url_opens_the_storage(postgres_url: str) -> None:
    # README: `postgresql://user:pass@host/db` after `pip install -e ".[postgres]"`.
    plain = "postgresql://" + postgres_url.split("://", 1)[1]
    assert isinstance(open_storage(plain), RDBStorage)  # the documented URL form works


@pytest.mark.postgres
def test_a_storage_password_reaches_no_mlflow_param_tag_or_artifact(
    postgres_url: str, tmp_path: Path,
) -> None:
    from sqlalchemy.engine import make_url

    from study.config import StudyConfig

    # trust auth ignores the password, so the study runs; it must still be kept out of MLflow.
    url = make_url(postgres_url).set(password="s3cret").render_as_string(hide_password=False)
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    summary = evaluated_here(StudyConfig(
        study_name=_study_name(), storage=url, tracking_uri=tracking,
        data_dir=write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES),
        download=False,
        allow_noncanonical_data=True, n_trials=1, max_epochs=1, hidden=16, device="cpu",
        no_progress=True))
    client = MlflowClient(tracking)
    parent = client.get_run(summary.mlflow_parent_run_id)
    logged = parent.data.params["config.storage"]
    assert logged.startswith(url.split("://")[0])  # it is the storage...
    assert ":***@" in logged  # ...with the password masked
    runs = client.search_runs([parent.info.experiment_id])
    recorded = [json.dumps([r.data.params, r.data.tags]) for r in runs]
    with tempfile.TemporaryDirectory() as tmp:
        folder = client.download_artifacts(parent.info.run_id, "", tmp)
        recorded += [p.read_text(errors="replace") for p in Path(folder).rglob("*")
                     if p.is_file() and p.suffix in {".toml", ".json", ".md", ".txt"}]
    assert not [text for text in recorded if "s3cret" in text]  # nowhere, in any run
