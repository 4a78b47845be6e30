"""Who is still alive: other workers' RUNNING trials and the MLflow parent runs of processes.

A process killed with SIGKILL (or a lost machine) can close nothing. Optuna's heartbeats let a
later run fail such a process's trial after the grace period; this module does the same for
its MLflow parent run, and tells the user what a run sees when it starts beside RUNNING trials.

Each `run` registers itself as the study user attr `worker.<parent run id>` with its host, pid
and a heartbeat it refreshes every HEARTBEAT_SECONDS from a daemon thread, and marks it ended
when it stops. A later run closes the parent runs of registered workers that are gone: on the
same host, a pid that no longer runs; elsewhere, a heartbeat older than the grace period.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

logger = logging.getLogger(__name__)

WORKER_PREFIX = "worker."  # study user attr per process: worker.<parent run id>
WORKER_ATTR = "worker"  # trial user attr: the parent run id of the process that runs it
HEARTBEAT_SECONDS = 30


@dataclass(frozen=True)
class RunningTrial:
    number: int
    trial_id: int
    heartbeat_age: float | None  # seconds since its worker's last heartbeat; None: no heartbeats
    started_age: float  # seconds since it started
    worker: str  # the parent run id of the process running it ("" if unknown)


def running_trials(study: optuna.Study) -> list[RunningTrial]:
    """The study's RUNNING trials (other workers', or a dead worker's), with their ages."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    beats = _heartbeats(study, [t._trial_id for t in trials])
    now = datetime.now()
    return [RunningTrial(
        number=t.number, trial_id=t._trial_id, heartbeat_age=beats.get(t._trial_id),
        started_age=(now - t.datetime_start).total_seconds() if t.datetime_start else 0.0,
        worker=str(t.user_attrs.get(WORKER_ATTR, "")),
    ) for t in trials]


def describe_running(trial: RunningTrial, *, grace_seconds: float | None) -> str:
    """One line a person can act on, for a RUNNING trial found at start."""
    if trial.heartbeat_age is None or grace_seconds is None:
        return (f"trial {trial.number} is RUNNING, started {trial.started_age:.0f} s ago: a live "
                f"worker's, or a dead one's that this storage cannot tell (no heartbeats on a "
                f"journal file); it counts against --n-trials until it finishes")
    if trial.heartbeat_age > grace_seconds:
        return (f"trial {trial.number} is RUNNING with a heartbeat {trial.heartbeat_age:.0f} s "
                f"old: its worker is gone; it is failed now and retried with the same parameters")
    wait = grace_seconds - trial.heartbeat_age
    return (f"trial {trial.number} is RUNNING with a heartbeat {trial.heartbeat_age:.0f} s old: "
            f"a crashed worker's or a live one's; if its worker is gone it is failed and retried "
            f"after the {grace_seconds:.0f} s grace period (in {wait:.0f} s)")


def _heartbeats(study: optuna.Study, trial_ids: list[int]) -> dict[int, float]:
    """Seconds since each trial's last heartbeat, where the storage records them (RDB)."""
    storage = study._storage
    storage = getattr(storage, "_backend", storage)  # optuna wraps RDB in a cache
    if not isinstance(storage, RDBStorage) or not trial_ids:
        return {}
    # Optuna has no public reader for heartbeats; its model is the table it writes them to.
    from optuna.storages._rdb.models import TrialHeartbeatModel
    from sqlalchemy import func, select

    with storage.engine.connect() as connection:
        # The database's clock, as Optuna's own staleness check uses (naive, like the column).
        now = connection.execute(select(func.now())).scalar_one().replace(tzinfo=None)
        rows = connection.execute(
            select(TrialHeartbeatModel.trial_id, TrialHeartbeatModel.heartbeat)
            .where(TrialHeartbeatModel.trial_id.in_(trial_ids))).all()
    return {int(trial_id): max(0.0, (now - beat.replace(tzinfo=None)).total_seconds())
            for trial_id, beat in rows}


def grace_seconds_of(study: optuna.Study) -> float | None:
    storage = getattr(study._storage, "_backend", study._storage)
    grace = getattr(storage, "grace_period", None) if isinstance(storage, RDBStorage) else None
    return float(grace) if grace is not None else None


@contextmanager
def periodically(seconds: float, action: Callable[[], object], *, name: str) -> Iterator[None]:
    """ACTION every SECONDS on a daemon thread while the block runs; stopped and joined after.

    A failing ACTION (a storage hiccup) is logged and tried again at the next beat.
    """
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(seconds):
            try:
                action()
            except Exception as exc:
                logger.debug("%s failed: %s", name, exc)

    thread = threading.Thread(target=beat, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def registered_worker(study: optuna.Study, parent_run_id: str) -> Iterator[None]:
    """Register this process as a worker of STUDY until the block ends, with a heartbeat."""
    if not parent_run_id:
        yield
        return
    key = f"{WORKER_PREFIX}{parent_run_id}"
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    study.set_user_attr(key, {**record, "beat": time.time()})
    try:
        with periodically(HEARTBEAT_SECONDS, lambda: study.set_user_attr(
                key, {**record, "beat": time.time()}), name="worker-heartbeat"):
            yield
    finally:
        study.set_user_attr(key, {**record, "beat": time.time(), "ended": True})


def dead_workers(study: optuna.Study, *, grace_seconds: float) -> dict[str, str]:
    """Parent run id -> why its process is taken for dead, for workers that never ended."""
    dead = {}
    now, host = time.time(), socket.gethostname()
    for key, record in study.user_attrs.items():
        if not key.startswith(WORKER_PREFIX) or not isinstance(record, dict) \
                or record.get("ended"):
            continue
        age = now - float(record.get("beat", 0))
        if record.get("host") == host and not _pid_alive(int(record.get("pid", -1))):
            dead[key.removeprefix(WORKER_PREFIX)] = (
                f"its process (pid {record.get('pid')} on {host}) is gone")
        elif age > grace_seconds:
            dead[key.removeprefix(WORKER_PREFIX)] = (
                f"its worker's heartbeat on {record.get('host')} is {age:.0f} s old")
    return dead


def mark_closed(study: optuna.Study, parent_run_id: str, reason: str) -> None:
    key = f"{WORKER_PREFIX}{parent_run_id}"
    record = study.user_attrs.get(key, {})
    study.set_user_attr(key, {**record, "ended": True, "closed_by_later_run": reason})


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True
