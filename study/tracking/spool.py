"""What MLflow could not take, kept on disk until it can: the tracking spool.

When the tracking server stops answering mid-study, training goes on and every tracker call
becomes an *operation* appended to this process's spool file, in order, as one JSON line:

    {"op": "create_run", "key": "spool-...", "experiment_id": ..., "run_name": ..., "tags": {}}
    {"op": "log_batch", "run": RUN, "metrics": [[key, value, ms, step]], "params": {}, "tags": {}}
    {"op": "terminate", "run": RUN, "status": "FINISHED"}
    {"op": "artifact", "run": RUN, "file": "files/...", "artifact_path": "checkpoint"}

RUN is a real MLflow run id, or the key of a run the spool itself creates. Replaying the
operations in order (`replay`) back-fills the store: each spooled run is created once (found
again by its `mnist_study.spool_key` tag if a replay was cut short), and progress is saved
after every operation, so a replay that fails half-way resumes where it stopped.

Layout: <spool root>/<study>/<process file>.jsonl, with the files it ships under
<process file>.files/ and its progress in <process file>.progress.json.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

Op = dict[str, Any]
SPOOL_KEY_TAG = "mnist_study.spool_key"
SPOOL_PREFIX = "spool-"


def study_spool_dir(root: Path, study_name: str) -> Path:
    return root / re.sub(r"[^A-Za-z0-9._-]+", "_", study_name)


def is_spooled(run_id: str) -> bool:
    return run_id.startswith(SPOOL_PREFIX)


class Spool:
    """One process's append-only operation log for one study (created on first write)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / f"{uuid.uuid4().hex}.jsonl"
        self._lock = threading.Lock()

    def new_key(self) -> str:
        return f"{SPOOL_PREFIX}{uuid.uuid4().hex}"

    def append(self, op: Op) -> None:
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as out:
                out.write(json.dumps(op) + "\n")
                out.flush()

    def keep_file(self, source: Path) -> str:
        """Copy SOURCE into the spool; the name an `artifact` op refers to it by."""
        # A folder per file: the artifact keeps its name (checkpoint/model_state.pt).
        folder = self.path.with_suffix(".files") / uuid.uuid4().hex
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / source.name
        shutil.copyfile(source, target)
        return str(target.relative_to(self.directory))


def read_ops(path: Path) -> list[Op]:
    # A process killed mid-write leaves a partial last line: everything before it counts.
    ops = []
    for line in path.read_text().splitlines():
        try:
            ops.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return ops


@dataclass(frozen=True)
class ReplayResult:
    operations: int
    runs_created: dict[str, str]  # spool key -> MLflow run id


Apply = Callable[[Op, Mapping[str, str]], str | None]


def replay(directory: Path, apply: Apply) -> ReplayResult:
    """Apply every not-yet-applied operation of every spool file in DIRECTORY, in file order.

    APPLY(op, key_to_run_id) performs one operation and returns the run id it created, if
    any. Progress is saved after each operation; a failure stops the replay with the
    exception, and the next replay goes on from there.
    """
    done_ops, created = 0, {}
    with _exclusive(directory):
        for path in sorted(directory.glob("*.jsonl")):
            progress = path.with_suffix(".progress.json")
            state = json.loads(progress.read_text()) if progress.exists() else {}
            done, mapping = int(state.get("done", 0)), dict(state.get("runs", {}))
            ops = read_ops(path)
            for index in range(done, len(ops)):
                run_id = apply(ops[index], mapping)
                if run_id is not None:
                    mapping[ops[index]["key"]] = run_id
                    created[ops[index]["key"]] = run_id
                progress.write_text(json.dumps({"done": index + 1, "runs": mapping}))
                done_ops += 1
    return ReplayResult(operations=done_ops, runs_created=created)


def pending(directory: Path) -> int:
    """Operations in DIRECTORY's spool files that no replay has applied yet."""
    total = 0
    for path in directory.glob("*.jsonl") if directory.is_dir() else []:
        progress = path.with_suffix(".progress.json")
        done = json.loads(progress.read_text()).get("done", 0) if progress.exists() else 0
        total += len(read_ops(path)) - int(done)
    return total


def known_runs(directory: Path) -> dict[str, str]:
    """Every spool key that a replay has turned into an MLflow run id."""
    runs: dict[str, str] = {}
    for progress in directory.glob("*.progress.json") if directory.is_dir() else []:
        runs.update(json.loads(progress.read_text()).get("runs", {}))
    return runs


@contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """One replay at a time per study spool (two would create every run twice)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".replay.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
