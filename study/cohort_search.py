"""The search in cohorts: up to K asked trials trained together, recorded as solo trials are.

Optuna's ask/tell drives it. Up to --cohort-size trials are asked at once (the sampler sees
the running ones: TPE's constant liar keeps them apart), grouped by batch size, and each
group trains as one stacked model (study/cohort/), fold after fold as a solo trial does.

Members must share a batch size, and six sizes drawn independently would split a round of 16
into groups of two or three, which gain little from stacking. So a round's first trial draws
its batch size from the sampler as usual, and the round's other trials take that size
(Optuna's PartialFixedSampler) while every other parameter is sampled freely. The search
sees fewer batch sizes per trial; the study-level benchmark measures what that costs in best
validation loss. A trial whose batch size was given (enqueued) keeps it, in its own group.
Every epoch each member is reported to its own trial; a pruned, diverged or finished member is
told at once and leaves the stack at the epoch boundary, the others go on untouched, and (with
a holdout split) newly asked trials of the cohort's batch size take the free places there. The Objective's
steps record each trial, so a trial of a cohort has the same attributes, MLflow run and
checkpoint as a solo one.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import optuna
from optuna.samplers import PartialFixedSampler
from optuna.storages import fail_stale_trials

# Private, but the only name for storages that beat: what study.optimize uses itself.
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from study.cohort.engine import Cohort, Member
from study.interrupts import interruptibly
from study.liveness import periodically
from study.objective import Objective, TrialRun
from study.storage import FINISHED
from study.training import EpochMetrics, NonFiniteLossError

logger = logging.getLogger(__name__)

TrialDone = Callable[[optuna.Study, FrozenTrial], None]
# --cohort-size when none is given, per device type. CPU: a cohort pays only with a second
# thread (README's Performance section). CUDA: not measured yet, so no cohort by default.
DEFAULT_COHORT_SIZE = {"cpu": 1, "cuda": 1}


def search_in_cohorts(study: optuna.Study, objective: Objective, *, cohort_size: int,
                      n_trials: int, timeout: float | None,
                      trial_done: TrialDone = lambda study, trial: None) -> None:
    """Ask, train and tell cohorts until the study has N_TRIALS (every worker's, finished or
    running) or TIMEOUT seconds have passed, as study.optimize with MaxTrialsCallback would."""
    deadline = None if timeout is None else time.monotonic() + timeout
    budget = _Budget(study, cohort_size=cohort_size, n_trials=n_trials, deadline=deadline)
    while (room := budget.room(running=0)) > 0:
        _Round(study, objective, trial_done, budget).run([study.ask() for _ in range(room)])


class _Budget:
    """How many more trials may start now: the cohort's free places, the study's budget (every
    worker's trials, finished or running) and the time left."""

    def __init__(self, study: optuna.Study, *, cohort_size: int, n_trials: int,
                 deadline: float | None) -> None:
        self.study, self.cohort_size, self.n_trials = study, cohort_size, n_trials
        self.deadline = deadline

    def room(self, *, running: int) -> int:
        """Trials that may start beside RUNNING members of this process's cohort."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return 0
        fail_stale_trials(self.study)  # as study.optimize does before each trial
        taken = len(self.study.get_trials(deepcopy=False,
                                          states=(*FINISHED, TrialState.RUNNING)))
        return max(min(self.cohort_size - running, self.n_trials - taken), 0)


class _Round:
    """Asked trials trained in cohorts, every one of them told before the round ends.

    With a holdout split, trials that leave (pruned, failed, done) are replaced at the epoch
    boundary by new ones of the cohort's batch size, so the cohort stays full until the
    budget or the time runs out. Cross-validated trials train fold after fold, so a cohort
    of them keeps its members for all folds and none joins.
    """

    def __init__(self, study: optuna.Study, objective: Objective, trial_done: TrialDone,
                 budget: _Budget) -> None:
        self.study, self.objective, self.trial_done = study, objective, trial_done
        self.budget = budget
        self.open: dict[int, optuna.Trial] = {}  # asked and not yet told
        self.runs: dict[int, TrialRun] = {}  # started (suggested, MLflow run open)
        self.waiting: dict[int, list[TrialRun]] = {}  # started, by batch size, not yet trained
        self.labels: dict[int, object] = {}  # each batch size as the trials store it

    def run(self, trials: Sequence[optuna.Trial]) -> None:
        self.open = {t.number: t for t in trials}
        try:
            with _heartbeats(self.study, self.open):
                first, *rest = trials
                self._start([first])
                # The round's other trials take the first one's batch size.
                self._start(rest, batch_size=first.params["batch_size"])
                while self.waiting:
                    size = min(self.waiting)
                    group = self.waiting.pop(size)
                    logger.info("cohort of %d trials at batch size %d: %s", len(group), size,
                                ", ".join(str(r.trial.number) for r in group))
                    self._train(group)
        except BaseException as exc:
            # Ctrl-C, SIGTERM or a bug: no trial of the round may stay RUNNING.
            for number in list(self.open):
                self._tell(number, TrialState.FAIL, reason=f"interrupted: {type(exc).__name__}")
            raise

    def _start(self, trials: Sequence[optuna.Trial], *, batch_size: object = None,
               ) -> list[TrialRun]:
        """Start (suggest) TRIALS, with BATCH_SIZE (a stored value) fixed where given (an
        enqueued trial keeps its own); each waits by its batch size."""
        base = self.study.sampler
        if batch_size is not None:
            with warnings.catch_warnings():
                # "experimental" since Optuna 2.4, unchanged since: not a line for the user.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.sampler = PartialFixedSampler({"batch_size": batch_size}, base)
        started = []
        try:
            for trial in trials:
                run = self.runs[trial.number] = self.objective.start(trial)
                self.labels[run.hp.batch_size] = trial.params["batch_size"]
                self.waiting.setdefault(run.hp.batch_size, []).append(run)
                started.append(run)
        finally:
            self.study.sampler = base
        return started

    def _train(self, group: list[TrialRun]) -> None:
        active, folds = list(group), self.objective.data.k
        for i in range(folds):
            if not active:
                return
            cohort = self._cohort(active, i)
            trained: list[TrialRun] = []  # this fold done, the trial not pruned
            for results in interruptibly(_epochs(cohort)):
                leaving = [key for key, result in results.items()
                           if not self._epoch_done(cohort, key, result)]
                cohort.remove(leaving)
                finished = cohort.finished()
                cohort.remove(finished)
                for key in finished:
                    assert isinstance(key, int)
                    if not self._fold_done(self.runs[key]):
                        continue
                    if i == folds - 1:
                        self._tell(key, TrialState.COMPLETE, reason="")
                    else:
                        trained.append(self.runs[key])
                if folds == 1:
                    self._join(cohort)
            active = trained

    def _fold_done(self, run: TrialRun) -> bool:
        """Record a trained fold; False when the trial is pruned on it (and told so)."""
        try:
            self.objective.fold_done(run)
        except optuna.TrialPruned as exc:
            self._tell(run.trial.number, TrialState.PRUNED, reason=str(exc))
            return False
        return True

    def _join(self, cohort: Cohort) -> None:
        """Fill the places members left with new trials of the cohort's batch size."""
        room = self.budget.room(running=len(cohort.members))
        if room <= 0:
            return
        trials = [self.study.ask() for _ in range(room)]
        self.open.update({t.number: t for t in trials})
        self._start(trials, batch_size=self.labels[cohort.batch_size])
        joining = self.waiting.pop(cohort.batch_size, [])
        if joining:
            logger.info("trials %s join the cohort at batch size %d",
                        ", ".join(str(r.trial.number) for r in joining), cohort.batch_size)
            cohort.add(self._members(joining, 0))

    def _cohort(self, runs: list[TrialRun], i: int) -> Cohort:
        return Cohort(self._members(runs, i), self.objective.data.fold(i),
                      max_epochs=self.objective.max_epochs, options=self.objective.options)

    def _members(self, runs: list[TrialRun], i: int) -> list[Member]:
        """RUNS' networks and batch orders for fold I, built as their solo trials build them."""
        members = []
        for run in runs:
            model, generator = self.objective.build(run, i)
            members.append(Member(key=run.trial.number, hp=run.hp, model=model,
                                  generator=generator))
        return members

    def _epoch_done(self, cohort: Cohort, key: object,
                    result: EpochMetrics | NonFiniteLossError) -> bool:
        """Record one member's epoch; False when its trial has ended (it leaves the stack)."""
        assert isinstance(key, int)
        if isinstance(result, NonFiniteLossError):
            self._tell(key, TrialState.FAIL, reason=str(result), diverged=True)
            return False
        try:
            self.objective.epoch_done(self.runs[key], result, lambda: cohort.state(key))
        except optuna.TrialPruned as exc:
            self._tell(key, TrialState.PRUNED, reason=str(exc))
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
            trial.set_user_attr("fail_reason", reason)  # asked, never started
        frozen = self.study.tell(trial, value, state=state if value is None else None)
        self.trial_done(self.study, frozen)


def _epochs(cohort: Cohort) -> Iterator[dict[object, EpochMetrics | NonFiniteLossError]]:
    """Epochs while the cohort has members (finished ones leave between epochs)."""
    while cohort.members:
        yield dict(cohort.run_epoch())


@contextmanager
def _heartbeats(study: optuna.Study, trials: dict[int, optuna.Trial]) -> Iterator[None]:
    """What study.optimize's heartbeat thread does for its one trial, for every open trial."""
    storage = study._storage  # Optuna exposes the heartbeat only through its storage
    if not isinstance(storage, BaseHeartbeat) or (
            interval := storage.get_heartbeat_interval()) is None:
        yield
        return

    def beat() -> None:
        for trial in list(trials.values()):
            storage.record_heartbeat(trial._trial_id)

    beat()  # at once, as Optuna's own heartbeat thread does
    with periodically(interval, beat, name="cohort-heartbeats"):
        yield
