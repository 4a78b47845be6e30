"""`python -m study ...` servers (dashboard, ui) in their own process groups, for the tests.

Shared by tests/study/cli/test_servers_cli.py and tests/study/cli/test_browser.py.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import cli_env

STOP_SECONDS = 20


@dataclass
class CliServer:
    """A `python -m study ...` server in its own process group, its output read line by line."""

    process: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    output: list[str] = field(default_factory=list)
    extra_groups: list[int] = field(default_factory=list)  # e.g. the mlflow server it started

    def wait_for(self, pattern: str, timeout: float = 180) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "".join(self.output))

    def stop(self) -> None:
        """SIGTERM the group, then SIGKILL it and any group it started: nothing outlives a test."""
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for group in [self.process.pid, *self.extra_groups]:
            _signal_group(group, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def start_cli_server(cwd: Path, *args: str) -> CliServer:
    process = subprocess.Popen([sys.executable, "-m", "study", *args], cwd=cwd, env=cli_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    server = CliServer(process)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.output.append(line)
            server.lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return server
