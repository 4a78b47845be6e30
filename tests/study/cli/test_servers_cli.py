"""`mnist-study dashboard` and `mnist-study ui` as a user runs them: real processes, real ports.

The server helpers (CliServer, start_cli_server) live in tests/servers.py, shared with
tests/study/cli/test_browser.py.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.storages.journal import JournalFileBackend, JournalStorage

from study.cli import main
from study.cli.servers import (
    LOCALHOST,
    ServerError,
    mlflow_server_command,
    require_local_store,
    stop_process_group,
    url_for,
    wait_until_ready,
)
from study.errors import StudyError
from tests.helpers import cli_env, free_port
from tests.servers import STOP_SECONDS, CliServer, group_alive, start_cli_server


@pytest.fixture
def servers() -> Iterator[list[CliServer]]:
    """Servers a test starts; stopped even when the test fails."""
    started: list[CliServer] = []
    yield started
    for server in started:
        server.stop()


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=120)


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr  # one actionable line, no traceback
    return errors[0]


def _make_mlflow_store(path: Path) -> str:
    uri = f"sqlite:///{path}"
    MlflowClient(uri).create_experiment("mnist")
    return uri


def _main(cwd: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """The CLI in this process (no server starts on these paths): seconds saved per case."""
    monkeypatch.chdir(cwd)
    for name in ("MLFLOW_TRACKING_URI", "MNIST_STUDY_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    return main(list(args))


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1, errors  # one actionable line, no traceback
    return errors[0]


@pytest.mark.parametrize(("command", "port"), [("dashboard", "8080"), ("ui", "5000")])
def test_help_shows_loopback_default_and_port(command: str, port: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "default 127.0.0.1" in out  # nothing listens on other interfaces unless asked
    assert f"default {port}" in out and "--config" in out


def test_missing_default_store_is_one_line_exit_2_in_a_real_process(tmp_path: Path) -> None:
    result = _cli(tmp_path, "dashboard", "--port", str(free_port()))
    assert result.returncode == 2
    assert "no Optuna storage at" in _one_error_line(result)
    assert not (tmp_path / "optuna.db").exists()  # looking did not create an empty store


@pytest.mark.parametrize(("args", "message", "missing"), [
    (["dashboard", "--storage", "journal:j/optuna.log"], "no Optuna storage at", "j/optuna.log"),
    (["ui"], "no MLflow tracking store at", "mlflow/mlflow.db"),  # the default store
])
def test_missing_store_is_one_line_exit_2_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    args: list[str], message: str, missing: str,
) -> None:
    assert _main(tmp_path, monkeypatch, *args, "--port", str(free_port())) == 2
    line = _one_line(capsys)
    assert message in line and "run `mnist-study run` here first" in line  # says what to do
    assert not (tmp_path / missing).exists()  # no empty store was created by looking


@pytest.mark.parametrize("command", ["dashboard", "ui"])
def test_taken_port_is_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str], command: str) -> None:
    # The port is checked before either store is opened: existing files are enough here.
    (tmp_path / "optuna.db").touch()
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "mlflow.db").touch()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert _main(tmp_path, monkeypatch, command, "--port", str(port)) == 2
    assert f"port {port} on 127.0.0.1 is already in use" in _one_line(capsys)


@pytest.mark.parametrize(("args", "message"), [
    (["ui", "--tracking-uri", "http://127.0.0.1:9"], "is already an MLflow server"),
    (["dashboard", "--port", "70000"], "port must be in 1..65535, but got port=70000"),
    (["dashboard", "--storage", "optuna.db"], "is not a URL"),
    (["ui", "--host", "192.0.2.1"], "cannot listen on 192.0.2.1:"),  # TEST-NET: not ours
])
def test_bad_server_input_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    args: list[str], message: str,
) -> None:
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "mlflow.db").touch()  # a store exists: the input is what is wrong
    port = [] if "--port" in args else ["--port", str(free_port())]
    assert _main(tmp_path, monkeypatch, *args, *port) == 2
    assert message in _one_line(capsys)


def test_url_and_server_command_helpers(tmp_path: Path) -> None:
    assert url_for("0.0.0.0", 8080) == "http://127.0.0.1:8080/"  # reachable locally
    (tmp_path / "m.db").touch()
    command = mlflow_server_command(f"sqlite:///{tmp_path}/m.db", host="127.0.0.1", port=5001)
    root = command[command.index("--default-artifact-root") + 1]
    assert root == (tmp_path / "artifacts").as_uri()  # the artifacts beside the database
    assert command[command.index("--host") + 1] == "127.0.0.1"
    with pytest.raises(StudyError, match="no Optuna storage"):
        require_local_store(f"journal:{tmp_path}/none.log", what="Optuna storage",
                            flag="--storage")


def test_a_server_that_dies_or_hangs_at_start_up_is_a_clear_error() -> None:
    dies = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(ServerError, match="exited with code 3 before answering"):
        wait_until_ready(dies, url_for(LOCALHOST, free_port()))
    hangs = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             start_new_session=True)
    try:
        with pytest.raises(ServerError, match="did not answer .* within 1 s"):
            wait_until_ready(hangs, url_for(LOCALHOST, free_port()), timeout=1)
    finally:
        stop_process_group(hangs)
    assert hangs.poll() is not None  # stopped, not left behind


def test_dashboard_serves_a_journal_storage(tmp_path: Path, servers: list[CliServer]) -> None:
    log = tmp_path / "optuna.log"
    storage = JournalStorage(JournalFileBackend(str(log)))
    optuna.create_study(storage=storage, study_name="journal-study").optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    port = free_port()
    server = start_cli_server(tmp_path, "dashboard", "--storage", f"journal:{log}",
                              "--port", str(port))
    servers.append(server)
    server.wait_for(rf"open http://127\.0\.0\.1:{port}/")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=30) as reply:
        studies = json.load(reply)["study_summaries"]
    assert [s["study_name"] for s in studies] == ["journal-study"]  # read through the journal


@pytest.mark.slow
def test_ui_stops_its_mlflow_server_when_terminated(tmp_path: Path,
                                                     servers: list[CliServer]) -> None:
    (tmp_path / "mlflow").mkdir()
    _make_mlflow_store(tmp_path / "mlflow" / "mlflow.db")
    port = free_port()
    server = start_cli_server(tmp_path, "ui", "--port", str(port))  # default tracking store
    servers.append(server)
    link = server.wait_for(r"study mnist: (\S+)").group(1)
    # Straight to the runs table, in the classic ML view rather than the GenAI overview.
    assert link == f"http://127.0.0.1:{port}/#/experiments/1/runs?workflowType=machine_learning"
    child = int(server.wait_for(r"mlflow server pid (\d+)").group(1))
    server.extra_groups.append(child)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=STOP_SECONDS) == 0  # a clean stop, not a crash
    assert "MLflow UI stopped" in "".join(server.output)
    assert not group_alive(child)  # mlflow server, uvicorn and all their children are gone
