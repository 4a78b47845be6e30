"""Opening the Optuna storage and creating or resuming a study that matches this run."""

from __future__ import annotations

import importlib.util
import logging
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState

from study.errors import ConfigError, StorageError
from study.redaction import ambiguous_password, redact, redact_text

logger = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
OBJECTIVE_NAME = "val_loss"
# A worker that dies without a word (kill -9, lost machine) stops its heartbeat; after the grace
# period its RUNNING trial is marked FAIL and re-queued with the same parameters.
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120


def open_storage(url: str, *,
                 grace_seconds: float = GRACE_SECONDS) -> optuna.storages.BaseStorage:
    """sqlite:/// or postgresql:// (RDB, with heartbeats) or journal:PATH (several processes)."""
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ConfigError(f"storage {redact(url)!r} is not a URL; use sqlite:///optuna.db, "
                          f"postgresql://user:pass@host/db or journal:path/to/optuna.log")
    if ambiguous_password(url):
        raise ConfigError(f"the password in --storage {redact(url)} holds an unencoded '@' or "
                          f"'/': percent-encode it (%40, %2F), or leave it out of the URL and "
                          f"set PGPASSWORD or ~/.pgpass")
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        return _rdb_storage(_with_driver(url), grace_seconds=grace_seconds)
    except Exception as exc:  # sqlalchemy's errors, a missing driver (ImportError), bad URL...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot open Optuna storage {redact(url)}: "
                           f"{redact_text(reason)}") from exc


def _with_driver(url: str) -> str:
    """postgresql:// names no driver, and SQLAlchemy 2.0 and 2.1 default to different ones
    (psycopg2, psycopg 3): use whichever is installed."""
    if not url.startswith("postgresql://"):
        return url
    driver = next((d for d in ("psycopg", "psycopg2") if importlib.util.find_spec(d)), None)
    return url if driver is None else f"postgresql+{driver}://" + url.removeprefix("postgresql://")


def _rdb_storage(url: str, *, grace_seconds: float) -> RDBStorage:
    # Workers started together on a new database race to create the schema; the losers'
    # CREATE TABLE fails (optuna/optuna#1092). Once the winner has committed, opening works.
    for attempt in range(1, 4):
        try:
            return RDBStorage(
                url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=int(grace_seconds),
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2),
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
) -> optuna.Study:
    """Create the study, or load it when it exists and was made with the same IDENTITY."""
    study = optuna.create_study(storage=storage, study_name=name, direction="minimize",
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    if study.direction != StudyDirection.MINIMIZE:
        raise StorageError(f"study {name!r} in {redact(storage_url)} maximises; it was not made "
                           f"by mnist-study. Choose another --study-name")
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", dict(identity))
        study.set_metric_names([OBJECTIVE_NAME])
        return study
    changed = [key for key in identity if stored.get(key) != identity[key]]
    if changed:
        diffs = ", ".join(f"{k}: stored {stored.get(k)!r}, now {identity[k]!r}" for k in changed)
        raise StorageError(
            f"study {name!r} in {redact(storage_url)} was made with other settings ({diffs}); "
            f"resume it with the original settings or choose a new --study-name"
        )
    logger.info("resuming study %r: %d finished trials", name, count_finished(study))
    return study


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))
