"""The median rule with running peers at the first decision: Optuna's decisions when trials
run one at a time, and a cohort's members pruned against each other before any trial has
finished, once."""

from __future__ import annotations

import random

import optuna

from study.search.peer_pruner import PeerMedianPruner

WARMUP = 2


def _report(trial: optuna.Trial, values: list[float]) -> None:
    for step, value in enumerate(values, start=1):
        trial.report(value, step)


def test_one_trial_at_a_time_it_decides_as_optunas_median_pruner() -> None:
    rng = random.Random(0)
    ours = optuna.create_study(pruner=PeerMedianPruner(n_startup_trials=5,
                                                       n_warmup_steps=WARMUP))
    theirs = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=5,
                                                                    n_warmup_steps=WARMUP))
    decisions: list[tuple[bool, bool]] = []
    for _ in range(40):
        curve = [rng.uniform(0.1, 1.0) for _ in range(6)]
        pair = []
        for study in (ours, theirs):
            trial = study.ask()
            pruned_at = None
            for step, value in enumerate(curve, start=1):
                trial.report(value, step)
                if trial.should_prune():
                    pruned_at = step
                    break
            pair.append(pruned_at)
            study.tell(trial, curve[-1] if pruned_at is None else None,
                       state=None if pruned_at is None else optuna.trial.TrialState.PRUNED)
        decisions.append((pair[0] is not None, pair[0] == pair[1]))
    assert all(same for _, same in decisions)
    assert 5 < sum(pruned for pruned, _ in decisions) < 35  # the comparison saw both outcomes


def test_running_peers_at_the_step_count_before_any_trial_finished() -> None:
    study = optuna.create_study(pruner=PeerMedianPruner(n_startup_trials=5,
                                                        n_warmup_steps=WARMUP))
    cohort = [study.ask() for _ in range(6)]
    for i, trial in enumerate(cohort):  # every member reports the epoch, then each is judged
        _report(trial, [1.0, 0.1 * (i + 1)])
    verdicts = [trial.should_prune() for trial in cohort]
    assert verdicts == [False, False, False, True, True, True]  # above the peers' median
    optuna_rule = optuna.create_study(pruner=optuna.pruners.MedianPruner(
        n_startup_trials=5, n_warmup_steps=WARMUP))
    alone = [optuna_rule.ask() for _ in range(6)]
    for i, trial in enumerate(alone):
        _report(trial, [1.0, 0.1 * (i + 1)])
    assert not any(trial.should_prune() for trial in alone)  # Optuna's waits for 5 finished


def test_peers_count_only_at_the_judged_step() -> None:
    study = optuna.create_study(pruner=PeerMedianPruner(n_startup_trials=5,
                                                        n_warmup_steps=WARMUP))
    peers = [study.ask() for _ in range(5)]
    for peer in peers:
        _report(peer, [1.0])  # joiners, a step behind
    trial = study.ask()
    _report(trial, [1.0, 9.0])
    # Five running trials, none with a value at step 2: too few to judge step 2 by.
    assert not trial.should_prune()
    for peer in peers:
        peer.report(0.5, 2)
    assert trial.should_prune()  # now they have: 9.0 is above their median


def test_after_the_first_decision_only_finished_trials_count() -> None:
    study = optuna.create_study(pruner=PeerMedianPruner(n_startup_trials=5,
                                                        n_warmup_steps=WARMUP))
    survivors = [study.ask() for _ in range(6)]
    for i, trial in enumerate(survivors):
        _report(trial, [1.0, 0.5, 0.1 * (i + 1)])
    # Judged against each other again they would halve at every epoch: Optuna's rule instead,
    # which waits for five finished trials.
    assert not any(trial.should_prune() for trial in survivors)
