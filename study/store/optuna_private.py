"""Every reach into Optuna's private API, in one module: what may break with an Optuna release.

Optuna does not expose a study's storage and id, a trial's id in its storage, or the table
its heartbeats are written to; liveness (store/liveness.py) and the study record
(store/storage.py) need them. The record's tests run against the oldest and the newest Optuna
that pyproject allows (.ci/oldest-optuna).
"""

from __future__ import annotations

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage behind STUDY (the public BaseStorage API applies to it)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    """TRIAL's id in its storage (its number counts within the study)."""
    return trial._trial_id


def rdb_storage(study: optuna.Study) -> RDBStorage | None:
    """The RDB storage behind STUDY, unwrapped from Optuna's cache; None for another kind."""
    storage = study._storage
    storage = getattr(storage, "_backend", storage)
    return storage if isinstance(storage, RDBStorage) else None


def heartbeat_storage(study: optuna.Study) -> BaseHeartbeat | None:
    """STUDY's storage where it records heartbeats; None where it does not (journal, memory)."""
    storage = study._storage
    if not isinstance(storage, BaseHeartbeat) or storage.get_heartbeat_interval() is None:
        return None
    return storage


def heartbeat_ages(study: optuna.Study, trial_ids: list[int]) -> dict[int, float]:
    """Seconds since each trial's last heartbeat, where the storage records them (RDB)."""
    storage = rdb_storage(study)
    if storage is None or not trial_ids:
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
