"""Who is still alive: other workers' RUNNING trials and the MLflow parent runs of processes;
and which one worker evaluates the study.

A process killed with SIGKILL (or a lost machine) can close nothing. Optuna's heartbeats let a
later run fail such a process's trial after the grace period; this module does the same for
its MLflow parent run, and tells the user what a run sees when it starts beside RUNNING trials.

Each `run` registers itself as the study user attr `worker.<parent run id>` with its host, pid
and a heartbeat it refreshes every HEARTBEAT_SECONDS from a daemon thread, and marks it ended
when it stops. A later run closes the parent runs of registered workers that are gone: on the
same host, a pid that no longer runs; elsewhere, a heartbeat older than the grace period.

One evaluation however many workers: a worker whose search has ended says so in its record
(`searched`). While another live worker still searches, it leaves the evaluation to that one;
the last one to end its search claims the evaluation. The claim is atomic on every storage:
creating the study EVALUATION_CLAIM.format(name) succeeds for one process only (Optuna refuses
a second study of one name). It is deleted once the result is stored, or when the evaluation
fails; a claim whose worker died is taken over by the next run.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.store.optuna_private import (
    heartbeat_ages,
    heartbeat_storage,
    rdb_storage,
    storage_of,
    trial_id,
)
from study.store.record import FAIL_REASON_ATTR, WORKER_ATTR, WORKER_PREFIX

logger = logging.getLogger(__name__)

EVALUATION_CLAIM = "{}.evaluating"  # the study that exists while one worker evaluates
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
    beats = heartbeat_ages(study, [trial_id(t) for t in trials])
    now = datetime.now()
    return [RunningTrial(
        number=t.number, trial_id=trial_id(t), heartbeat_age=beats.get(trial_id(t)),
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


def grace_seconds_of(study: optuna.Study) -> float | None:
    storage = rdb_storage(study)
    grace = None if storage is None else storage.grace_period
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


class Worker:
    """This process's record in the study: written at start, at every heartbeat, when its
    search ends and when it stops."""

    def __init__(self, study: optuna.Study, parent_run_id: str) -> None:
        self.study, self.parent_run_id = study, parent_run_id
        self.key = f"{WORKER_PREFIX}{parent_run_id}"
        self.record: dict[str, object] = {"host": socket.gethostname(), "pid": os.getpid(),
                                          "started": time.time()}

    def write(self, **changes: object) -> None:
        if not self.parent_run_id:
            return  # a tracker without runs (tests): nothing to tell other workers
        self.record.update(changes)
        self.study.set_user_attr(self.key, {**self.record, "beat": time.time()})

    def search_ended(self) -> None:
        self.write(searched=time.time())


@contextmanager
def registered_worker(study: optuna.Study, parent_run_id: str) -> Iterator[Worker]:
    """Register this process as a worker of STUDY until the block ends, with a heartbeat."""
    worker = Worker(study, parent_run_id)
    if not parent_run_id:
        yield worker
        return
    worker.write()
    try:
        with periodically(HEARTBEAT_SECONDS, worker.write, name="worker-heartbeat"):
            yield worker
    finally:
        worker.write(ended=True)


def still_searching(study: optuna.Study, worker: Worker, *,
                    grace_seconds: float) -> list[str]:
    """The other live workers whose search has not ended, as "pid 12 on host"."""
    dead = dead_workers(study, grace_seconds=grace_seconds)
    out = []
    for key, record in study.user_attrs.items():
        parent = key.removeprefix(WORKER_PREFIX)
        if not key.startswith(WORKER_PREFIX) or key == worker.key or parent in dead \
                or not isinstance(record, dict) or record.get("ended") \
                or record.get("searched"):
            continue
        out.append(f"pid {record.get('pid')} on {record.get('host')}")
    return out


@contextmanager
def evaluation_claim(study: optuna.Study, worker: Worker, *,
                     grace_seconds: float) -> Iterator[str | None]:
    """Claim the study's one evaluation for WORKER. Yields None when claimed (released when
    the block ends), else who holds it ("pid 12 on host"): a live worker evaluating now."""
    storage, name = storage_of(study), EVALUATION_CLAIM.format(study.study_name)
    claim_id = _create_claim(storage, name, worker)
    if claim_id is None:  # held: by a live worker, or by a dead one whose claim we take over
        holder = str(storage.get_study_user_attrs(
            storage.get_study_id_from_name(name)).get(WORKER_ATTR, ""))
        record = study.user_attrs.get(f"{WORKER_PREFIX}{holder}")
        if not holder or not isinstance(record, dict):  # claimed a moment ago, or no record
            yield "another worker"
            return
        if holder not in dead_workers(study, grace_seconds=grace_seconds) \
                and not record.get("ended"):
            yield f"pid {record.get('pid')} on {record.get('host')}"
            return
        logger.info("the worker that claimed the evaluation is gone: this run evaluates")
        try:
            storage.delete_study(storage.get_study_id_from_name(name))
        except KeyError:
            pass  # another run took it over first; the claim below decides between us
        claim_id = _create_claim(storage, name, worker)
        if claim_id is None:
            yield "another worker"
            return
    try:
        yield None
    finally:
        storage.delete_study(claim_id)


def _create_claim(storage: optuna.storages.BaseStorage, name: str,
                  worker: Worker) -> int | None:
    try:
        claim_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], name)
    except optuna.exceptions.DuplicatedStudyError:
        return None
    storage.set_study_user_attr(claim_id, WORKER_ATTR, worker.parent_run_id)
    return claim_id


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


@contextmanager
def beating(study: optuna.Study,
            trials: Mapping[int, optuna.Trial]) -> Iterator[Callable[[optuna.Trial], None]]:
    """What study.optimize's heartbeat thread does for its one trial, for every trial in
    TRIALS (read at each beat: the caller adds and removes them) while the block runs.

    Yields the first beat of a trial asked inside the block, to be given at once, as
    study.optimize gives its trial's: a worker killed before a trial's first heartbeat would
    leave a RUNNING trial that no heartbeat ever shows stale.
    """
    storage = heartbeat_storage(study)  # Optuna exposes the heartbeat only through its storage
    interval = None if storage is None else storage.get_heartbeat_interval()
    if storage is None or interval is None:
        yield lambda trial: None
        return

    def beat() -> None:
        for trial in list(trials.values()):
            storage.record_heartbeat(trial_id(trial))

    beat()  # at once, as Optuna's own heartbeat thread does
    with periodically(interval, beat, name="cohort-heartbeats"):
        yield lambda trial: storage.record_heartbeat(trial_id(trial))


def fail_trial(study: optuna.Study, trial_id: int, *, reason: str) -> FrozenTrial:
    """Record the RUNNING trial TRIAL_ID as FAIL, saying why (its worker is gone); the failed
    trial, for Optuna's retry callback to queue again."""
    note_fail_reason(study, trial_id, reason)
    storage_of(study).set_trial_state_values(trial_id, TrialState.FAIL)
    return storage_of(study).get_trial(trial_id)


def note_fail_reason(study: optuna.Study, trial_id: int, reason: str) -> None:
    """Why TRIAL_ID failed, or is about to (fail_stale_trials fails it next), in its attrs."""
    storage_of(study).set_trial_user_attr(trial_id, FAIL_REASON_ATTR, reason)
