"""The median rule with running trials counted at the first decision: what lets a cohort
prune its own members.

Optuna's MedianPruner compares a trial with the COMPLETE trials at the same step. A cohort of K
trials starts K at once, so its first K could never be pruned: no trial has finished when they
reach the first decision epoch, and they all trained every epoch (the study-level benchmark
counted more trial-epochs in cohorts than one at a time: README, Performance). The trials running
beside a trial have real values at that epoch too, so at the first decision epoch (the
pruner's n_warmup_steps) this pruner counts them as well: the median is taken over the
finished trials and the other running trials that reported the step.

Only there: no trial can be pruned before it, so the trials that reached it are an unselected
sample. At later epochs the running trials are the survivors of these same decisions, and
judging each against the survivors again halves a cohort every epoch: counting peers at every
epoch pruned most of a study's trials and lost best validation loss against one trial at a
time (README, Performance, has the figures). Later epochs use Optuna's rule unchanged.

With one trial at a time nothing else runs, and the decisions are Optuna's exactly. Its own
module because it subclasses Optuna's pruner: `strategy` stays importable without optuna.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState


class PeerMedianPruner(optuna.pruners.MedianPruner):
    """optuna.pruners.MedianPruner (same arguments), whose "completed trials" at the first
    decision step (n_warmup_steps) also include the other RUNNING trials that reported it."""

    def __init__(self, *, n_startup_trials: int = 5, n_warmup_steps: int = 0) -> None:
        super().__init__(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps)
        self._decision_step = n_warmup_steps  # its own copy: Optuna's is private

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if trial.last_step != self._decision_step:
            return super().prune(study, trial)
        # Optuna's own rule, run on a view of the study: no copy of its arithmetic here.
        return super().prune(_WithPeers(study, trial), trial)  # type: ignore[arg-type]


class _WithPeers:
    """What PercentilePruner.prune reads of a study, with the peers that reached the step
    shown as COMPLETE."""

    def __init__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._study, self._trial = study, trial
        self.direction = study.direction

    def get_trials(self, deepcopy: bool = False,
                   states: Container[TrialState] | None = None) -> Sequence[FrozenTrial]:
        trials = self._study.get_trials(deepcopy=deepcopy, states=states)
        if states is None or TrialState.COMPLETE not in states:
            return trials
        step = self._trial.last_step
        peers = [t for t in self._study.get_trials(deepcopy=deepcopy,
                                                   states=(TrialState.RUNNING,))
                 if t.number != self._trial.number and step in t.intermediate_values]
        return [*trials, *peers]
