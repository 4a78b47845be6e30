"""Pruner factories: no trial is judged on its first epoch, and hopeless trials still stop."""

from __future__ import annotations

import optuna
import pytest

from study.strategy import FIRST_DECISION, make_pruner

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
