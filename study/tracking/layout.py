"""What a study looks like in MLflow: the names, tags and statuses its runs carry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from optuna.trial import TrialState

# The truth about a trial, in MLflow's words.
RUN_STATUS = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAIL: "FAILED",
}
CHECKPOINT_PATH = "checkpoint/model_state.pt"
# A trial's objective as run metrics (step 0), so the runs table and charts sort by it.
OBJECTIVE_METRICS = ("best_val_loss", "best_val_acc", "best_epoch")
# The seed recipe's run (study/run/baseline.py) is no Optuna trial: it takes this number.
BASELINE_NUMBER = -1
# Experiments open in MLflow's classic ML view (runs table, charts), not its GenAI overview.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def finding_tags(findings: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """`optuna.finding.<kind>`: the first such finding's line (with folds, prefixed "fold k:"),
    to filter on in the runs table."""
    folds = {f.get("fold", 1) for f in findings}
    tags: dict[str, str] = {}
    for f in findings:
        prefix = f"fold {f['fold']}: " if len(folds) > 1 else ""
        tags.setdefault(f"optuna.finding.{f['kind']}", prefix + str(f["summary"]))
    return tags


def run_name(number: int) -> str:
    """A trial's run while it runs: 'trial-0017'; the seed recipe's: 'baseline (seed recipe)'."""
    return "baseline (seed recipe)" if number == BASELINE_NUMBER else f"trial-{number:04d}"


def trial_run_name(number: int, state: TrialState, epochs: object = None,
                   stopped: object = None) -> str:
    """'trial-0017 pruned@2' (after epoch 2), 'trial-0018 failed in epoch 1', 'trial-0019
    complete', 'trial-0020 complete, stopped@5' (early stopping): the state readable in the
    runs table, where KILLED and FAILED look alike."""
    label = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
             TrialState.FAIL: "failed"}.get(state, state.name.lower())
    if number == BASELINE_NUMBER:
        return f"baseline (seed recipe) {label}"
    if state == TrialState.COMPLETE and isinstance(stopped, int):
        return f"trial-{number:04d} {label}, stopped@{stopped}"
    if state == TrialState.COMPLETE or not isinstance(epochs, int):
        return f"trial-{number:04d} {label}"
    if state == TrialState.FAIL:  # it stopped inside the epoch after the last one it finished
        return f"trial-{number:04d} failed in epoch {epochs + 1}"
    return f"trial-{number:04d} {label}@{epochs}"
