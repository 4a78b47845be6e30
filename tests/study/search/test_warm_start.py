"""The warm start: known-good recipes enqueued first, where the space holds them."""

from __future__ import annotations

import dataclasses

import optuna

from study.search.search_space import SearchSpace, hyperparams_from_params, suggest
from study.search.warm_start import (
    BEST_KNOWN,
    FAST_START,
    SEED_RECIPE,
    fitted,
    recipes,
    timing_recipe,
)
from study.store.record import UNJUDGED_ATTR, WARM_START_ATTR, enqueue_warm_start
from tests.helpers import CLASSIC_SPACE


def test_a_new_study_starts_with_the_fast_start_the_best_known_then_the_seed_recipe() -> None:
    study = optuna.create_study()
    names = enqueue_warm_start(study, SearchSpace(), "mlp", max_epochs=40)
    assert names == ["fast start", "best known", "seed recipe"]
    fast, first, second = study.ask(), study.ask(), study.ask()
    # The sampler hands out the recipes exactly: what they train is what was enqueued.
    assert suggest(fast, SearchSpace(), max_epochs=40) == FAST_START["mlp"]
    assert fast.user_attrs[WARM_START_ATTR] == "fast start"
    # Its steep schedule would set the rungs: the pruner never judges it, and only it.
    assert fast.user_attrs[UNJUDGED_ATTR] is True
    assert suggest(first, SearchSpace(), max_epochs=40) == BEST_KNOWN["mlp"]
    seed = suggest(second, SearchSpace(), max_epochs=40)
    # The seed recipe, as the default space holds it: momentum and weight decay at its floor.
    assert seed == dataclasses.replace(SEED_RECIPE, momentum=0.8, weight_decay=1e-6)
    assert hyperparams_from_params(second.params) == seed
    assert first.user_attrs[WARM_START_ATTR] == "best known"
    assert UNJUDGED_ATTR not in first.user_attrs and UNJUDGED_ATTR not in second.user_attrs
    assert second.user_attrs[WARM_START_ATTR] == (
        "seed recipe (weight_decay 0 -> 1e-06, momentum 0 -> 0.8)")


def test_a_study_with_trials_gets_no_second_warm_start() -> None:
    study = optuna.create_study()
    enqueue_warm_start(study, SearchSpace(), "mlp", max_epochs=40)
    # a resumed study, or one another worker started: its recipes are queued already
    assert enqueue_warm_start(study, SearchSpace(), "mlp", max_epochs=40) == []
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 3


def test_the_cnn_has_no_fast_start_and_plans_time_the_best_known_recipe() -> None:
    assert list(recipes("cnn")) == ["best known", "seed recipe"]
    # The fast start's batch-256 epochs would make the plan promise too many trials.
    assert timing_recipe("mlp") == BEST_KNOWN["mlp"] != FAST_START["mlp"]
    assert timing_recipe("cnn") == BEST_KNOWN["cnn"]


def test_a_recipe_whose_choices_the_space_lacks_is_left_out() -> None:
    # The classic space has no BatchNorm or augmentation: only the seed recipe fits.
    assert fitted(BEST_KNOWN["mlp"], CLASSIC_SPACE, max_epochs=8) is None
    assert fitted(FAST_START["mlp"], CLASSIC_SPACE, max_epochs=8) is None
    study = optuna.create_study()
    assert enqueue_warm_start(study, CLASSIC_SPACE, "mlp", max_epochs=8) == ["seed recipe"]
    trial = study.ask()
    assert suggest(trial, CLASSIC_SPACE, max_epochs=8).optimizer == "sgd"
    assert trial.params["lr"] == 0.03  # the classic space's shared "lr", at its ceiling
    assert trial.user_attrs[WARM_START_ATTR] == (
        "seed recipe (lr 0.05 -> 0.03, weight_decay 0 -> 1e-06, momentum 0 -> 0.8, "
        "step_size 5 -> 4)")
    adam_only = SearchSpace(optimizers=("adam",))
    assert enqueue_warm_start(optuna.create_study(), adam_only, "mlp", max_epochs=8) == []
