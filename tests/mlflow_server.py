"""A real `mlflow server` on 127.0.0.1 for the tests, which they may stop and start again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


class MlflowServer:
    """`mlflow server` over ROOT/mlflow.db and ROOT/artifacts on PORT, in its own group."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = root / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no background consumers
        with self.log_path.open("a") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
                 str(self.port), "--workers", "1", "--backend-store-uri",
                 f"sqlite:///{self.root}/mlflow.db", "--artifacts-destination",
                 str(self.root / "artifacts")],
                cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # its own group: stopped as one
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                pytest.fail(f"mlflow server exited {self._proc.returncode}:\n"
                            f"{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"mlflow server did not answer in {timeout} s:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        """Gone at once, as a crashed or unplugged server is: SIGKILL to the whole group."""
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._proc.wait(timeout=30)
        self._proc = None
