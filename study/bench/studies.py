"""Sections 2-5: whole studies, each in a fresh process, compared side by side.

One reference study (TPE, fixed seed, N trials, max E epochs) is shared: throughput runs it
with MLflow on against the conventional objective, tracking runs it on and off, pruning runs it
untracked with the median / Hyperband pruner and none. A spec that two sections need runs once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from study.bench.settings import BenchSettings
from study.bench.worker import StudyResult, StudySpec, TrialRecord, run_spec
from study.search.strategy import FIRST_DECISION

logger = logging.getLogger(__name__)

PER_TRIAL_CALLS = ("start_trial", "log_epoch", "save_checkpoint", "end_trial")


class StudyRunner:
    """Builds specs from the settings and runs each distinct one once."""

    def __init__(self, settings: BenchSettings, *, torchvision_root: Path,
                 tracking_uri: str) -> None:
        self.settings = settings
        self.torchvision_root = torchvision_root
        self.tracking_uri = tracking_uri
        self._done: dict[StudySpec, StudyResult] = {}

    def spec(self, *, kind: str = "project", pruner: str = "median", tracking: bool = False,
             **overrides: Any) -> StudySpec:
        s = self.settings
        values: dict[str, Any] = dict(
            kind=kind, n_trials=s.n_trials, max_epochs=s.max_epochs, pruner=pruner,
            seed=s.seed, tracking=tracking, data_dir=str(s.data_dir),
            torchvision_root=str(self.torchvision_root), workdir=str(s.workdir),
            tracking_uri=self.tracking_uri, device=s.device, cpu_threads=s.cpu_threads,
            allow_noncanonical_data=s.allow_noncanonical_data)
        values.update(overrides)
        label = (f"{kind}-{pruner}-{'mlflow' if tracking else 'untracked'}-"
                 f"{values['n_trials']}x{values['max_epochs']}")
        if values.get("target_acc") is not None:
            label += "-target"
        if values.get("rep"):
            label += f"-rep{values['rep']}"
        return StudySpec(label=label, **values)

    def run(self, spec: StudySpec) -> StudyResult:
        if spec not in self._done:
            logger.info("study %s ...", spec.label)
            started = time.perf_counter()
            self._done[spec] = (run_spec(spec) if self.settings.in_process
                                else self._in_subprocess(spec))
            logger.info("study %s: %.0f s", spec.label, time.perf_counter() - started)
        return self._done[spec]

    def _in_subprocess(self, spec: StudySpec) -> StudyResult:
        spec_path = self.settings.workdir / f"{spec.label}.spec.json"
        result_path = self.settings.workdir / f"{spec.label}.result.json"
        spec_path.write_text(json.dumps(dataclasses.asdict(spec), indent=1))
        subprocess.run([sys.executable, "-m", "study.bench.worker", str(spec_path),
                        str(result_path)], check=True)
        return StudyResult.from_json(json.loads(result_path.read_text()))


def create_tracking_store(uri: str, *, in_process: bool) -> float:
    """Seconds to create an empty MLflow store (import + schema migrations), paid once."""
    started = time.perf_counter()
    if in_process:
        from study.tracking import MlflowTracker

        MlflowTracker(uri)
    else:
        subprocess.run([sys.executable, "-c", "import sys; from study.tracking import "
                        "MlflowTracker; MlflowTracker(sys.argv[1])", uri], check=True)
    return time.perf_counter() - started


def throughput(runner: StudyRunner) -> dict[str, Any]:
    project = runner.run(runner.spec(tracking=True))
    conventional = runner.run(runner.spec(
        kind="conventional", timeout_s=runner.settings.conventional_budget_s))
    n = min(len(project.trials), len(conventional.trials))
    rows = {"project": _prefix(project, n), "conventional": _prefix(conventional, n)}
    # The other fair view: what the project found in the time the conventional study took.
    in_time = [t for t in project.trials if t.end_s <= conventional.search_s]
    best_in_time = _best(in_time)
    return {
        "compared_trials": n,
        "conventional_budget_s": runner.settings.conventional_budget_s,
        "rows": rows,
        "equal_time": {"seconds": conventional.search_s, "project_trials": len(in_time),
                       "project_best_val_acc": best_in_time.best_val_acc if best_in_time
                       else None},
        "speedup_trials_per_min": _ratio(rows["project"]["trials_per_min"],
                                         rows["conventional"]["trials_per_min"]),
        "project_full": _summary(project),
        "conventional_full": _summary(conventional),
    }


def tracking(runner: StudyRunner) -> dict[str, Any]:
    # On, off, off, on, ...: a load that rises or falls over the run hits both sides alike.
    ons: list[StudyResult] = []
    offs: list[StudyResult] = []
    for rep in range(runner.settings.tracking_reps):
        order = (True, False) if rep % 2 == 0 else (False, True)
        for tracked in order:
            result = runner.run(runner.spec(tracking=tracked, rep=rep))
            (ons if tracked else offs).append(result)
    on_search, off_search = sum(r.search_s for r in ons), sum(r.search_s for r in offs)
    # The search minus the epochs: with identical trials, tracking is the difference between
    # the two, free of the noise that other processes add to the training itself.
    outside_on = sum(r.search_s - (r.epoch_seconds or 0.0) for r in ons)
    outside_off = sum(r.search_s - (r.epoch_seconds or 0.0) for r in offs)
    per_trial = sum(r.tracker_calls.get(name, [0, 0])[1] for r in ons for name in PER_TRIAL_CALLS)
    first = ons[0]
    return {
        "on": [_summary(r) for r in ons], "off": [_summary(r) for r in offs],
        "same_trials": len({tuple(t.epochs for t in r.trials) for r in ons + offs}) == 1,
        "search_overhead_pct": _pct(on_search, off_search),
        "total_overhead_pct": _pct(sum(r.total_s for r in ons), sum(r.total_s for r in offs)),
        "outside_epochs_s": {"on": outside_on, "off": outside_off},
        "outside_epochs_overhead_pct": 100 * (outside_on - outside_off) / off_search,
        "per_trial_calls_s": per_trial,
        "per_trial_calls_pct_of_search": 100 * per_trial / on_search,
        "calls": {name: {"count": int(c), "seconds": s} for name, (c, s) in
                  sorted(first.tracker_calls.items())},
    }


def pruning(runner: StudyRunner) -> dict[str, Any]:
    rows = {p: _summary(runner.run(runner.spec(pruner=p))) for p in ("median", "hyperband",
                                                                     "none")}
    base = rows["none"]
    for name in ("median", "hyperband"):
        row = rows[name]
        row["epochs_saved_pct"] = 100 * (1 - row["epochs_trained"] / base["epochs_trained"])
        row["wall_saved_pct"] = 100 * (1 - row["search_s"] / base["search_s"])
        row["best_val_loss_vs_none_pct"] = _pct(row["best_val_loss"], base["best_val_loss"])
    return {"rows": rows, "first_decision_epoch": FIRST_DECISION}


def target(runner: StudyRunner) -> dict[str, Any]:
    s = runner.settings
    result = runner.run(runner.spec(
        tracking=True, n_trials=s.target_trials, max_epochs=s.target_max_epochs,
        timeout_s=s.target_budget_s, target_acc=s.target_acc))
    return {"target_acc": s.target_acc, "budget_s": s.target_budget_s,
            "hit": result.target, "study": _summary(result)}


def _summary(result: StudyResult) -> dict[str, Any]:
    states = [t.state for t in result.trials]
    best = _best(result.trials)
    return {
        "label": result.spec.label, "kind": result.spec.kind, "pruner": result.spec.pruner,
        "tracking": result.spec.tracking, "n_trials": result.spec.n_trials,
        "max_epochs": result.spec.max_epochs, "finished": len(result.trials),
        "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"),
        "epochs_trained": sum(t.epochs for t in result.trials),
        "setup_s": result.setup_s, "search_s": result.search_s,
        "finalize_s": result.finalize_s, "total_s": result.total_s,
        "trials_per_min": 60 * len(result.trials) / result.search_s,
        "best_val_loss": best.best_val_loss if best else None,
        "best_val_acc": best.best_val_acc if best else None,
        "max_val_acc": max((t.best_val_acc or 0.0 for t in result.trials), default=None),
        "peak_rss_mb": result.peak_rss_mb, "peak_gpu_mb": result.peak_gpu_mb,
        "epoch_seconds": result.epoch_seconds,
    }


def _prefix(result: StudyResult, n: int) -> dict[str, Any]:
    """The study's first N finished trials: how long they took and the best among them."""
    first = sorted(result.trials, key=lambda t: t.end_s)[:n]
    seconds = first[-1].end_s if first else math.nan
    best = _best(first)
    return {
        "label": result.spec.label, "trials": n, "search_s": seconds,
        "setup_s": result.setup_s, "trials_per_min": 60 * n / seconds if n else math.nan,
        "epochs_trained": sum(t.epochs for t in first),
        "best_val_loss": best.best_val_loss if best else None,
        "best_val_acc": best.best_val_acc if best else None,
        "peak_rss_mb": result.peak_rss_mb, "peak_gpu_mb": result.peak_gpu_mb,
    }


def _best(trials: list[TrialRecord]) -> TrialRecord | None:
    """The study's best trial: lowest validation loss among the complete ones."""
    complete = [t for t in trials if t.state == "COMPLETE" and t.best_val_loss is not None]
    return min(complete, key=lambda t: t.best_val_loss or math.inf, default=None)


def _pct(value: float | None, reference: float | None) -> float | None:
    if value is None or not reference:
        return None
    return 100 * (value - reference) / reference


def _ratio(a: float, b: float) -> float | None:
    return a / b if b and math.isfinite(a) and math.isfinite(b) else None
