"""Human-readable summaries of a study, printed by the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from study.store.redaction import redact

if TYPE_CHECKING:
    from study.store.result import StudySummary


def format_summary(s: StudySummary) -> str:
    counts = ", ".join(f"{n} {state}" for state, n in sorted(s.state_counts.items()))
    width = max(len(k) for k in s.best_params)
    params = "\n".join(f"    {k:<{width}}  {_fmt(v)}" for k, v in sorted(s.best_params.items()))
    how = (f"mean of the best trial's {s.cv_folds} fold models, restored" if s.cv_folds
           else "best trial's weights restored") + ", test set read once"
    lines = [
        f"study {s.study_name!r} in {redact(s.storage)}: {counts} "
        f"({s.trials_run_now} run now, {s.seconds:.0f} s on {s.device})",
        f"best trial #{s.best_trial}:",
        params,
        f"  best val loss      {s.best_val_loss:.4f}",
        f"  best val accuracy  {s.best_val_acc:.2%}",
        f"  TEST accuracy      {s.test.test_acc:.2%}  (loss {s.test.test_loss:.4f}; {how})",
    ]
    if s.baseline:
        lines.append(f"  {baseline_line(s.baseline)}")
    if s.mlflow_parent_run_id:
        lines.append(f"MLflow parent run: {s.mlflow_parent_run_id}")
    if s.registered_model:
        lines.append(f"registered model: {s.registered_model}")
    lines += s.notes
    return "\n".join(lines)


def baseline_line(baseline: Mapping[str, Any]) -> str:
    """The seed recipe beside the best trial, in one line (console and the parent run)."""
    return (f"seed recipe (baseline, SGD lr 0.05, StepLR 5/0.5, batch 64): val accuracy "
            f"{baseline['val_acc']:.2%}, val loss {baseline['val_loss']:.4f}")


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
