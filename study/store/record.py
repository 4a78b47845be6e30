"""The study record: what a study keeps in Optuna's storage beside its trials' parameters and
values, and the one owner of its keys.

- Its identity: the settings every run of it must share (storage.open_study compares them),
  kept whole in a study system attr and, for people, one user attr per setting.
- The record's version, and the one migration (`migrate`) that brings an identity recorded
  by an older mnist-study to this version's shape.
- The evaluated result (store/result.py), the seed recipe's baseline (run/baseline.py), the
  tracking store it logs to, each worker's liveness record (store/liveness.py).
- Every user attribute a trial carries: its MLflow run, its worker, the warm start's marks and
  the summary the objective writes when the trial stops.

It imports neither torch nor (but to type) Optuna: reading a study (`mnist-study report`)
stays light, and the console, which the command-line parser loads, reads its keys.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from study.config import StudyConfig
from study.errors import StorageError
from study.search.search_space import SearchSpace, as_stored
from study.search.warm_start import UNJUDGED, fitted, recipes

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

# --- the study's attributes ------------------------------------------------------------------
IDENTITY_SYSTEM_ATTR = "mnist_study.identity"  # the whole identity, one write (system attr)
RECORD_VERSION_ATTR = "mnist_study.record_version"  # system attr; absent: version 1
IDENTITY_PREFIX = "identity."  # a readable user attr per setting: identity.seed ...
RESULT_ATTR = "result"  # the best trial's one test-set evaluation, for reruns to show
BASELINE_ATTR = "baseline"  # the seed recipe's validation scores on the study's split
TRACKING_URI_ATTR = "tracking_uri"  # the study's MLflow store, redacted
SPOOLED_RUNS_ATTR = "mlflow_spooled_runs"  # spooled run id -> the id MLflow gave it on sync
WORKER_PREFIX = "worker."  # a process's liveness record: worker.<its MLflow parent run id>
# Provenance, written by each run as it starts (run/runner.py), read by people and the report:
CODE_VERSION_ATTR = "code_version"
PACKAGE_VERSIONS_ATTR = "package_versions"
DATA_FINGERPRINT_ATTR = "data_fingerprint"
SPLIT_FINGERPRINT_ATTR = "split_fingerprint"
SPLIT_SEED_ATTR = "split_seed"
VAL_FRACTION_ATTR = "val_fraction"
CV_FOLDS_ATTR = "cv_folds"
DEVICE_ATTR = "device"  # the device of the run that started last; on a trial: the one it ran on
MATMUL_PRECISION_ATTR = "matmul_precision"  # torch.set_float32_matmul_precision of that run
AUDIT_ATTR = "audit"  # the leakage audit's summary

# --- a trial's attributes --------------------------------------------------------------------
MLFLOW_RUN_ID_ATTR = "mlflow_run_id"
WORKER_ATTR = "worker"  # the MLflow parent run id of the process that runs it
WARM_START_ATTR = "warm_start"  # on an enqueued recipe: which one, and what was moved
# A trial enqueued with this attr (the warm start's fast start) is never judged: it trains to
# its end or to early stopping, and as successive halving's rungs hold the values of the
# trials it judged, its losses enter none, where a schedule far steeper than the space's would
# set a bar that no trial annealing over --max-epochs meets at the same epoch. (The median
# pruner counts it once it completes: one trial's values among many.)
UNJUDGED_ATTR = "unjudged"
# What the objective records when a trial stops (run/objective.py, Objective.stop):
EPOCHS_TRAINED_ATTR = "epochs_trained"
DIAGNOSIS_ATTR = "diagnosis"  # the curves read as one line
FINDINGS_ATTR = "findings"  # the detectors' kinds, comma-separated; "none"
FLUCTUATION_RATIO_ATTR = "fluctuation_ratio"  # of the last fold (diagnose/detectors.py)
FINAL_GAP_ATTR = "final_gap"  # validation minus training loss at the last fold's last epoch
BEST_VAL_LOSS_ATTR = "best_val_loss"  # what Optuna saw: the folds' mean, or the best epoch's
BEST_VAL_ACC_ATTR = "best_val_acc"
BEST_EPOCH_ATTR = "best_epoch"  # holdout
STOPPED_EPOCH_ATTR = "stopped_epoch"  # holdout: where early stopping or the budget ended it
STOPPED_BY_ATTR = "stopped_by"  # "time budget" where the budget did
FOLDS_DONE_ATTR = "folds_done"  # cross-validation
FOLD_VAL_LOSSES_ATTR = "fold_val_losses"
FOLD_BEST_EPOCHS_ATTR = "fold_best_epochs"
FOLD_STOPPED_EPOCHS_ATTR = "fold_stopped_epochs"  # per fold: early stopping's epoch, or 0
FAIL_REASON_ATTR = "fail_reason"
# Trials recorded before findings.json kept their findings' evidence in this attr.
FINDINGS_DETAIL_ATTR = "findings_detail"
# A trial's findings with all their evidence, an artifact of its MLflow run: they can outgrow
# a tag (8,000 characters) and a dashboard row (the user attrs keep the kinds and one line;
# each kind's first line is a tag of its own). The trackers write it, the report reads it.
FINDINGS_ARTIFACT = "findings.json"

# --- the identity ----------------------------------------------------------------------------
# The settings a resumed study must share with the run that created it: identity key -> the
# StudyConfig fields it is made of.
IDENTITY_FIELDS: Mapping[str, tuple[str, ...]] = {
    "model": ("model",), "hidden": ("hidden",), "max_epochs": ("max_epochs",),
    "seed": ("seed",), "val_fraction": ("val_fraction",), "cv_folds": ("cv_folds",),
    "search_space": ("search_space",),
    "early_stopping": ("early_stopping_patience", "early_stopping_min_delta"),
    "prune_diagnosed": ("prune_diagnosed",), "warm_start": ("warm_start",),
}

# Version 1: studies made before the record had a version. Their identity may sit in the user
# attr "identity" (before it moved to a system attr) and lack the settings recorded since,
# which they were made with as IDENTITY_BEFORE_RECORDED says.
# Version 2: a version attr, and every IDENTITY_FIELDS setting recorded.
RECORD_VERSION = 2
_V1_IDENTITY_ATTR = "identity"
IDENTITY_BEFORE_RECORDED = {"early_stopping": [0, 0.0], "prune_diagnosed": False,
                            "warm_start": False,
                            "search_space": {"norms": ["none"], "augments": ["none"]}}


def new_record(identity: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new study's record of IDENTITY: (system attrs, user attrs). The system attrs hold it
    whole, what resuming workers compare against; the user attrs are readable copies, one per
    setting (and per range of the search space: `identity.search_space.lr`), which fit
    optuna-dashboard's cards where one JSON object of them all overflowed."""
    readable: dict[str, Any] = {}
    for key, value in identity.items():
        if isinstance(value, Mapping):
            readable.update({f"{IDENTITY_PREFIX}{key}.{k}": v for k, v in value.items()})
        else:
            readable[f"{IDENTITY_PREFIX}{key}"] = value
    return ({IDENTITY_SYSTEM_ATTR: dict(identity), RECORD_VERSION_ATTR: RECORD_VERSION},
            readable)


def record_version(system_attrs: Mapping[str, Any]) -> int:
    """The version of a study's record, from its system attrs; a newer one than this
    mnist-study reads is refused."""
    version = int(system_attrs.get(RECORD_VERSION_ATTR, 1))
    if version > RECORD_VERSION:
        raise StorageError(f"the study's record is version {version}, written by a newer "
                           f"mnist-study (this one reads up to {RECORD_VERSION}): upgrade "
                           f"mnist-study to open it")
    return version


def read_identity(system_attrs: Mapping[str, Any], user_attrs: Mapping[str, Any],
                  ) -> dict[str, Any] | None:
    """The identity a study was made with, as this version records it; None for a study that
    has none yet."""
    version = record_version(system_attrs)
    stored = system_attrs.get(IDENTITY_SYSTEM_ATTR)
    if stored is None and version == 1:
        stored = user_attrs.get(_V1_IDENTITY_ATTR)
    return None if stored is None else migrate(stored, version)


def migrate(identity: Mapping[str, Any], version: int) -> dict[str, Any]:
    """IDENTITY as recorded at VERSION, in this version's shape: the one place that knows
    what older records lack."""
    migrated = dict(identity)
    if version < 2:
        migrated = with_recorded_since(migrated, IDENTITY_BEFORE_RECORDED)
    return migrated


def enqueue_warm_start(study: optuna.Study, space: SearchSpace, model: str, *,
                       max_epochs: int) -> list[str]:
    """Enqueue MODEL's recipes that SPACE holds, once per study; the names enqueued."""
    if study.get_trials(deepcopy=False):
        return []  # a resumed study (or another worker's, which enqueued them already)
    names = []
    for name, recipe in recipes(model).items():
        fit = fitted(recipe, space, max_epochs=max_epochs)
        if fit is None:
            logger.info("warm start: the search space does not hold the %s; not enqueued", name)
            continue
        hp, moved = fit
        label = name + (f" ({', '.join(moved)})" if moved else "")
        attrs: dict[str, object] = {WARM_START_ATTR: label}
        if name in UNJUDGED:
            attrs[UNJUDGED_ATTR] = True
        # skip_if_exists: a worker started beside this one may have enqueued it already.
        study.enqueue_trial(as_stored(hp.as_params(), space), skip_if_exists=True,
                            user_attrs=attrs)
        names.append(name)
    return names


def judged(trial: optuna.trial.BaseTrial | optuna.trial.FrozenTrial) -> bool:
    """Whether the pruner may stop TRIAL (and so see its values at a rung)."""
    return not trial.user_attrs.get(UNJUDGED_ATTR, False)


def stored_baseline(study: optuna.Study) -> dict[str, Any] | None:
    """The seed recipe's stored scores, or None when the study trained none."""
    baseline = study.user_attrs.get(BASELINE_ATTR)
    return dict(baseline) if isinstance(baseline, dict) else None


def settings_identity(config: StudyConfig) -> dict[str, Any]:
    """CONFIG's identity (JSON-comparable): what a resumed study must share with its first run."""
    return {key: _identity_value(config, key) for key in IDENTITY_FIELDS}


def adopt_stored_settings(config: StudyConfig, stored: Mapping[str, Any] | None,
                          ) -> tuple[StudyConfig, list[str]]:
    """CONFIG with the STORED identity's settings wherever the user gave none (config.given),
    and the identity keys it took. A study searches what it was made to search: a default
    that changed since (a scheduler added to the space, say) must not refuse its resume, nor
    change what its later trials search. A setting the user gave is compared, not adopted."""
    if stored is None or config.given is None:
        return config, []
    taken: dict[str, Any] = {}
    adopted = []
    for key, fields in IDENTITY_FIELDS.items():
        if key not in stored or config.given & set(fields) \
                or stored[key] == _identity_value(config, key):
            continue
        if key == "search_space":
            taken["search_space"] = SearchSpace.from_mapping(stored[key],
                                                             source="the stored study")
        else:
            values = stored[key] if len(fields) > 1 else [stored[key]]
            taken.update(zip(fields, values, strict=True))
        adopted.append(key)
    return (dataclasses.replace(config, **taken) if taken else config), adopted


def with_recorded_since(stored: Mapping[str, Any], since: Mapping[str, Any]) -> dict[str, Any]:
    """STORED, with what SINCE says a setting was before it was recorded, where STORED lacks
    it (inside tables too: a search space made before it had `norms`)."""
    merged = dict(stored)
    for key, value in since.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, Mapping) and isinstance(merged[key], Mapping):
            merged[key] = with_recorded_since(merged[key], value)
    return merged


def _identity_value(config: StudyConfig, key: str) -> Any:
    if key == "search_space":
        return config.search_space.as_dict()
    values = [getattr(config, name) for name in IDENTITY_FIELDS[key]]
    return values[0] if len(values) == 1 else values
