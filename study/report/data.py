"""What the study report shows, gathered from the Optuna study and its MLflow runs.

The Optuna storage holds the trials, their parameters, per-epoch validation losses, findings
(study/diagnose/detectors.py) and the evaluated result; MLflow holds the training curves and the
leakage audit. Without MLflow (unreachable, or another store) the report still renders from
the study alone and says what is missing.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.report.verdicts import Z_95
from study.store.record import (
    FINDINGS_ARTIFACT,
    FINDINGS_ATTR,
    FINDINGS_DETAIL_ATTR,
    MLFLOW_RUN_ID_ATTR,
    RESULT_ATTR,
    stored_baseline,
)
from study.store.redaction import redact, redact_text

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

TOP_TRIALS = 3  # learning curves of the best few trials
DIAGNOSED_TRIALS = 6  # and of this many diagnosed ones, one per kind first
CURVES = ("train_loss", "val_loss", "val_acc", "lr_now")
AUDIT_JSON, AUDIT_PICTURE = "audit/audit.json", "audit/closest_pairs.png"


@dataclass
class ReportData:
    study: optuna.Study
    storage: str  # redacted
    trials: list[FrozenTrial]  # every trial, in number order
    result: dict[str, Any] | None  # the evaluated result (study/store/result.py), if evaluated
    baseline: dict[str, Any] | None
    curves: dict[int, dict[str, list[tuple[int, float]]]]  # trial -> metric -> (epoch, value)
    shown: list[int]  # the trials whose curves are drawn: the top ones, then diagnosed ones
    importances: dict[str, float] | None
    audit: dict[str, Any] | None
    audit_picture: bytes | None
    # trial -> its findings with their evidence (the run's findings.json), for the shown trials
    findings: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why

    @property
    def finished(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]

    @property
    def complete(self) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state == TrialState.COMPLETE]

    @property
    def best(self) -> FrozenTrial | None:
        done = self.complete
        return min(done, key=lambda t: t.values[0]) if done else None


def collect(study: optuna.Study, *, storage: str, client: MlflowClient | None,
            result: dict[str, Any] | None = None) -> ReportData:
    """Everything the report needs from STUDY and (when CLIENT is given) its MLflow runs.
    RESULT: the evaluation, where the study does not hold it yet (`run` writes the report
    before it stores the result)."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    data = ReportData(study=study, storage=redact(storage), trials=trials,
                      result=result or study.user_attrs.get(RESULT_ATTR),
                      baseline=stored_baseline(study),
                      curves={}, shown=shown_trials(trials), importances=None, audit=None,
                      audit_picture=None)
    data.importances = _importances(study, data.notes)
    # Studies recorded before findings.json kept the evidence in a user attr.
    data.findings = {n: list(trials[_index(trials, n)].user_attrs.get(FINDINGS_DETAIL_ATTR, []))
                     for n in data.shown}
    if client is None:
        data.notes.append("no MLflow store given: curves show validation loss only, the "
                          "findings' evidence and the leakage audit are not shown")
        data.curves = _validation_curves(trials, data.shown)
        return data
    try:
        data.curves = {n: _history(client, trials[_index(trials, n)], data.notes)
                       for n in data.shown}
        for n in data.shown:
            data.findings[n] = (_findings(client, trials[_index(trials, n)])
                                or data.findings[n])
        data.audit, data.audit_picture = _audit(client, study, data.result)
    except Exception as exc:  # noqa: BLE001 - the report still renders from the study alone
        reason = redact_text(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__
        data.notes.append(f"MLflow could not be read ({reason}): curves show validation loss "
                          f"only")
        data.curves = _validation_curves(trials, data.shown)
    return data


def shown_trials(trials: list[FrozenTrial]) -> list[int]:
    """The top TOP_TRIALS complete trials, then up to DIAGNOSED_TRIALS diagnosed ones: first
    one of each finding kind (the study's variety), then the rest in trial order."""
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE),
                      key=lambda t: t.values[0])
    shown = [t.number for t in complete[:TOP_TRIALS]]
    diagnosed = [t for t in trials if kinds_of(t) and t.number not in shown]
    seen: set[str] = set()
    first_of_kind = []
    for t in diagnosed:
        kinds = set(kinds_of(t))
        if kinds - seen:
            first_of_kind.append(t.number)
            seen |= kinds
    rest = [t.number for t in diagnosed if t.number not in first_of_kind]
    return shown + (first_of_kind + rest)[:DIAGNOSED_TRIALS]


def kinds_of(trial: FrozenTrial) -> list[str]:
    """The kinds of TRIAL's findings, from its `findings` user attr ("none": no kind)."""
    kinds = str(trial.user_attrs.get(FINDINGS_ATTR, "none"))
    return [] if kinds == "none" else [k.strip() for k in kinds.split(",")]


def wilson_interval(accuracy: float, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of an accuracy measured on N images."""
    centre = (accuracy + Z_95 ** 2 / (2 * n)) / (1 + Z_95 ** 2 / n)
    half = Z_95 * math.sqrt(accuracy * (1 - accuracy) / n + Z_95 ** 2 / (4 * n * n)) \
        / (1 + Z_95 ** 2 / n)
    return centre - half, centre + half


def _index(trials: list[FrozenTrial], number: int) -> int:
    return next(i for i, t in enumerate(trials) if t.number == number)


def _validation_curves(trials: list[FrozenTrial],
                       shown: list[int]) -> dict[int, dict[str, list[tuple[int, float]]]]:
    """The SHOWN trials' validation losses as Optuna has them: the curves without MLflow."""
    return {n: {"val_loss": sorted(trials[_index(trials, n)].intermediate_values.items())}
            for n in shown}


def _history(client: MlflowClient, trial: FrozenTrial,
             notes: list[str]) -> dict[str, list[tuple[int, float]]]:
    """TRIAL's curves from its MLflow run; where the store has none for it (no run, or a
    store other than the study's), its validation losses from Optuna, and a note says so."""
    run_id = trial.user_attrs.get(MLFLOW_RUN_ID_ATTR)
    # A cross-validated trial's curves are per fold: the first fold's are shown.
    prefix = "fold1/" if "folds_done" in trial.user_attrs else ""
    curves = {metric: sorted((m.step, m.value) for m in
                             client.get_metric_history(run_id, prefix + metric))
              for metric in CURVES} if run_id else {}
    if curves.get("val_loss") or not trial.intermediate_values:
        return curves
    notes.append(f"trial {trial.number}: no curves in the MLflow store; its validation loss "
                 f"is drawn from the Optuna storage")
    return {"val_loss": sorted(trial.intermediate_values.items())}


def _findings(client: MlflowClient, trial: FrozenTrial) -> list[dict[str, Any]]:
    """TRIAL's findings with their evidence, from its run's findings.json; [] when it has none
    (a clean trial, or one recorded before the artifact existed)."""
    run_id = trial.user_attrs.get(MLFLOW_RUN_ID_ATTR)
    if not run_id or not kinds_of(trial):
        return []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = Path(client.download_artifacts(run_id, FINDINGS_ARTIFACT, tmp))
        except Exception:  # noqa: BLE001 - an older trial, or a run of another store
            return []
        return list(json.loads(path.read_text()))


def _audit(client: MlflowClient, study: optuna.Study,
           result: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, bytes | None]:
    """The leakage audit a run of this study logged: the evaluating run's, else the newest."""
    run_id = (result or {}).get("mlflow_parent_run_id") or _newest_parent(client, study)
    if not run_id:
        return None, None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            audit = json.loads(Path(client.download_artifacts(run_id, AUDIT_JSON, tmp))
                               .read_text())
        except Exception:  # noqa: BLE001 - an older run, or none logged: say so, no audit
            return None, None
        try:
            picture = Path(client.download_artifacts(run_id, AUDIT_PICTURE, tmp)).read_bytes()
        except Exception:  # noqa: BLE001 - exact-duplicate audits draw no picture
            picture = None
    return audit, picture


def _newest_parent(client: MlflowClient, study: optuna.Study) -> str | None:
    experiment = client.get_experiment_by_name(study.study_name)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id],
                              filter_string="tags.`mnist_study.role` = 'study'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def _importances(study: optuna.Study, notes: list[str]) -> dict[str, float] | None:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        notes.append("parameter importances need two complete trials at least")
        return None
    varied = {name for t in complete for name in t.params
              if len({repr(u.params.get(name)) for u in complete}) > 1}
    if not varied:
        notes.append("parameter importances: no parameter varies between the complete trials")
        return None
    try:
        # The dashboard's call exactly (PED-ANOVA over the parameters every complete trial
        # has), so the two agree; it is deterministic, the same file twice.
        return dict(optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()))
    except (ValueError, RuntimeError) as exc:
        notes.append(f"parameter importances could not be computed: {exc}")
        return None
