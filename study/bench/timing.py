"""A tracker wrapper that clocks a real study from the outside, without touching the runner.

run_study() calls the tracker at every phase boundary: start_study just before the search,
start_trial / log_epoch / end_trial around each trial, end_study at the very end. Timing those
calls gives the phases of the study, the time spent inside tracking itself, and the moment an
epoch first reaches a target accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from study.tracking import Tracker
from study.train.engine_types import EpochMetrics


@dataclass
class TrialClock:
    number: int
    epochs: int = 0
    epoch_seconds: float = 0.0  # training + validation, as the loop measured them
    end_s: float | None = None  # seconds since the search started


@dataclass
class TargetHit:
    seconds_since_start: float  # since the study process began its work (data loading included)
    seconds_since_search: float
    trial: int
    epoch: int
    val_acc: float


@dataclass
class StudyClock:
    origin: float  # time.perf_counter() when the study's work began
    search_started: float | None = None
    search_ended: float | None = None
    study_ended: float | None = None
    trials: dict[str, TrialClock] = field(default_factory=dict)  # by MLflow run id
    calls: dict[str, list[float]] = field(default_factory=dict)  # name -> [count, seconds]
    target: TargetHit | None = None


class TimedTracker:
    """Delegates to INNER; clocks every call and the study's phases in CLOCK."""

    def __init__(self, inner: Tracker, *, clock: StudyClock, target_acc: float | None) -> None:
        self._inner = inner
        self._target_acc = target_acc
        self.clock = clock

    def start_study(self, **kwargs: Any) -> None:
        self.clock.search_started = time.perf_counter()
        with self._timed("start_study"):
            self._inner.start_study(**kwargs)

    def start_trial(self, **kwargs: Any) -> str:
        with self._timed("start_trial"):
            run_id = self._inner.start_trial(**kwargs)
        self.clock.trials[run_id] = TrialClock(number=int(kwargs["number"]))
        return run_id

    def log_epoch(self, run_id: str, metrics: EpochMetrics, *, prefix: str = "") -> None:
        with self._timed("log_epoch"):
            self._inner.log_epoch(run_id, metrics, prefix=prefix)
        trial = self.clock.trials[run_id]
        trial.epochs = metrics.epoch
        trial.epoch_seconds += metrics.seconds
        self._watch_target(trial.number, metrics)

    def end_trial(self, run_id: str, **kwargs: Any) -> None:
        with self._timed("end_trial"):
            self._inner.end_trial(run_id, **kwargs)
        now = time.perf_counter()
        self.clock.search_ended = now
        self.clock.trials[run_id].end_s = now - self._search_started()

    def end_study(self, **kwargs: Any) -> None:
        with self._timed("end_study"):
            self._inner.end_study(**kwargs)
        self.clock.study_ended = time.perf_counter()

    def __getattr__(self, name: str) -> Any:
        # Everything else (checkpoints, artifacts, the registered model) passes straight
        # through, clocked under its own name.
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self._inner, name)
        return self._clocked(name, attr) if callable(attr) else attr

    def _clocked(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def clocked(*args: Any, **kwargs: Any) -> Any:
            with self._timed(name):
                return call(*args, **kwargs)

        return clocked

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            entry = self.clock.calls.setdefault(name, [0.0, 0.0])
            entry[0] += 1
            entry[1] += time.perf_counter() - started

    def _search_started(self) -> float:
        return self.clock.search_started if self.clock.search_started is not None else \
            self.clock.origin

    def _watch_target(self, number: int, metrics: EpochMetrics) -> None:
        if self._target_acc is None or self.clock.target is not None:
            return
        if metrics.val_acc >= self._target_acc:
            now = time.perf_counter()
            self.clock.target = TargetHit(
                seconds_since_start=now - self.clock.origin,
                seconds_since_search=now - self._search_started(),
                trial=number, epoch=metrics.epoch, val_acc=metrics.val_acc)
