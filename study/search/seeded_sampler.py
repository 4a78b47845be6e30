"""A sampler rebuilt for each trial and seeded by the trial's number (see strategy.make_sampler).

Its own module because it subclasses Optuna's BaseSampler: optuna loads with it, so the
sampler table in `strategy` stays readable by the config and `--help` without optuna.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState


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
