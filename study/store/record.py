"""What a study keeps in Optuna's storage beside its trials: its identity (the settings every
run of it must share, storage.open_study compares them), the evaluated result (kept by
result.py) and the seed recipe's baseline (kept by baseline.py). Their keys and readers live
here, on Optuna alone, so that reading a study (`mnist-study report`) loads no torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import optuna

from study.config import StudyConfig
from study.search.search_space import SearchSpace

# The settings a resumed study must share with the run that created it: identity key -> the
# StudyConfig fields it is made of.
IDENTITY_FIELDS: Mapping[str, tuple[str, ...]] = {
    "model": ("model",), "hidden": ("hidden",), "max_epochs": ("max_epochs",),
    "seed": ("seed",), "val_fraction": ("val_fraction",), "cv_folds": ("cv_folds",),
    "search_space": ("search_space",),
    "early_stopping": ("early_stopping_patience", "early_stopping_min_delta"),
    "prune_diagnosed": ("prune_diagnosed",), "warm_start": ("warm_start",),
}
# What a setting of the identity was in a study made before it was recorded there.
IDENTITY_BEFORE_RECORDED = {"early_stopping": [0, 0.0], "prune_diagnosed": False,
                            "warm_start": False,
                            "search_space": {"norms": ["none"], "augments": ["none"]}}

RESULT_ATTR = "result"  # the best trial's one test-set evaluation, for reruns to show
BASELINE_ATTR = "baseline"  # the seed recipe's validation scores on the study's split
# A trial's findings with all their evidence, an artifact of its MLflow run: they can outgrow
# a tag (8,000 characters) and a dashboard row (the user attrs keep the kinds and one line;
# each kind's first line is a tag of its own). The trackers write it, the report reads it.
FINDINGS_ARTIFACT = "findings.json"


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
    stored = with_recorded_since(stored, IDENTITY_BEFORE_RECORDED)
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
