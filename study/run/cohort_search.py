"""The search in cohorts: up to K asked trials trained together, recorded as solo trials are.

Optuna's ask/tell drives it. Up to --cohort-size trials run at once (the sampler sees the
running ones: TPE's constant liar keeps them apart); those of one batch size train as one
stacked model (study/train/cohort/). Every epoch each member is reported to its own trial; a pruned,
diverged or finished member is told at once and leaves the stack at the epoch boundary, the
others go on untouched. The Objective's steps record each trial, so a trial of a cohort has
the same attributes, MLflow run and checkpoint as a solo one.

Members must share a batch size and an architecture (norm: BatchNorm or not), and six sizes
drawn independently would split 16 trials into groups of two or three, which gain little from
stacking. So one trial in K draws its batch size and norm from the sampler as usual and the
next K-1 take them (Optuna's PartialFixedSampler), every other parameter sampled freely; a
trial whose values were given (enqueued) keeps them. The sampler's random start-up trials are
the exception: each draws its own, in small cohorts. Fixed from the first trial, the first
cohort gave TPE one batch size to learn from, and it drew that size again for the rest of the
study (the study-level benchmark, python -m study.bench.cohort_study, saw a whole study at
batch 1024). The search sees a new batch size every K trials after the start-up; the benchmark
measures what that costs in best validation loss.

A member is a (trial, fold) pair, and one driver runs holdout and cross-validation alike: the
places that leaving members free are filled at once with newly asked trials, which join the
cohort of their shape (batch size, norm) on fold 1 (or start one), and a trial that finished
a fold and was not pruned on it joins its shape's cohort on the next fold. The cohorts stay
full until the budget or the time runs out, and a new batch size's cohort fills as the last
one's drains. With --cohort-size 1 (the CPU's default) every cohort has one member: a lone
trial, trained as the plain loop trains it (tests/study/train/plain_loop.py).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import optuna
from optuna.samplers import PartialFixedSampler
from optuna.storages import fail_stale_trials

# Private, but the only name for storages that beat: what study.optimize uses itself.
from optuna.trial import FrozenTrial, TrialState

from study.run.interrupts import interruptibly
from study.run.objective import Objective, TrialRun
from study.store.liveness import beating
from study.store.record import FAIL_REASON_ATTR
from study.store.storage import FINISHED
from study.train.cohort.engine import Cohort, Member
from study.train.engine_types import EpochMetrics
from study.train.training import NonFiniteLossError

logger = logging.getLogger(__name__)
# The line per finished trial that study.optimize logs and ask/tell does not: written here in
# Optuna's own words and logger, so that --verbose (Optuna's INFO) shows it as it always has.
_optuna_lines = logging.getLogger("optuna.study")

# study.ask on a storage that beats warns that heartbeats belong to study.optimize; this driver
# beats for every trial it asked (liveness.beating), so the warning is not true here.
_ASK_BEATS_HERE = r"Heartbeat of storage is supposed to be used with Study\.optimize"

TrialDone = Callable[[optuna.Study, FrozenTrial], None]
# What the members of one stack share: one batch gather per step, one architecture. One trial
# in K draws them; the next K-1 take them.
SHARED = ("batch_size", "norm")
Shape = tuple[int, str]  # a cohort's (batch size, norm)
Place = tuple[int, str, int]  # a cohort's (batch size, norm, fold)
Key = tuple[int, int]  # a member's (trial number, fold)
# --cohort-size when none is given, per device type. CPU: 1, though a cohort of 16 trains
# more trial-epochs per second: one batch size per K trials narrows the search (README's
# Performance section has both), so cohorts are opt-in. CUDA: not measured yet.
DEFAULT_COHORT_SIZE = {"cpu": 1, "cuda": 1}


def search_in_cohorts(study: optuna.Study, objective: Objective, *, cohort_size: int,
                      n_trials: int | None, timeout: float | None, free_draws: int = 0,
                      trial_done: TrialDone = lambda study, trial: None) -> None:
    """Ask, train and tell cohorts until the study has N_TRIALS (every worker's, finished or
    running; None: no limit) or TIMEOUT seconds have passed, as study.optimize with
    MaxTrialsCallback would.

    Trials numbered below FREE_DRAWS (the sampler's random start-up) each draw their own
    batch size and norm; after them, one trial in K draws and the next K-1 take its values.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    budget = _Budget(study, cohort_size=cohort_size, n_trials=n_trials, deadline=deadline,
                     free_draws=free_draws)
    _Search(study, objective, trial_done, budget).run()


class _Budget:
    """How many more trials may start now: the free places among K, the study's budget (every
    worker's trials, finished or running) and the time left."""

    def __init__(self, study: optuna.Study, *, cohort_size: int, n_trials: int | None,
                 deadline: float | None, free_draws: int = 0) -> None:
        self.study, self.cohort_size, self.n_trials = study, cohort_size, n_trials
        self.deadline, self.free_draws = deadline, free_draws

    def room(self, *, running: int) -> int:
        """Trials that may start beside RUNNING members of this process's cohorts."""
        if self.cohort_size <= running or (
                self.deadline is not None and time.monotonic() >= self.deadline):
            return 0  # no place free: no need to ask the storage (each epoch, per cohort)
        fail_stale_trials(self.study)  # as study.optimize does before each trial
        free = self.cohort_size - running
        if self.n_trials is None:
            return free
        taken = len(self.study.get_trials(deepcopy=False,
                                          states=(*FINISHED, TrialState.RUNNING)))
        return max(min(free, self.n_trials - taken), 0)


class _Search:
    """The cohorts of one process: asking and starting trials (one batch size per K trials),
    a cohort per (shape, fold) taking turns an epoch each, recording epochs, moving trials on
    to their next fold, telling them, and failing every open trial when interrupted."""

    def __init__(self, study: optuna.Study, objective: Objective, trial_done: TrialDone,
                 budget: _Budget) -> None:
        self.study, self.objective, self.trial_done = study, objective, trial_done
        self.budget = budget
        self.open: dict[int, optuna.Trial] = {}  # asked and not yet told (heartbeats read it)
        self.runs: dict[int, TrialRun] = {}  # started (suggested, MLflow run open)
        self.asked = 0  # trials this search asked: each K-th draws its batch size freely
        # The last drawn values of SHARED, as trials store them; the next K-1 trials take them.
        self.shared: dict[str, object] | None = None
        self.cohorts: dict[Place, Cohort] = {}  # each with members
        self._first_beat: Callable[[optuna.Trial], None] = lambda trial: None  # (_guarded)

    def run(self) -> None:
        with self._guarded():
            self._fill()
            for place, results in interruptibly(self._epochs()):
                cohort = self.cohorts[place]
                for run in self._epoch(cohort, results):
                    self._next_fold(run)
                if not cohort.members:
                    del self.cohorts[place]
                self._fill()

    def _epochs(self) -> Iterator[tuple[Place, dict[Key, EpochMetrics | NonFiniteLossError]]]:
        while self.cohorts:
            for place in sorted(self.cohorts):
                cohort = self.cohorts.get(place)
                if cohort is not None:  # its members' keys are the Keys _members gave them
                    yield place, cast(dict[Key, EpochMetrics | NonFiniteLossError],
                                      cohort.run_epoch())

    def _fill(self) -> None:
        running = sum(len(c.members) for c in self.cohorts.values())
        for _, runs in sorted(self._ask(running=running).items()):
            self._join(runs, 0)

    def _next_fold(self, run: TrialRun) -> None:
        """RUN trained a fold and was not pruned on it: on to its next fold, or complete."""
        if len(run.folds) < self.objective.data.k:
            self._join([run], len(run.folds))
        else:
            self._tell(run.trial.number, TrialState.COMPLETE, reason="")

    def _join(self, runs: list[TrialRun], i: int) -> None:
        """RUNS (of one shape) start fold I: in their shape's cohort on it, or a new one."""
        place = (*_shape(runs[0]), i)
        members = self._members(runs, i)
        cohort = self.cohorts.get(place)
        if cohort is None:
            self._log("a cohort at batch size %d, norm %s on fold %d: %s", *place[:2], i + 1,
                      _trials(runs))
            self.cohorts[place] = Cohort(members, self.objective.data.fold(i),
                                         max_epochs=self.objective.max_epochs,
                                         options=self.objective.options)
            return
        self._log("%s %s the cohort at batch size %d, norm %s on fold %d", _trials(runs),
                  "joins" if len(runs) == 1 else "join", *place[:2], i + 1)
        cohort.add(members)

    def _log(self, message: str, *args: object) -> None:
        """Cohorts of one are every trial: their comings and goings are no news."""
        logger.log(logging.INFO if self.budget.cohort_size > 1 else logging.DEBUG, message, *args)

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """Heartbeats for every open trial; on Ctrl-C, SIGTERM or a bug, none stays RUNNING."""
        try:
            with beating(self.study, self.open) as first_beat:
                self._first_beat = first_beat
                yield
        except BaseException as exc:
            for number in list(self.open):
                self._tell(number, TrialState.FAIL, reason=f"interrupted: {type(exc).__name__}")
            raise

    def _ask(self, *, running: int) -> dict[Shape, list[TrialRun]]:
        """New trials beside RUNNING members, asked and started one by one while the budget has
        room, by shape (batch size, norm).

        The room is counted again before each ask: counted once for K, two workers that both
        saw K free places would each start K and overrun --n-trials by up to K; counted before
        each, a worker overruns by one at most, as study.optimize's workers do (README).
        """
        started: dict[Shape, list[TrialRun]] = {}
        asked = 0
        while self.budget.room(running=running + asked) > 0:
            asked += 1
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_ASK_BEATS_HERE, category=UserWarning)
                trial = self.study.ask()
            self.open[trial.number] = trial
            self._first_beat(trial)  # at once: a worker killed now leaves a trial gone stale
            if trial.number < self.budget.free_draws:  # the sampler's random start-up
                run = self._start(trial, fixed=None)
                started.setdefault(_shape(run), []).append(run)
                continue
            fixed = self.asked % self.budget.cohort_size != 0 and self.shared is not None
            self.asked += 1
            run = self._start(trial, fixed=self.shared if fixed else None)
            if not fixed:
                self.shared = {name: trial.params[name] for name in SHARED}
            started.setdefault(_shape(run), []).append(run)
        return started

    def _start(self, trial: optuna.Trial, *, fixed: dict[str, object] | None) -> TrialRun:
        """Start (suggest) TRIAL, with FIXED's parameters (stored values) unless None (an
        enqueued trial keeps its own)."""
        base = self.study.sampler
        if fixed is not None:  # (its ExperimentalWarning: study/cli/logs.py mutes them)
            self.study.sampler = PartialFixedSampler(fixed, base)
        try:
            run = self.runs[trial.number] = self.objective.start(trial)
        finally:
            self.study.sampler = base
        return run

    def _epoch(self, cohort: Cohort, results: dict[Key, EpochMetrics | NonFiniteLossError],
               ) -> list[TrialRun]:
        """Record one epoch of COHORT: members whose trial ended leave, and so do those that
        trained all their epochs on this fold or stopped early; the latter are returned (not
        pruned on it)."""
        recorded = {key: result for key, result in results.items()
                    if self._record(cohort, key, result)}
        # Judged only once every member has reported: each is compared with all its peers.
        leaving = [key for key in results
                   if key not in recorded or not self._judge(key, recorded[key])]
        cohort.remove(leaving)
        # Finished: trained all its epochs, or stopped early (its fold ends, as a solo one's).
        trained_all = set(cohort.finished())
        finished = [key for key in recorded if key not in leaving and (
            key in trained_all or self.objective.stops_early(self.runs[key[0]]))]
        cohort.remove(finished)
        return [self.runs[number] for number, _ in finished
                if self._fold_done(self.runs[number])]

    def _fold_done(self, run: TrialRun) -> bool:
        """Record a trained fold; False when the trial is pruned on it (and told so)."""
        try:
            self.objective.fold_done(run)
        except optuna.TrialPruned as exc:
            self._tell(run.trial.number, TrialState.PRUNED, reason=str(exc))
            return False
        return True

    def _members(self, runs: list[TrialRun], i: int) -> list[Member]:
        """RUNS' networks and batch orders for fold I, built as their solo trials build them."""
        members = []
        for run in runs:
            model, generator = self.objective.build(run, i)
            members.append(Member(key=(run.trial.number, i), hp=run.hp, model=model,
                                  generator=generator))
        return members

    def _record(self, cohort: Cohort, key: Key,
                result: EpochMetrics | NonFiniteLossError) -> bool:
        """Record one member's epoch; False when it diverged (its trial FAIL, told)."""
        number = key[0]
        if isinstance(result, NonFiniteLossError):
            self._tell(number, TrialState.FAIL, reason=str(result), diverged=True)
            return False
        self.objective.record_epoch(self.runs[number], result, lambda: cohort.state(key))
        return True

    def _judge(self, key: Key, result: EpochMetrics | NonFiniteLossError) -> bool:
        """False when the pruner stops the member's trial (it is told PRUNED and leaves)."""
        assert isinstance(result, EpochMetrics)
        try:
            self.objective.judge_epoch(self.runs[key[0]], result)
        except optuna.TrialPruned as exc:
            self._tell(key[0], TrialState.PRUNED, reason=str(exc))
            return False
        return True

    def _tell(self, number: int, state: TrialState, *, reason: str,
              diverged: bool = False) -> None:
        trial = self.open.pop(number)
        run = self.runs.get(number)
        value = None
        if run is not None:
            if state == TrialState.COMPLETE:
                value = self.objective.complete(run)
            else:
                self.objective.stop(run, state, reason=reason, diverged=diverged)
        elif state == TrialState.FAIL:
            trial.set_user_attr(FAIL_REASON_ATTR, reason)  # asked, never started
        frozen = self.study.tell(trial, value, state=state if value is None else None)
        self._log_told(frozen, reason)
        self.trial_done(self.study, frozen)

    def _log_told(self, trial: FrozenTrial, reason: str) -> None:
        if not _optuna_lines.isEnabledFor(logging.INFO):
            return
        if trial.state != TrialState.COMPLETE:
            _optuna_lines.info("Trial %d %s. %s", trial.number, trial.state.name.lower(), reason)
            return
        best = self.study.best_trial
        _optuna_lines.info("Trial %d finished with value: %s and parameters: %s. Best is trial %d "
                           "with value: %s.", trial.number, trial.value, trial.params,
                           best.number, best.value)


def _shape(run: TrialRun) -> Shape:
    return run.hp.batch_size, run.hp.norm


def _trials(runs: list[TrialRun]) -> str:
    """"trial 8" or "trials 8, 9 and 10"."""
    numbers = [str(r.trial.number) for r in runs]
    if len(numbers) == 1:
        return f"trial {numbers[0]}"
    return f"trials {', '.join(numbers[:-1])} and {numbers[-1]}"
