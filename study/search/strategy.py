"""Sampler and pruner registries: the names on the command line, Optuna's objects behind them.

SAMPLERS and PRUNERS are the one list of each: the config validates against their keys and the
CLI offers them as choices. Reading them imports nothing heavy; optuna loads when one is built.
A new sampler or pruner is a builder and one line in its table, here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from study.errors import ConfigError
from study.search.plan import FIRST_RUNG, REDUCTION_FACTOR

if TYPE_CHECKING:
    import optuna


def make_sampler(name: str, *, seed: int,
                 n_trials: int | None) -> optuna.samplers.BaseSampler:
    """The sampler NAME whose random stream, for each trial, is seeded by (SEED, trial number).

    A trial number is handed out once by the storage, whichever process asks: so workers
    started together, and a run resumed later, never replay each other's stream (a sampler
    seeded once per process would: every process drew the same parameters), while one process
    in a fresh storage still gets the same trials from the same seed.
    """
    build = SAMPLERS.get(name)
    if build is None:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    from study.search.seeded_sampler import PerTrialSeedSampler

    n_startup = startup_trials(n_trials)
    return PerTrialSeedSampler(lambda trial_seed: build(trial_seed, n_startup), seed=seed)


def startup_trials(n_trials: int | None) -> int:
    """The samplers' random start-up trials for a budget of N_TRIALS (None: time alone)."""
    # Few when the budget is small: 20 trials cannot spend 10 on noise.
    return 10 if n_trials is None else max(5, min(10, n_trials // 4))


def _tpe(seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    import optuna

    # multivariate + group models the conditional (scheduler/optimizer) parameters jointly;
    # constant_liar counts other workers' RUNNING trials as bad, so they push the next
    # suggestion away instead of attracting a copy (with one process there are none).
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, multivariate=True,
                                      group=True, constant_liar=True)


def _tpe_independent(seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    import optuna

    # Optuna's default TPE, one density per parameter, with the same start-up and liar: the
    # other half of the measured choice (docs/benchmarks.md, "A time budget").
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, constant_liar=True)


def _random(seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _gp(seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    import optuna

    # GP and CMA-ES model the parameters every trial has; conditional ones are sampled
    # independently (random), which Optuna would otherwise warn about on every trial.
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup,
                                     warn_independent_sampling=False)


def _cmaes(seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=n_startup,
                                        warn_independent_sampling=False)


# name -> builder(seed, n_startup_trials); the order is the order `--help` lists them in.
SAMPLERS: dict[str, Callable[[int, int], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe, "tpe-independent": _tpe_independent, "random": _random, "gp": _gp,
    "cmaes": _cmaes,
}


# No pruner judges a trial before its second epoch (or fold): schedulers such as OneCycle and
# small learning rates start slow on purpose, and epoch 1 ranks trials poorly: with a first
# rung at epoch 1, Hyperband cut the eventual best trial of the benchmark's reference study,
# from epoch 2 on it kept it (docs/benchmarks.md, "Pruning saving", has the figures).
FIRST_DECISION = 2


def make_pruner(name: str, *, max_epochs: int) -> optuna.pruners.BasePruner:
    build = PRUNERS.get(name)
    if build is None:
        raise ConfigError(f"unknown pruner {name!r}; choose one of {sorted(PRUNERS)}")
    return build(max_epochs)


def _median(max_epochs: int) -> optuna.pruners.BasePruner:
    # Optuna's median rule, with the trials running beside a trial counted as well (cohorts
    # start K trials at once); with one trial at a time, exactly Optuna's MedianPruner.
    from study.search.peer_pruner import PeerMedianPruner

    return PeerMedianPruner(n_startup_trials=5, n_warmup_steps=FIRST_DECISION)


def _hyperband(max_epochs: int) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=min(FIRST_RUNG, max_epochs),
                                          max_resource=max_epochs,
                                          reduction_factor=REDUCTION_FACTOR)


def _sha(max_epochs: int) -> optuna.pruners.BasePruner:
    import optuna

    # Asynchronous successive halving, the plan's rungs (study/search/plan.py): every worker and
    # cohort judges a trial at the same epochs against every trial that reached them.
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=min(FIRST_RUNG, max_epochs),
                                                  reduction_factor=REDUCTION_FACTOR)


def _none(max_epochs: int) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.NopPruner()


# name -> builder(max_epochs); the order is the order `--help` lists them in.
PRUNERS: dict[str, Callable[[int], optuna.pruners.BasePruner]] = {
    "median": _median, "hyperband": _hyperband, "sha": _sha, "none": _none,
}
