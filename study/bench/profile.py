"""Section 6: where one trial's time goes, by torch op and by Python function.

The trial is a real one: SQLite Optuna storage, the MLflow tracker, the project's objective.
It runs four times with the same parameters: a warm-up, clocked (epochs vs tracking vs the
rest), under torch.profiler (ops), under cProfile (Python functions, MLflow and Optuna
included). A last
check times the fix the profile called for: fused vs for-loop optimizer steps.
"""

from __future__ import annotations

import cProfile
import logging
import math
import pstats
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import optuna
import torch
from torch.nn import functional as F
from torch.profiler import ProfilerActivity, profile

import models
from data_pipeline import SearchData, find_mnist, prepare_search_data
from study.bench.settings import REFERENCE_SPACE, BenchSettings
from study.bench.timing import StudyClock, TimedTracker
from study.config import StudyConfig
from study.run.objective import make_objective
from study.search.search_space import as_stored
from study.search.strategy import make_pruner, make_sampler
from study.store.storage import open_storage
from study.tracking import MlflowTracker, Tracker
from study.train.engine_types import Hyperparams
from study.train.training import build_optimizer

logger = logging.getLogger(__name__)

TOP = 12
FUSED_REPS = 3


def trial_params(batch_size: int) -> dict[str, Any]:
    """A typical winning region of the search: Adam, cosine schedule, some dropout."""
    return {"optimizer": "adam", "scheduler": "cosine", "lr": 1e-3, "batch_size": batch_size,
            "dropout": 0.2, "weight_decay": 1e-5}


def run(settings: BenchSettings, *, tracking_uri: str) -> dict[str, Any]:
    device = torch.device(settings.device)
    config = StudyConfig(study_name="profile", max_epochs=settings.profile_epochs,
                         seed=settings.seed, tracking_uri=tracking_uri, device=settings.device,
                         search_space=REFERENCE_SPACE, warm_start=False,
                         early_stopping_patience=0)
    files = find_mnist(settings.data_dir, verify=not settings.allow_noncanonical_data)
    assert files is not None, f"no MNIST in {settings.data_dir}"
    data = prepare_search_data(files, val_fraction=config.val_fraction, seed=config.seed,
                               device=device)
    clock = StudyClock(origin=time.perf_counter())
    tracker = TimedTracker(MlflowTracker(tracking_uri), clock=clock, target_acc=None)
    tracker.start_study(study_name=config.study_name, params={}, tags={})
    study = optuna.create_study(
        storage=open_storage(f"sqlite:///{settings.workdir / 'profile.optuna.db'}"),
        sampler=make_sampler("tpe", seed=config.seed, n_trials=1),
        pruner=make_pruner("median", max_epochs=config.max_epochs))
    objective = make_objective(config, data, cast(Tracker, tracker))
    params = trial_params(settings.profile_batch_size)

    def one_trial() -> None:
        study.enqueue_trial(as_stored(params, config.search_space))
        study.optimize(objective, n_trials=1)

    # The first trial of a process also pays one-off costs (torch._dynamo is imported by the
    # first optimizer); a study amortises them, so they are reported apart.
    warmup = _clocked_trial(one_trial, clock)
    breakdown = _clocked_trial(one_trial, clock)
    ops = _torch_profile(one_trial, device)
    functions = _python_profile(one_trial)
    tracker.end_study(status="FINISHED")
    return {"params": params, "epochs": config.max_epochs, "trial": breakdown, "warmup": warmup,
            "top_ops": ops, "top_functions": functions,
            "fused_optimizer": _fused_check(data, settings)}


def _clocked_trial(one_trial: Callable[[], None], clock: StudyClock) -> dict[str, float]:
    calls_before = sum(s for _, s in clock.calls.values())
    started = time.perf_counter()
    epochs_before = _epoch_seconds(clock)
    one_trial()
    total = time.perf_counter() - started
    tracking = sum(s for _, s in clock.calls.values()) - calls_before
    epochs = _epoch_seconds(clock) - epochs_before
    return {"total_s": total, "epochs_s": epochs, "tracking_s": tracking,
            "other_s": total - epochs - tracking}


def _epoch_seconds(clock: StudyClock) -> float:
    return sum(trial.epoch_seconds for trial in clock.trials.values())


def _torch_profile(one_trial: Callable[[], None], device: torch.device) -> list[dict[str, Any]]:
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        one_trial()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
             "self_cpu_pct": 100 * e.self_cpu_time_total / total,
             "cpu_total_ms": e.cpu_time_total / 1e3,
             "device_ms": getattr(e, "self_device_time_total", 0.0) / 1e3}
            for e in events[:TOP]]


def _python_profile(one_trial: Callable[[], None]) -> list[dict[str, Any]]:
    profiler = cProfile.Profile()
    profiler.runcall(one_trial)
    stats = pstats.Stats(profiler)
    rows = []
    entries = cast(dict[tuple[str, int, str], tuple[Any, ...]], stats.stats)  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1.0
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in sorted(
            entries.items(), key=lambda kv: kv[1][2], reverse=True)[:TOP]:
        rows.append({"function": f"{_short(filename)}:{line}({name})", "calls": ncalls,
                     "self_s": tottime, "self_pct": 100 * tottime / total,
                     "cumulative_s": cumtime})
    return rows


def _short(filename: str) -> str:
    parts = Path(filename).parts
    for anchor in ("site-packages", "main"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1:])
    return filename


def _fused_check(data: SearchData, settings: BenchSettings) -> dict[str, Any]:
    """Adam, batch 64: the seconds of one epoch's optimizer steps, torch's default for-loop
    step against the fused one the engine builds (build_optimizer), interleaved. The same
    gradients feed both: what differs is the update alone."""
    hp = Hyperparams(**{**trial_params(settings.profile_batch_size), "scheduler": "none"})
    fold = data.fold(0)
    steps = math.ceil(len(fold.train) / hp.batch_size)
    seconds: dict[str, list[float]] = {"for-loop": [], "fused": []}
    for _ in range(FUSED_REPS):
        for name, fused in (("for-loop", False), ("fused", True)):
            torch.manual_seed(settings.seed)
            model = models.build("mlp", hidden=StudyConfig().hidden, dropout=hp.dropout)
            model.to(fold.train.y.device)
            optimizer = build_optimizer(model, hp, fused=fused)
            x, y = fold.train.x[:hp.batch_size], fold.train.y[:hp.batch_size]
            F.cross_entropy(model(x), y).backward()
            started = time.perf_counter()
            for _ in range(steps):
                optimizer.step()
            seconds[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {"timed": "one epoch's optimizer steps", "seconds": seconds, "median_s": medians,
            "speedup": medians["for-loop"] / medians["fused"]}
