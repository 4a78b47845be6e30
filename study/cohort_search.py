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
Every epoch each member is reported to its own trial; a pruned or diverged member is told at
once and leaves the stack at the epoch boundary, the others go on untouched. The Objective's
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
    started = time.monotonic()
    while timeout is None or time.monotonic() - started < timeout:
        fail_stale_trials(study)  # as study.optimize does before each trial
        taken = len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))
        room = min(cohort_size, n_trials - taken)
        if room <= 0:
            return
        _Round(study, objective, trial_done).run([study.ask() for _ in range(room)])


class _Round:
    """One round: the asked trials, every one of them told before the round ends."""

    def __init__(self, study: optuna.Study, objective: Objective, trial_done: TrialDone) -> None:
        self.study, self.objective, self.trial_done = study, objective, trial_done
        self.open: dict[int, optuna.Trial] = {}  # asked and not yet told
        self.runs: dict[int, TrialRun] = {}  # started (suggested, MLflow run open)

    def run(self, trials: Sequence[optuna.Trial]) -> None:
        self.open = {t.number: t for t in trials}
        try:
            with _heartbeats(self.study, self.open):
                self._start(trials)
                by_size: dict[int, list[TrialRun]] = {}
                for run in self.runs.values():
                    by_size.setdefault(run.hp.batch_size, []).append(run)
                for size, group in sorted(by_size.items()):
                    logger.info("cohort of %d trials at batch size %d: %s", len(group), size,
                                ", ".join(str(r.trial.number) for r in group))
                    self._train(group)
        except BaseException as exc:
            # Ctrl-C, SIGTERM or a bug: no trial of the round may stay RUNNING.
            for number in list(self.open):
                self._tell(number, TrialState.FAIL, reason=f"interrupted: {type(exc).__name__}")
            raise

    def _start(self, trials: Sequence[optuna.Trial]) -> None:
        """Start (suggest) every trial; the first one's batch size is the round's."""
        first, *rest = trials
        self.runs[first.number] = self.objective.start(first)
        base = self.study.sampler
        with warnings.catch_warnings():
            # "experimental" since Optuna 2.4, unchanged since: not a line for the user.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.sampler = PartialFixedSampler(
                {"batch_size": first.params["batch_size"]}, base)
        try:
            for trial in rest:
                self.runs[trial.number] = self.objective.start(trial)
        finally:
            self.study.sampler = base

    def _train(self, group: list[TrialRun]) -> None:
        active = list(group)
        for i in range(self.objective.data.k):
            if not active:
                return
            cohort = self._cohort(active, i)
            for results in interruptibly(_epochs(cohort)):
                leaving = [key for key, result in results.items()
                           if not self._epoch_done(cohort, key, result)]
                cohort.remove(leaving)
            active = [run for run in active if run.trial.number in cohort.keys]
            for run in list(active):
                try:
                    self.objective.fold_done(run)
                except optuna.TrialPruned as exc:
                    self._tell(run.trial.number, TrialState.PRUNED, reason=str(exc))
                    active.remove(run)
        for run in active:
            self._tell(run.trial.number, TrialState.COMPLETE, reason="")

    def _cohort(self, runs: list[TrialRun], i: int) -> Cohort:
        members = []
        for run in runs:
            model, generator = self.objective.build(run, i)
            members.append(Member(key=run.trial.number, hp=run.hp, model=model,
                                  generator=generator))
        return Cohort(members, self.objective.data.fold(i), max_epochs=self.objective.max_epochs,
                      options=self.objective.options)

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
    while cohort.members and cohort.epoch < cohort.max_epochs:
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
