"""`mnist-study run --devices all|0,1`: one worker process per GPU, on one shared study.

Each worker is the same `mnist-study run` command with `--device cuda:N` in place of
`--devices`: the workers share the study through its storage (a journal file or PostgreSQL:
SQLite takes one process), and the first to find the study finished evaluates it, as any
workers started by hand would. The launcher waits for them all, passes Ctrl-C and SIGTERM on,
and exits with the worst of their exit codes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

from study.errors import ConfigError, DeviceError

SHARED_STORAGES = ("journal:", "postgresql")


def parse_devices(value: str, *, visible: int) -> list[int]:
    """The GPU indices VALUE names ("all", or "0,1"), of VISIBLE GPUs."""
    if visible == 0:
        raise DeviceError(f"--devices {value} needs CUDA GPUs, but torch sees none; use "
                          f"--device cpu (or run without --devices)")
    if value == "all":
        return list(range(visible))
    try:
        indices = [int(part) for part in value.split(",")]
    except ValueError:
        raise ConfigError(f"--devices takes 'all' or GPU indices such as 0,1, but got "
                          f"{value!r}") from None
    bad = [i for i in indices if not 0 <= i < visible]
    if bad or len(set(indices)) != len(indices) or not indices:
        raise DeviceError(f"--devices {value}: torch sees {visible} GPU(s), numbered 0 to "
                          f"{visible - 1}, each named once")
    return indices


def check_shared_storage(storage: str) -> None:
    """Workers share one study only through a storage several processes may write."""
    if not storage.startswith(SHARED_STORAGES):
        raise ConfigError(f"--devices starts a worker per GPU, and they share the study through "
                          f"its storage: give --storage journal:PATH (one machine) or "
                          f"postgresql://... ({storage.split(':', 1)[0]} takes one process)")


def worker_commands(argv: Sequence[str], devices: Sequence[int]) -> list[list[str]]:
    """The `mnist-study run` command line ARGV once per device, with --device cuda:N in place
    of --devices (either spelling: `--devices 0,1` or `--devices=0,1`)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--devices":
            skip = True
        elif not arg.startswith("--devices="):
            kept.append(arg)
    return [[sys.executable, "-m", "study", *kept, "--device", f"cuda:{d}"] for d in devices]


def run_workers(commands: Sequence[Sequence[str]]) -> int:
    """Start COMMANDS, wait for all; the worst exit code. Ctrl-C and SIGTERM reach each."""
    workers = [subprocess.Popen(list(command)) for command in commands]

    def forward(signum: int, frame: FrameType | None) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [worker.wait() for worker in workers]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return max(codes, key=lambda code: (code != 0, abs(code)))
