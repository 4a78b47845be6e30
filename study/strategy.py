"""Sampler and pruner factories: the names on the command line, Optuna's objects behind them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from study.errors import ConfigError


def make_sampler(name: str, *, seed: int, n_trials: int) -> optuna.samplers.BaseSampler:
    """The sampler NAME whose random stream, for each trial, is seeded by (SEED, trial number).

    A trial number is handed out once by the storage, whichever process asks: so workers
    started together, and a run resumed later, never replay each other's stream (a sampler
    seeded once per process would: every process drew the same parameters), while one process
    in a fresh storage still gets the same trials from the same seed.
    """
    build = _SAMPLERS.get(name)
    if build is None:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {sorted(_SAMPLERS)}")
    # Few random start-up trials when the budget is small: 20 trials cannot spend 10 on noise.
    n_startup = max(5, min(10, n_trials // 4))
    return PerTrialSeedSampler(lambda trial_seed: build(trial_seed, n_startup), seed=seed)


def _tpe(seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    # multivariate + group models the conditional (scheduler/optimizer) parameters jointly;
    # constant_liar counts other workers' RUNNING trials as bad, so they push the next
    # suggestion away instead of attracting a copy (with one process there are none).
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, multivariate=True,
                                      group=True, constant_liar=True)


def _random(seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _gp(seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    # GP and CMA-ES model the parameters every trial has; conditional ones are sampled
    # independently (random), which Optuna would otherwise warn about on every trial.
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup,
                                     warn_independent_sampling=False)


def _cmaes(seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=n_startup,
                                        warn_independent_sampling=False)


_SAMPLERS: dict[str, Callable[[int, int], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe, "random": _random, "gp": _gp, "cmaes": _cmaes,
}


def repeated_parameter_sets(trials: Sequence[FrozenTrial]) -> list[tuple[int, int]]:
    """(first, repeat) trial numbers that share a parameter set, except a failed trial and the
    retry that Optuna's heartbeat callback queues for it: what workers must never produce."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    seen: dict[tuple[tuple[str, Any], ...], int] = {}
    pairs = []
    for trial in sorted(trials, key=lambda t: t.number):
        key = tuple(sorted(trial.params.items()))
        if not key:
            continue  # a queued retry that has not started
        retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)
        if key in seen and seen[key] != retried:
            pairs.append((seen[key], trial.number))
        seen.setdefault(key, trial.number)
    return pairs


def sampler_seed(seed: int, trial_number: int) -> int:
    """The sampler's seed for one trial: distinct per trial number, fixed by the study seed."""
    return int(np.random.SeedSequence((seed, trial_number)).generate_state(1)[0])


class PerTrialSeedSampler(optuna.samplers.BaseSampler):
    """Delegates to a sampler built afresh for each trial, seeded by the trial's number.

    The samplers used here keep no state between trials that the storage does not hold
    (TPE, GP and CMA-ES rebuild their models from the stored trials; CMA-ES keeps its
    optimizer state in trial system attrs), so a fresh one per trial loses nothing.
    """

    def __init__(self, build: Callable[[int], optuna.samplers.BaseSampler], *, seed: int) -> None:
        self._build = build
        self._seed = seed
        self._inner = build(seed)

    @property
    def inner(self) -> optuna.samplers.BaseSampler:
        return self._inner

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._inner = self._build(sampler_seed(self._seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


# No pruner judges a trial before its second epoch (or fold): schedulers such as OneCycle and
# small learning rates start slow on purpose, and epoch 1 ranks trials poorly. With a first
# rung at epoch 1, Hyperband cut the eventual best trial of the benchmark's reference study
# (best val loss +12% vs no pruning, 64% fewer epochs); from epoch 2 on its best was 2.7%
# better than no pruning's, at 34% fewer epochs and 53% less wall time (docs/benchmarks.md).
FIRST_DECISION = 2


def make_pruner(name: str, *, max_epochs: int) -> optuna.pruners.BasePruner:
    first = min(FIRST_DECISION, max_epochs)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=FIRST_DECISION)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=max_epochs,
                                              reduction_factor=3)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown pruner {name!r}")
