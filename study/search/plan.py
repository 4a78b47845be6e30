"""The budget plan: a wall time (or a trial count) in, the rungs, the expected trial count and
the warm start out, printed in one line before the search.

Multi-fidelity is successive halving over epochs (strategy.py's "sha", Optuna's asynchronous
SuccessiveHalvingPruner): every trial trains to the first rung; at each rung a trial goes on
only while its validation loss is among the best third of the trials that reached that rung,
so a third of the trials reach the second rung, a ninth the third, and the best train on to
--max-epochs. A promoted trial simply goes on training: nothing is retrained.

Importing this module loads no torch, Optuna or MLflow: the CLI parses --timeout with it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from study.errors import ConfigError

if TYPE_CHECKING:
    from data_pipeline.tensors import Fold
    from study.train.engine_types import Hyperparams

# Successive halving's shape: the first comparison at epoch FIRST_RUNG (an epoch-1 ranking is
# poor, strategy.FIRST_DECISION), then one at every REDUCTION_FACTOR times as many epochs.
FIRST_RUNG = 2
REDUCTION_FACTOR = 3

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smh])")


def parse_duration(text: str | float) -> float:
    """Seconds from 600, "600", "90s", "10m", "1.5h" or "1h30m"."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        spelled = str(text).strip().lower().replace(" ", "")
        try:
            seconds = float(spelled)
        except ValueError:
            parts = _DURATION.findall(spelled)
            if not parts or "".join(n + u for n, u in parts) != spelled:
                raise ConfigError(f"timeout must be seconds or a duration such as 90s, 10m, "
                                  f"1h or 1h30m, but got timeout={text!r}") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not 0 < seconds < math.inf:
        raise ConfigError(f"timeout must be a finite duration > 0, but got timeout={text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """A budget as people say it: "45 s", "10 min", "1 h 30 min"."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min" if abs(seconds - 60 * minutes) < 1 else \
            f"{int(seconds // 60)} min {seconds % 60:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h" + (f" {minutes} min" if minutes else "")


def rungs(max_epochs: int, *, first: int = FIRST_RUNG,
          factor: int = REDUCTION_FACTOR) -> tuple[int, ...]:
    """The epochs at which successive halving compares trials, below MAX_EPOCHS."""
    out, epoch = [], min(first, max_epochs)
    while epoch < max_epochs:
        out.append(epoch)
        epoch *= factor
    return tuple(out)


def expected_epochs(rung_epochs: Sequence[int], max_epochs: int, *,
                    factor: int = REDUCTION_FACTOR) -> float:
    """Epochs an average trial trains under successive halving: all reach the first rung, one
    in FACTOR of those the next, and so on up to MAX_EPOCHS."""
    stops = [*rung_epochs, max_epochs]
    total, previous = 0.0, 0
    for i, epoch in enumerate(stops):
        total += (epoch - previous) / factor**i
        previous = epoch
    return total


@dataclass(frozen=True)
class Plan:
    """What the study will do with its budget; `line` is what the console prints first."""

    max_epochs: int
    rungs: tuple[int, ...]  # empty: no successive halving (another pruner, or none)
    budget_seconds: float | None  # the wall time; None: the trial count is the budget
    n_trials: int | None  # the trial budget; None: time alone
    epoch_seconds: float | None = None  # one epoch of the warm-start recipe, measured here
    warm_start: tuple[str, ...] = ()  # the recipes enqueued first (their names)
    warm_epochs: int = 0  # what the warm-start trials train, at most
    left_seconds: float | None = None  # of the budget, once the data is ready: the search's

    def expected_trials(self) -> int | None:
        """About how many trials the wall-time budget holds (None without one)."""
        if self.budget_seconds is None or not self.epoch_seconds:
            return None
        per_trial = (expected_epochs(self.rungs, self.max_epochs) if self.rungs
                     else self.max_epochs) * self.epoch_seconds
        left = self._search_seconds() - self.warm_epochs * self.epoch_seconds
        count = len(self.warm_start) + max(left, 0.0) / per_trial
        return max(int(count), 1)

    def fits_one_trial(self) -> bool:
        """Whether the budget can train one trial to --max-epochs (True without a budget)."""
        if self.budget_seconds is None or not self.epoch_seconds:
            return True
        return self.max_epochs * self.epoch_seconds <= self._search_seconds()

    def _search_seconds(self) -> float:
        assert self.budget_seconds is not None
        return self.budget_seconds if self.left_seconds is None else self.left_seconds

    def line(self) -> str:
        """E.g. "10 min budget: rungs at 2, 6, 18 of 40 epochs, about 90 trials (warm start:
        best known, seed recipe; an epoch takes about 1.1 s here)"."""
        if self.budget_seconds is not None:
            head = f"{format_duration(self.budget_seconds)} budget"
            if self.n_trials is not None:
                head += f" or {self.n_trials} trials, whichever ends first"
        else:
            head = f"{self.n_trials} trials"
        shape = (f"rungs at {', '.join(map(str, self.rungs))} of {self.max_epochs} epochs"
                 if self.rungs else f"up to {self.max_epochs} epochs a trial")
        parts = [f"{head}: {shape}"]
        expected = self.expected_trials()
        if expected is not None and (self.n_trials is None or expected < self.n_trials):
            parts.append(f"about {expected} trials")
        extras = []
        if self.warm_start:
            extras.append(f"warm start: {', '.join(self.warm_start)}")
        if self.epoch_seconds:
            extras.append(f"an epoch takes about {self.epoch_seconds:.1f} s here")
        return ", ".join(parts) + (f" ({'; '.join(extras)})" if extras else "")

    def shortfall(self, model: str) -> str | None:
        """A line for a budget that holds one trial only in part (None when one fits): the
        first trial will end at the deadline, short of --max-epochs."""
        if self.fits_one_trial():
            return None
        assert self.epoch_seconds is not None
        held = int(self._search_seconds() / self.epoch_seconds)
        return (f"the {format_duration(self.budget_seconds or 0.0)} budget holds about {held} "
                f"of a {model} trial's {self.max_epochs} epochs here ({self.epoch_seconds:.1f} "
                f"s an epoch): the first trial will end at the deadline with its best epoch so "
                f"far; give a longer --timeout or fewer --max-epochs for whole trials")

    def check_fits(self, model: str) -> None:
        """Refuse, in one line, a budget that holds less than half a trial: an estimate taken
        under a passing load may be off by some, not by two."""
        if self.fits_one_trial():
            return
        assert self.budget_seconds is not None and self.epoch_seconds is not None
        need = self.max_epochs * self.epoch_seconds
        if need <= 2 * self._search_seconds():
            return
        raise ConfigError(
            f"a {format_duration(self.budget_seconds)} budget cannot train one {model} trial "
            f"of {self.max_epochs} epochs here: {format_duration(self._search_seconds())} of "
            f"it is left once the data is ready, and a trial takes about "
            f"{format_duration(need)} ({self.epoch_seconds:.1f} s an epoch); give --timeout "
            f"{_suggested(need)} or more, or fewer --max-epochs")


def _suggested(seconds: float) -> str:
    """A --timeout that holds a few trials of SECONDS each."""
    minutes = math.ceil(4 * seconds / 60 / 5) * 5
    return f"{minutes}m" if minutes < 120 else f"{math.ceil(minutes / 60)}h"


def measure_epoch_seconds(model_name: str, hp: Hyperparams, fold: Fold, *,
                          model_kwargs: Mapping[str, Any], steps: int = 24) -> float:
    """One epoch of HP's network on FOLD, timed here on a slice of STEPS batches and scaled:
    the plan's unit of time. Timed twice, the second counted: the first pays one-time costs
    (torch's first optimizer imports its compiler stack), which the study pays once too."""
    import time

    import torch

    import models
    from data_pipeline.tensors import Fold as FoldOf
    from data_pipeline.tensors import TensorSet
    from study.train.trial import train

    n = min(len(fold.train), steps * hp.batch_size)
    m = min(len(fold.val), max(1, n * len(fold.val) // max(len(fold.train), 1)))
    part = FoldOf(train=TensorSet(fold.train.x[:n], fold.train.y[:n]),
                  val=TensorSet(fold.val.x[:m], fold.val.y[:m]), normalizer=fold.normalizer)
    seconds = 0.0
    for _ in range(2):
        model = models.build(model_name, **hp.model_kwargs(), **model_kwargs)
        model = model.to(fold.train.y.device)
        started = time.perf_counter()
        for _metrics in train(model, hp, part, max_epochs=1,
                              generator=torch.Generator().manual_seed(0)):
            pass
        seconds = time.perf_counter() - started
    return seconds * len(fold.train) / n
