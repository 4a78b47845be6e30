"""`python -m study.bench.workers`: several CLI workers on one study, against one worker.

For each storage (a journal file; PostgreSQL, a throwaway server from tests/pg.py, so run it
from a checkout) and each worker count, N `mnist-study run` processes start together on a new
study with the same budget, and the script reports the study's wall time, trials per minute
and how many trials repeat another's parameters (a retry of a failed trial excepted). The
worker counts run one after another, so the ratios are side by side in one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from study.store.storage import FINISHED, open_storage


def repeated_parameter_sets(trials: Sequence[FrozenTrial]) -> list[tuple[int, int]]:
    """(first, repeat) trial numbers that share a parameter set, except a failed trial and the
    retry that Optuna's heartbeat callback queues for it: what workers must never produce."""
    seen: dict[tuple[tuple[str, Any], ...], int] = {}
    pairs = []
    for trial in sorted(trials, key=lambda t: t.number):
        key = tuple(sorted(trial.params.items()))
        if not key:
            continue  # a queued retry that has not started
        retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
        if key in seen and seen[key] != retried:
            pairs.append((seen[key], trial.number))
        seen.setdefault(key, trial.number)
    return pairs



def run_workers(*, n_workers: int, storage: str, name: str, workdir: Path,
                study_args: list[str]) -> tuple[float, list[FrozenTrial]]:
    """Wall seconds from the start of N workers to the last one's exit, and the trials."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    command = [sys.executable, "-m", "study", "run", "--storage", storage, "--study-name", name,
               "--no-progress", *study_args]
    started = time.perf_counter()
    procs = [subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(n_workers)]
    errors = [proc.communicate()[1] for proc in procs]
    seconds = time.perf_counter() - started
    for proc, err in zip(procs, errors):
        if proc.returncode != 0:
            raise SystemExit(f"a worker failed ({proc.returncode}):\n{err}")
    if storage.startswith("journal:"):
        opened: optuna.storages.BaseStorage = JournalStorage(
            JournalFileBackend(storage.removeprefix("journal:")))
    else:
        opened = open_storage(storage)
    return seconds, optuna.load_study(study_name=name, storage=opened).get_trials()


@contextmanager
def _postgres() -> Iterator[str]:
    from tests.pg import find_postgres_bin, throwaway_postgres

    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise SystemExit("no PostgreSQL binaries (apt-get install postgresql)")
    with throwaway_postgres(bin_dir) as url:
        yield url


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m study.bench.workers", description=__doc__)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--n-trials", type=int, default=12)
    p.add_argument("--max-epochs", type=int, default=2)
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--storages", default="journal,postgres")
    args = p.parse_args()
    study_args = ["--data-dir", str(args.data_dir), "--n-trials", str(args.n_trials),
                  "--max-epochs", str(args.max_epochs), "--pruner", "none"]
    counts = [int(n) for n in args.workers.split(",")]
    print("| storage | workers | trials | wall s | trials/min | vs 1 worker | duplicated "
          "parameter sets |\n|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.storages.split(","):
            with (_postgres() if kind == "postgres" else _journal(Path(tmp))) as storage:
                base = None
                for n in counts:
                    workdir = Path(tmp) / f"{kind}-{n}"
                    workdir.mkdir()
                    seconds, trials = run_workers(
                        n_workers=n, storage=storage, name=f"w{n}", workdir=workdir,
                        study_args=study_args)
                    done = len([t for t in trials if t.state in FINISHED])
                    complete = len([t for t in trials if t.state == TrialState.COMPLETE])
                    rate = done / seconds * 60
                    base = base or rate
                    print(f"| {kind} | {n} | {done} ({complete} complete) | {seconds:.0f} | "
                          f"{rate:.1f} | {rate / base:.2f}x | "
                          f"{len(repeated_parameter_sets(trials))} |", flush=True)


@contextmanager
def _journal(root: Path) -> Iterator[str]:
    yield f"journal:{root}/optuna.log"


if __name__ == "__main__":
    main()
