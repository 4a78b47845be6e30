"""Opening the Optuna storage and creating or resuming a study that matches this run."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState

from study.errors import StorageError
from study.store.optuna_private import storage_of, study_id
from study.store.record import (
    RECORD_VERSION,
    TRACKING_URI_ATTR,
    new_record,
    read_identity,
    record_version,
)
from study.store.redaction import redact
from study.store.store_checks import cannot_open, check_storage_url, with_driver

logger = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
OBJECTIVE_NAME = "val_loss"
# A worker that dies without a word (kill -9, lost machine) stops its heartbeat; after the grace
# period its RUNNING trial is marked FAIL and re-queued with the same parameters.
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120
RETRIES = 2  # times a dead worker's trial is re-queued with its parameters


def open_storage(url: str, *,
                 grace_seconds: float = GRACE_SECONDS) -> optuna.storages.BaseStorage:
    """sqlite:/// or postgresql:// (RDB, with heartbeats) or journal:PATH (several processes)."""
    check_storage_url(url)
    for prefix in ("journal:", "sqlite:///"):
        if url.startswith(prefix):
            Path(url.removeprefix(prefix)).parent.mkdir(parents=True, exist_ok=True)
    try:
        if url.startswith("journal:"):
            return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
        return _rdb_storage(with_driver(url), grace_seconds=grace_seconds)
    except Exception as exc:  # sqlalchemy's errors, a missing driver (ImportError), bad URL...
        raise cannot_open(url, exc) from exc


def _rdb_storage(url: str, *, grace_seconds: float) -> RDBStorage:
    # Workers started together on a new database race to create the schema; the losers'
    # CREATE TABLE fails (optuna/optuna#1092). Once the winner has committed, opening works.
    for attempt in range(1, 4):
        try:
            return RDBStorage(
                url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=int(grace_seconds),
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=RETRIES),
            )
        except sqlalchemy.exc.DBAPIError as exc:
            lost_the_race = isinstance(exc, (sqlalchemy.exc.IntegrityError,
                                             sqlalchemy.exc.ProgrammingError)) \
                or "already exists" in str(exc)  # SQLite says so in an OperationalError
            if not lost_the_race or attempt == 3:
                raise  # e.g. an unreachable server: no point in waiting
            time.sleep(attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")


def open_study(
    *, name: str, storage: optuna.storages.BaseStorage, storage_url: str,
    sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner,
    identity: Mapping[str, Any],
    on_create: Callable[[optuna.Study], None] = lambda study: None,
) -> optuna.Study:
    """Create the study, or load it when it exists and was made with the same IDENTITY; a
    study whose record an older mnist-study wrote is migrated to this version's (record.py).

    ON_CREATE runs in the one process whose storage call created the study (of workers
    started together, one).
    """
    try:  # the storage's unique study name decides which of several workers creates it
        storage.create_new_study([StudyDirection.MINIMIZE], name)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        created = False
    study = optuna.create_study(storage=storage, study_name=name, direction="minimize",
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    if study.direction != StudyDirection.MINIMIZE:
        raise StorageError(f"study {name!r} in {redact(storage_url)} maximises; it was not made "
                           f"by mnist-study. Choose another --study-name")
    study_id = storage.get_study_id_from_name(name)
    stored = stored_identity(study)
    if stored is None:
        system, readable = new_record(identity)
        # The whole identity in one write (a worker starting beside this one must never see
        # half of it), the version after it; then the readable copies for people.
        for key, value in system.items():
            storage.set_study_system_attr(study_id, key, value)
        for key, value in readable.items():
            study.set_user_attr(key, value)
        study.set_metric_names([OBJECTIVE_NAME])
        if created:
            on_create(study)
        return study
    changed = [key for key in identity if stored.get(key) != identity[key]]
    if changed:
        diffs = ", ".join(f"{k}: stored {stored.get(k)!r}, now {identity[k]!r}" for k in changed)
        raise StorageError(
            f"study {name!r} in {redact(storage_url)} was made with other settings ({diffs}); "
            f"resume it with the original settings or choose a new --study-name"
        )
    version = record_version(storage.get_study_system_attrs(study_id))
    if version < RECORD_VERSION:
        system, _ = new_record(stored)  # the migrated identity: what this version records
        for key, value in system.items():
            storage.set_study_system_attr(study_id, key, value)
        logger.info("study %r: its record (version %d) is migrated to version %d", name,
                    version, RECORD_VERSION)
    logger.info("resuming study %r: %d finished trials", name, count_finished(study))
    return study


def check_tracking_store(study: optuna.Study, tracking_uri: str) -> None:
    """A study keeps its MLflow runs, and the checkpoints its final evaluation restores, in one
    tracking store: the first run records it, a resume elsewhere is refused naming it."""
    here = _comparable_uri(tracking_uri)
    stored = study.user_attrs.get(TRACKING_URI_ATTR)
    if stored is None:
        study.set_user_attr(TRACKING_URI_ATTR, here)
        return
    if stored != here:
        raise StorageError(
            f"study {study.study_name!r} keeps its MLflow runs and checkpoints in {stored}, not "
            f"in {here}: pass --tracking-uri {stored} (or set MLFLOW_TRACKING_URI) to resume it, "
            f"or choose a new --study-name")


def _comparable_uri(tracking_uri: str) -> str:
    # A relative SQLite path names another store in another directory: compare absolute paths.
    if tracking_uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking_uri.removeprefix('sqlite:///')).resolve()}"
    return redact(tracking_uri.rstrip("/"))  # recorded in the study: no password


def stored_identity(study: optuna.Study) -> dict[str, Any] | None:
    """The identity STUDY was created with, as this version records it (record.py migrates an
    older record's); None for a study that has none yet."""
    # Optuna shows a study's system attrs through its storage only.
    system = storage_of(study).get_study_system_attrs(study_id(study))
    return read_identity(system, study.user_attrs)


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))
