"""What a person sees while a study runs: one bar over the trials, a status of the running
trial's epochs, and one short line per finished trial above the bar.

Log records (ours and the libraries') are written above the bar too, so nothing breaks it;
Optuna's own per-trial lines, with every parameter, stay out unless --verbose asks for them.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from study.store.record import (
    DIAGNOSIS_ATTR,
    FAIL_REASON_ATTR,
    STOPPED_BY_ATTR,
    STOPPED_EPOCH_ATTR,
)

if TYPE_CHECKING:
    import optuna

    from study.train.engine_types import EpochMetrics

logger = logging.getLogger("study")


class Console:
    """Progress of one `run`: a bar (none with --no-progress) and a line per finished trial.

    With a time budget the bar is the budget: time used and left, and the trials done in it;
    with a trial count alone, the trials done and left.
    """

    def __init__(self, *, total: int | None, max_epochs: int, bar: bool,
                 budget_seconds: float | None = None) -> None:
        from tqdm import tqdm

        self._max_epochs = max_epochs
        self._best: float | None = None  # the study's best value when the last trial ended
        self._budget = budget_seconds
        self._started = time.perf_counter()
        self._trials = 0
        if budget_seconds is not None:
            self._bar = tqdm(total=round(budget_seconds), unit="s", dynamic_ncols=True,
                             disable=not bar, bar_format="{l_bar}{bar}| {postfix}")
        else:
            self._bar = tqdm(total=total, unit="trial", dynamic_ncols=True, disable=not bar,
                             bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} trials "
                                        "[{elapsed}<{remaining}] {postfix}")

    def epoch(self, number: int, metrics: EpochMetrics) -> None:
        """The running trial's status: a frozen bar during a minute-long trial tells nothing."""
        so_far = "" if self._best is None else f", best so far {self._best:.4f}"
        self._status(f"trial {number} epoch {metrics.epoch}/{self._max_epochs}: "
                     f"val loss {metrics.val_loss:.4f}{so_far}")

    def _status(self, text: str) -> None:
        if self._budget is None:
            self._bar.set_postfix_str(text)
            return
        used = time.perf_counter() - self._started
        self._bar.n = min(round(used), self._bar.total)
        left = max(self._budget - used, 0.0)
        clock = (f"{_clock(used)} used, {_clock(left)} left, {self._trials} trials"
                 + (f" | {text}" if text else ""))
        self._bar.set_postfix_str(clock)  # refreshes the bar

    def trial_done(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """An Optuna callback: one short line per finished trial, the bar one step on."""
        self._trials += 1
        if self._budget is None:
            self._bar.update(1)
        self._status("")
        what = (trial.user_attrs.get(DIAGNOSIS_ATTR)
                or trial.user_attrs.get(FAIL_REASON_ATTR, ""))
        if trial.user_attrs.get(STOPPED_BY_ATTR) == "time budget":
            epoch = trial.user_attrs[STOPPED_EPOCH_ATTR]
            what = f"the time budget ended it after epoch {epoch}; {what}"
        state = trial.state.name.lower()
        # "trial 13 pruned at epoch 8: ..." rather than "trial 13 pruned: pruned at epoch 8".
        if what.startswith(f"{state} at ") and ": " in what:
            head, evidence = what.split(": ", 1)  # the epoch once: "pruned at epoch 8: ..."
            what = f"{head}: {evidence.replace(head.removeprefix(state) + ' ', ' ', 1)}"
            line = f"trial {trial.number} {what}"
        else:
            line = f"trial {trial.number} {state}: {what}"
        best = _best(study)
        if best is not None:
            self._best = best.values[0]
            line += f" | best so far: trial {best.number} ({self._best:.4f})"
        logger.info("%s", line)

    def close(self) -> None:
        self._bar.close()


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"


@contextmanager
def progress(*, total: int | None, max_epochs: int, bar: bool,
             budget_seconds: float | None = None) -> Iterator[Console]:
    console = Console(total=total, max_epochs=max_epochs, bar=bar, budget_seconds=budget_seconds)
    try:
        yield console
    finally:
        console.close()


class Handler(logging.Handler):
    """Writes records to stderr through tqdm, above a progress bar when one is shown."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no trial complete yet
        return None


class Format(logging.Formatter):
    """One format for every line: time and message; the level only when it is not news."""

    def __init__(self) -> None:
        super().__init__(datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno <= logging.INFO else f"{record.levelname.lower()}: "
        self._style._fmt = f"%(asctime)s {level}%(message)s"
        return super().format(record)


class KnownWarnings(logging.Filter):
    """Warnings a user can do nothing about, dropped from the console.

    Optuna's PED-ANOVA importance (the parameter-importance plot) warns for every conditional
    parameter (scheduler- and optimizer-specific) that some of its regimes have fewer than two
    trials, and that its quantiles pick the same trials when a study is small: true of any
    conditional parameter early in a study, and not actionable.
    """

    PATTERNS = ("Some regimes for parameter",  # also as a Python warning, through logging
                "Target and region quantiles select the same set of trials")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern in message for pattern in self.PATTERNS)
