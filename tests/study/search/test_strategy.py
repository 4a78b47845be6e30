"""Sampler and pruner registries: names readable without optuna, every name builds; no trial is
judged on its first epoch, and hopeless trials still stop."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Mapping

import optuna
import pytest

from study.errors import ConfigError
from study.search.strategy import FIRST_DECISION, PRUNERS, SAMPLERS, make_pruner, make_sampler

MAX_EPOCHS = 8


def _study_with_good_trials(pruner: str) -> optuna.Study:
    study = optuna.create_study(study_name=f"pruner-{pruner}",
                                pruner=make_pruner(pruner, max_epochs=MAX_EPOCHS))
    for _ in range(12):  # enough for every Hyperband bracket to hold some
        trial = study.ask()
        for epoch in range(1, MAX_EPOCHS + 1):
            trial.report(0.1, epoch)
            if trial.should_prune():
                break
        study.tell(trial, 0.1)
    return study


@pytest.mark.parametrize("pruner", ["median", "hyperband", "sha"])
def test_hopeless_trials_survive_epoch_1_and_are_pruned_later(pruner: str) -> None:
    study = _study_with_good_trials(pruner)
    for _ in range(6):  # Hyperband spreads trials over brackets: try several
        trial = study.ask()
        trial.report(100.0, 1)
        assert not trial.should_prune()  # epoch 1 says little (OneCycle, small lr start slow)
        pruned_at = None
        for epoch in range(2, MAX_EPOCHS + 1):
            trial.report(100.0, epoch)
            if trial.should_prune():
                pruned_at = epoch
                break
        assert pruned_at is not None and pruned_at >= FIRST_DECISION  # yet not run to the end
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)


@pytest.mark.parametrize("pruner", ["median", "hyperband", "sha", "none"])
def test_one_epoch_studies_get_a_valid_pruner(pruner: str) -> None:
    study = optuna.create_study(pruner=make_pruner(pruner, max_epochs=1))
    trial = study.ask()
    trial.report(1.0, 1)
    assert not trial.should_prune()  # nothing to compare yet; and no error for max_epochs=1


def test_the_registries_are_read_without_optuna() -> None:
    code = ("import sys\nfrom study.search.strategy import PRUNERS, SAMPLERS\n"
            "print(list(SAMPLERS), list(PRUNERS), 'optuna' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # The names serve the config and --help; optuna loads with the first sampler or pruner.
    assert done.stdout.strip() == ("['tpe', 'tpe-independent', 'random', 'gp', 'cmaes'] "
                                   "['median', 'hyperband', 'sha', 'none'] False")


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_registered_sampler_builds(name: str) -> None:
    sampler = make_sampler(name, seed=0, n_trials=20)
    assert isinstance(sampler, optuna.samplers.BaseSampler)  # a sampler Optuna can use


@pytest.mark.parametrize("name", list(PRUNERS))
def test_every_registered_pruner_builds(name: str) -> None:
    assert isinstance(make_pruner(name, max_epochs=4), optuna.pruners.BasePruner)


@pytest.mark.parametrize(("make", "table"), [
    (lambda: make_sampler("bohb", seed=0, n_trials=5), SAMPLERS),
    (lambda: make_pruner("bohb", max_epochs=5), PRUNERS),
])
def test_an_unknown_name_is_refused_with_the_table_s_names(
    make: Callable[[], object], table: Mapping[str, object]
) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"'bohb'; choose one of {sorted(table)}")):
        make()  # the bad name and every name the table has
