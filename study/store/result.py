"""A study's evaluated result, kept in the study so that a rerun can show it without a look at
the test set: the promise is that the test set is read once."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from study.search.search_space import hyperparams_from_params
from study.store.record import BEST_VAL_ACC_ATTR, IDENTITY_FIELDS, RESULT_ATTR, stored_baseline
from study.store.storage import stored_identity


@dataclass(frozen=True)
class Evaluation:
    """The best trial's test score. Its fields are stored in the study: rename none."""

    trial_number: int
    test_loss: float
    test_acc: float
    restored_val_loss: float  # the restored weights re-scored on val: proves the restore
    test_size: int = 0  # images in the test set (its confidence interval); 0: not recorded


@dataclass(frozen=True)
class StudySummary:
    """What a `run` prints and publishes: the study's states, its best trial and that trial's
    one test-set evaluation."""

    study_name: str
    storage: str
    state_counts: dict[str, int]
    best_trial: int
    best_params: dict[str, Any]
    best_val_loss: float
    best_val_acc: float
    test: Evaluation
    device: str
    trials_run_now: int
    seconds: float
    mlflow_parent_run_id: str = ""
    cv_folds: int | None = None
    registered_model: str = ""  # models:/NAME/VERSION of the best trial's model, if logged
    baseline: dict[str, Any] | None = None  # the seed recipe's scores (study/run/baseline.py)
    notes: list[str] = field(default_factory=list)



def store_result(study: optuna.Study, summary: StudySummary) -> None:
    """Keep SUMMARY's evaluation in STUDY (user attr `result`), for reruns to show."""
    study.set_user_attr(RESULT_ATTR, {
        "best_trial": summary.best_trial, "test": dataclasses.asdict(summary.test),
        "device": summary.device, "mlflow_parent_run_id": summary.mlflow_parent_run_id,
        "registered_model": summary.registered_model,
        "finished_trials": sum(summary.state_counts.get(s.name, 0) for s in
                               (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)),
    })


def evaluated_result(study: optuna.Study, *, n_trials: int, identity: dict[str, Any],
                     ) -> dict[str, Any] | None:
    """The stored result, when STUDY is finished (N_TRIALS, nothing running or queued), was
    evaluated with its present best trial, and was made with IDENTITY's settings (those it
    does not record had their RECORDED_SINCE values)."""
    result = study.user_attrs.get(RESULT_ATTR)
    stored = stored_identity(study) or {}
    if result is None or any(stored.get(k) != identity.get(k) for k in IDENTITY_FIELDS):
        return None
    states = Counter(t.state for t in study.get_trials(deepcopy=False))
    finished = states[TrialState.COMPLETE] + states[TrialState.PRUNED] + states[TrialState.FAIL]
    if finished < n_trials or states[TrialState.RUNNING] or states[TrialState.WAITING]:
        return None
    if finished != result.get("finished_trials") or study.best_trial.number != \
            result["best_trial"]:
        return None  # more trials ran since the evaluation (another worker's)
    return dict(result)


def summary_from_result(study: optuna.Study, result: dict[str, Any], *, storage: str,
                        cv_folds: int | None, seconds: float) -> StudySummary:
    best = study.best_trial
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return StudySummary(
        study_name=study.study_name, storage=storage, state_counts=dict(counts),
        best_trial=best.number, best_params=hyperparams_from_params(best.params).as_params(),
        best_val_loss=float(best.values[0]), best_val_acc=float(best.user_attrs[BEST_VAL_ACC_ATTR]),
        test=Evaluation(**result["test"]), device=str(result["device"]), trials_run_now=0,
        seconds=seconds, mlflow_parent_run_id=str(result["mlflow_parent_run_id"]),
        cv_folds=cv_folds, registered_model=str(result["registered_model"]),
        baseline=stored_baseline(study),
        notes=[f"the study was finished: nothing ran now and no test data was read; these are "
               f"the results its evaluation stored (MLflow parent run "
               f"{result['mlflow_parent_run_id']})"])
