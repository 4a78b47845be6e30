"""The two browsing servers: optuna-dashboard in this process, the MLflow UI as a child process.

Both bind 127.0.0.1 unless asked otherwise, refuse a taken port with one clear line, and refuse
to open a store that does not exist (opening it would silently create an empty one).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from study.errors import ConfigError, ServerError
from study.store.redaction import redact

logger = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"
DASHBOARD_PORT = 8080
MLFLOW_PORT = 5000
MLFLOW_READY_SECONDS = 180.0  # a cold `mlflow server` imports a lot: a minute on 2 busy cores
STOP_SECONDS = 10.0


def url_for(host: str, port: int) -> str:
    """The address to open in a browser; a server on every interface is reachable locally."""
    shown = LOCALHOST if host in ("", "0.0.0.0") else host
    return f"http://{shown}:{port}/"


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"port must be in 1..65535, but got port={port}")


def require_local_store(url: str, *, what: str, flag: str) -> None:
    """A local store (sqlite:///PATH, journal:PATH) must exist: opening it would create it."""
    path = local_store_path(url)
    if path is not None and not path.is_file():
        raise ServerError(f"no {what} at {path.resolve()}: run `mnist-study run` here first, or "
                          f"pass {flag} with the store your run used")


def local_store_path(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    if url.startswith("journal:"):
        return Path(url.removeprefix("journal:"))
    return None


def _bind_error(exc: OSError, host: str, port: int) -> ServerError:
    if exc.errno == errno.EADDRINUSE:
        return ServerError(f"port {port} on {host} is already in use (another dashboard or "
                           f"server?); stop it or pass --port with a free port")
    return ServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pass another "
                       f"--host or --port")


# --- optuna-dashboard -----------------------------------------------------------------------

class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser keeps connections open: they must not block the exit


class _QuietHandler(WSGIRequestHandler):
    """One log line per request would drown the URL the user needs to see."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)


@dataclass(frozen=True)
class Dashboard:
    server: WSGIServer  # bound, not yet serving
    study_names: list[str]


def dashboard_server(storage_url: str, *, host: str, port: int) -> Dashboard:
    """optuna-dashboard's WSGI app on the study storage, bound to HOST:PORT."""
    import optuna
    from optuna_dashboard import wsgi

    from study.store.storage import open_storage

    check_port(port)
    require_local_store(storage_url, what="Optuna storage", flag="--storage")
    ensure_port_free(host, port)  # before opening a storage that may take seconds to reach
    # Our own opener: journal: needs JournalFileBackend, postgresql:// the same RDB settings.
    storage = open_storage(storage_url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    try:
        server = make_server(host, port, wsgi(storage), server_class=_ThreadingWSGIServer,
                             handler_class=_QuietHandler)
    except OSError as exc:
        raise _bind_error(exc, host, port) from exc
    return Dashboard(server=server, study_names=names)


# --- MLflow UI --------------------------------------------------------------------------------

def mlflow_server_command(tracking_uri: str, *, host: str, port: int) -> list[str]:
    """`mlflow server` on the tracking store; a local store's artifacts are the ones beside it."""
    from study.tracking import artifact_root_for  # torch: not for `--help`

    if tracking_uri.startswith(("http://", "https://")):
        raise ConfigError(f"tracking URI {redact(tracking_uri)} is already an MLflow server: "
                          f"open it in a browser, or pass --tracking-uri sqlite:///path/mlflow.db")
    check_port(port)
    require_local_store(tracking_uri, what="MLflow tracking store", flag="--tracking-uri")
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
               "--host", host, "--port", str(port),
               "--workers", "1",  # one local user: more workers only cost memory and start-up
               "--uvicorn-opts", "--no-access-log"]  # a line per request would bury the URL
    root = artifact_root_for(tracking_uri)
    if root is not None:
        # Runs already carry their artifact location; this covers experiments made in the UI.
        command += ["--default-artifact-root", root.resolve().as_uri()]
    return command


def ensure_port_free(host: str, port: int) -> None:
    """Fail now with one line, rather than after `mlflow server` has spent a minute starting."""
    check_port(port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # The server sets SO_REUSEADDR too: a port in TIME_WAIT is free for it, and for us.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise _bind_error(exc, host, port) from exc


def start_mlflow_server(command: list[str]) -> subprocess.Popen[bytes]:
    # Its own process group: `mlflow server` spawns uvicorn (and job runners), and stopping
    # the group is the only way to stop them all.
    # Its job runners (7 huey consumers) serve GenAI features, not browsing runs: off.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(command, start_new_session=True, env=env)


def wait_until_ready(process: subprocess.Popen[bytes], url: str,
                     timeout: float = MLFLOW_READY_SECONDS) -> None:
    """Poll the server's /health until it answers; fail if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise ServerError(f"mlflow server exited with code {code} before answering at {url}; "
                              f"its own error is printed above")
        try:
            with urllib.request.urlopen(url + "health", timeout=5):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    raise ServerError(f"mlflow server did not answer at {url} within {timeout:.0f} s")


def experiment_links(server_url: str) -> dict[str, str]:
    """Each experiment's runs table in the classic ML view (the UI's own landing page is its
    GenAI overview, with the assistant panel open)."""
    from mlflow import MlflowClient

    experiments = MlflowClient(server_url).search_experiments()
    return {e.name: f"{server_url}#/experiments/{e.experiment_id}/runs"
                    f"?workflowType=machine_learning"
            for e in experiments if e.name != "Default"}


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's whole process group, SIGKILL it if it lingers."""
    if process.poll() is not None:
        _kill_group(process.pid, signal.SIGKILL)  # the leader is gone; its children may not be
        return
    _kill_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid, signal.SIGKILL)
        process.wait()


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # nothing left in the group


def raise_on_sigterm() -> None:
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt, so `finally` blocks stop child servers."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def exposure_warning(host: str) -> str | None:
    if host in (LOCALHOST, "localhost", "::1"):
        return None
    return f"warning: listening on {host}: other machines can reach this server"
