from __future__ import annotations

import itertools
from typing import Any

import optuna
import pytest

from study.errors import ConfigError
from study.search.search_space import (
    OPTIMIZERS,
    SCHEDULERS,
    SearchSpace,
    as_stored,
    batch_size_label,
    hyperparams_from_params,
    suggest,
)
from study.train.engine_types import Hyperparams
from tests.helpers import CLASSIC_SPACE

MAX_EPOCHS = 6
CONDITIONAL = {
    "none": set(),
    "cosine": set(),
    "step": {"step_size", "step_gamma"},
    "exponential": {"exp_gamma"},
    "plateau": {"plateau_factor", "plateau_patience"},
    "onecycle": {"onecycle_pct_start"},
}
# A value for every parameter the space can ask for; FixedTrial hands out what is asked.
ALL_PARAMS: dict[str, Any] = {
    "lr": 1e-3, "batch_size": 128, "dropout": 0.2, "weight_decay": 1e-5, "sgd_momentum": 0.9,
    "step_size": 2, "step_gamma": 0.5, "exp_gamma": 0.9, "plateau_factor": 0.3,
    "plateau_patience": 1, "onecycle_pct_start": 0.25,
}


@pytest.mark.parametrize(
    ("optimizer", "scheduler"), list(itertools.product(OPTIMIZERS, SCHEDULERS))
)
def test_suggest_fixed_trial(optimizer: str, scheduler: str) -> None:
    trial = optuna.trial.FixedTrial({**ALL_PARAMS, "optimizer": optimizer, "scheduler": scheduler})
    hp = suggest(trial, CLASSIC_SPACE, max_epochs=MAX_EPOCHS)
    assert (hp.optimizer, hp.scheduler) == (optimizer, scheduler)  # the choices are used
    assert (hp.lr, hp.batch_size, hp.dropout, hp.weight_decay) == (1e-3, 128, 0.2, 1e-5)
    # Momentum exists exactly for SGD.
    assert (hp.momentum is not None) == (optimizer == "sgd")
    if optimizer == "sgd":
        assert hp.momentum == 0.9
    # Scheduler parameters are exactly the ones this scheduler uses.
    assert set(hp.scheduler_params) == CONDITIONAL[scheduler]
    assert all(hp.scheduler_params[k] == ALL_PARAMS[k] for k in hp.scheduler_params)


@pytest.mark.parametrize(("optimizer", "scheduler"), [("sgd", "step"), ("adam", "none"),
                                                      ("adamw", "plateau")])
def test_suggest_asks_only_conditional_params(optimizer: str, scheduler: str) -> None:
    needed = {"optimizer", "scheduler", "lr", "batch_size", "dropout", "weight_decay"}
    needed |= CONDITIONAL[scheduler] | ({"sgd_momentum"} if optimizer == "sgd" else set())
    params = {**ALL_PARAMS, "optimizer": optimizer, "scheduler": scheduler}
    trial = optuna.trial.FixedTrial({k: v for k, v in params.items() if k in needed})
    # Only the needed parameters are asked for (FixedTrial raises on any other).
    hp = suggest(trial, CLASSIC_SPACE, max_epochs=MAX_EPOCHS)
    # and exactly those are recorded, with the network's and augmentation's choices (single
    # ones by default, which parameters given by hand may leave out)
    assert set(hp.as_params()) == needed | {"norm", "augment"}


@pytest.mark.parametrize(
    "hp",
    [
        Hyperparams(lr=1e-3, optimizer="sgd", batch_size=64, dropout=0.1, weight_decay=1e-4,
                    scheduler="step", momentum=0.9,
                    scheduler_params={"step_size": 2, "step_gamma": 0.5}),
        Hyperparams(lr=3e-4, optimizer="adam", batch_size=256, dropout=0.0, weight_decay=1e-6,
                    scheduler="none"),
        Hyperparams(lr=1e-2, optimizer="adamw", batch_size=32, dropout=0.4, weight_decay=1e-3,
                    scheduler="plateau",
                    scheduler_params={"plateau_factor": 0.2, "plateau_patience": 3}),
    ],
)
def test_params_round_trip(hp: Hyperparams) -> None:
    # as_params is what Optuna records; it rebuilds the same hyperparameters.
    assert hyperparams_from_params(hp.as_params()) == hp


def test_round_trip_through_a_real_study() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(12):
        trial = study.ask()
        hp = suggest(trial, SearchSpace(), max_epochs=MAX_EPOCHS)
        study.tell(trial, 0.0)
        # A finished trial's params rebuild exactly what the trial trained with.
        assert hyperparams_from_params(study.trials[-1].params) == hp


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"lr": (1e-2, 1e-3)}, "lr=[0.01, 0.001]"),
        ({"lr": (0.0, 1e-2)}, "lr=[0.0, 0.01]"),
        ({"weight_decay": (-1e-5, 1e-3)}, "weight_decay=[-1e-05, 0.001]"),
        ({"lr": (1e-3,)}, "[0.001]"),
        ({"dropout": (0.0, 0.95)}, "dropout=[0.0, 0.95]"),
        ({"dropout": (-0.1, 0.5)}, "dropout=[-0.1, 0.5]"),
        ({"momentum": (0.5, 1.5)}, "momentum=[0.5, 1.5]"),
        ({"optimizers": ()}, "optimizers must be a non-empty subset of ['sgd', 'adam', 'adamw']"),
        ({"optimizers": ("adam", "rmsprop")}, "'rmsprop'"),
        ({"schedulers": ()}, "schedulers must be a non-empty subset"),
        ({"schedulers": ("none",), "optimizers": ()}, "but got []"),
        ({"schedulers": ("linear",)}, "'linear'"),
        ({"batch_sizes": ()}, "batch_sizes must be positive integers, but got ()"),
        ({"batch_sizes": (0, 32)}, "but got (0, 32)"),
        ({"batch_sizes": (32.5,)}, "32.5"),
        ({"lr": ("a", "b")}, "two numbers"),
        ({"norms": ("layer",)}, "norms must be a non-empty subset of ['none', 'batch']"),
        ({"augments": ("flip",)}, "augments must be a non-empty subset of ['none', 'rotate', "),
        ({"lr": (0.0, 0.0)}, "0 < low <= high, but got lr=[0.0, 0.0]"),  # no "off" for lr
        ({"weight_decay": (0.0, 1e-3)}, "or [0, 0] for none, but got weight_decay=[0.0, 0.001]"),
    ],
)
def test_invalid_space(kwargs: dict[str, Any], shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        SearchSpace(**kwargs)
    # Every invalid range or choice list is a ConfigError showing the value.
    assert shown in str(info.value)


def test_from_mapping() -> None:
    space = SearchSpace.from_mapping({"lr": [1e-3, 1e-1], "optimizers": ["sgd"]}, source="x.toml")
    assert space.lr == (1e-3, 1e-1)  # lists become tuples
    assert space.optimizers == ("sgd",)
    assert space.dropout == SearchSpace().dropout  # unlisted ranges keep their defaults
    assert SearchSpace.from_mapping(space.as_dict(), source="x") == space  # as_dict round trip


def test_from_mapping_unknown_keys() -> None:
    # Unknown keys are refused, naming the source and the key.
    with pytest.raises(ConfigError, match=r"x\.toml: unknown \[search_space\] keys \['lrate'\]"):
        SearchSpace.from_mapping({"lrate": [0.1, 0.2]}, source="x.toml")


def test_from_mapping_scalar_value() -> None:
    # A scalar where a list belongs is refused, naming the source.
    with pytest.raises(ConfigError, match=r"x\.toml: \[search_space\] \['lr'\] must be lists"):
        SearchSpace.from_mapping({"lr": 0.1}, source="x.toml")


def test_random_study_stays_inside_ranges() -> None:
    space = SearchSpace(lr=(1e-3, 1e-2), weight_decay=(1e-5, 1e-4), dropout=(0.1, 0.3),
                        momentum=(0.85, 0.95), batch_sizes=(16, 48),
                        optimizers=("sgd", "adamw"), schedulers=("step", "onecycle", "plateau"))
    seen: list[Hyperparams] = []

    def objective(trial: optuna.Trial) -> float:
        seen.append(suggest(trial, space, max_epochs=MAX_EPOCHS))
        return 0.0

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=50)
    assert len(seen) == 50  # every trial suggested
    for hp in seen:
        assert 1e-3 <= hp.lr <= 1e-2  # continuous ranges respected
        assert 1e-5 <= hp.weight_decay <= 1e-4
        assert 0.1 <= hp.dropout <= 0.3
        assert hp.batch_size in (16, 48)  # categorical choices respected
        assert hp.optimizer in ("sgd", "adamw") and hp.scheduler in space.schedulers
        assert (hp.momentum is not None) == (hp.optimizer == "sgd")  # momentum for SGD only
        if hp.momentum is not None:
            assert 0.85 <= hp.momentum <= 0.95
        assert set(hp.scheduler_params) == CONDITIONAL[hp.scheduler]  # conditional params
        if hp.scheduler == "step":
            assert 1 <= hp.scheduler_params["step_size"] <= MAX_EPOCHS // 2  # within the run
    # 50 random draws explore the categorical choices.
    assert {hp.optimizer for hp in seen} == {"sgd", "adamw"}
    assert {hp.scheduler for hp in seen} == set(space.schedulers)


def test_ranges_pinned_to_one_value_give_that_value() -> None:
    # The seed recipe as a space: SGD without momentum at lr 0.05, no dropout, no weight decay.
    space = SearchSpace.from_mapping({
        "lr": [0.05, 0.05], "weight_decay": [0, 0], "dropout": [0.0, 0.0],
        "momentum": [0.0, 0.0], "batch_sizes": [64], "optimizers": ["sgd"],
        "schedulers": ["step"]}, source="seed.toml")
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    for _ in range(4):  # random start-up draws and TPE's own
        trial = study.ask()
        hp = suggest(trial, space, max_epochs=MAX_EPOCHS)
        assert (hp.lr, hp.weight_decay, hp.dropout, hp.momentum) == (0.05, 0.0, 0.0, 0.0)
        assert (hp.optimizer, hp.batch_size, hp.scheduler) == ("sgd", 64, "step")
        study.tell(trial, 1.0)


def test_norm_is_a_searched_choice_recorded_with_every_trial() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    both = SearchSpace(norms=("none", "batch"))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        hp = suggest(trial, both, max_epochs=MAX_EPOCHS)
        assert trial.params["norm"] == hp.norm == hp.as_params()["norm"]
        assert hp.model_kwargs() == {"dropout": hp.dropout, "norm": hp.norm}
        seen.add(hp.norm)
        study.tell(trial, 1.0)
    assert seen == {"none", "batch"}
    fresh = optuna.create_study()
    assert suggest(fresh.ask(), CLASSIC_SPACE, max_epochs=MAX_EPOCHS).norm == "none"  # one choice
    old = {k: v for k, v in study.trials[0].params.items() if k != "norm"}
    assert hyperparams_from_params(old).norm == "none"  # trials made before norm existed


def test_augment_is_a_searched_choice_with_conditional_strengths() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = SearchSpace(augments=("none", "rotate", "affine"))
    kinds = set()
    for _ in range(20):
        trial = study.ask()
        hp = suggest(trial, space, max_epochs=MAX_EPOCHS)
        kinds.add(hp.augment)
        assert trial.params["augment"] == hp.augment
        assert set(hp.augment_params) == {"none": set(), "rotate": {"aug_degrees"},
                                          "affine": {"aug_degrees", "aug_translate",
                                                     "aug_scale"}}[hp.augment]
        assert 0.0 <= hp.augment_params.get("aug_degrees", 0.0) <= 20.0
        study.tell(trial, 1.0)
        assert hyperparams_from_params(trial.params) == hp  # no strength taken for a schedule
    assert kinds == {"none", "rotate", "affine"}


@pytest.mark.parametrize("max_epochs", [1, 2])
def test_step_size_with_few_epochs(max_epochs: int) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = SearchSpace(schedulers=("step",))
    for _ in range(5):
        hp = suggest(study.ask(), space, max_epochs=max_epochs)
        # Even a one-epoch run gets a valid step size.
        assert hp.scheduler_params["step_size"] == 1


def test_search_space_errors_from_toml_name_the_file() -> None:
    with pytest.raises(ConfigError, match=r"study.toml: \[search_space\] lr range"):
        SearchSpace.from_mapping({"lr": [0.1, 0.01]}, source="study.toml")
    # A bare string is not split into letters: the message asks for a list.
    with pytest.raises(ConfigError, match=r"\['optimizers'\] must be lists"):
        SearchSpace.from_mapping({"optimizers": "adam"}, source="study.toml")


def test_batch_sizes_are_stored_as_labels_that_sort_by_size() -> None:
    # optuna-dashboard orders a categorical's values as (lower-cased) text: labels must agree.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        trial = study.ask()
        hp = suggest(trial, CLASSIC_SPACE, max_epochs=4)
        assert isinstance(hp.batch_size, int)  # training gets a number
        study.tell(trial, 1.0)
    distribution = study.trials[0].distributions["batch_size"]
    assert isinstance(distribution, optuna.distributions.CategoricalDistribution)
    labels = list(distribution.choices)
    assert labels == ["0032", "0064", "0128", "0256", "0512", "1024"]
    assert sorted(labels, key=lambda v: str(v).lower()) == labels  # text order is size order
    assert {hyperparams_from_params(t.params).batch_size for t in study.trials} <= {
        32, 64, 128, 256, 512, 1024}
    assert batch_size_label(64, [64, 128]) == "064"
    assert as_stored({"batch_size": 64, "lr": 0.1}, CLASSIC_SPACE) == {"batch_size": "0064",
                                                                        "lr": 0.1}
    # Per-optimizer ranges (the default space): the rate is stored under its optimizer's name.
    assert as_stored({"batch_size": 64, "lr": 0.1, "optimizer": "sgd"}, SearchSpace()) == {
        "batch_size": "064", "lr_sgd": 0.1, "optimizer": "sgd"}


def test_a_study_made_with_plain_batch_sizes_keeps_them() -> None:
    # Resuming a study made before the labels: its stored distribution must not change.
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"batch_size": 64})
    old = study.ask()
    old.suggest_categorical("batch_size", [32, 64, 128, 256, 512, 1024])
    study.tell(old, 1.0)
    trial = study.ask()
    assert suggest(trial, CLASSIC_SPACE, max_epochs=4).batch_size in CLASSIC_SPACE.batch_sizes
    assert trial.params["batch_size"] in CLASSIC_SPACE.batch_sizes  # an int, as before


def test_every_scheduler_has_a_builder_under_the_same_name() -> None:
    from study.train.training import SCHEDULERS as BUILDERS

    # A scheduler is its suggestions here and its builder in training: neither half alone.
    assert list(BUILDERS) == list(SCHEDULERS)


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_each_scheduler_s_builder_takes_the_parameters_its_space_suggests(
    scheduler: str
) -> None:
    import torch

    from study.train.training import build_scheduler

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    hp = suggest(study.ask(), SearchSpace(schedulers=(scheduler,)), max_epochs=MAX_EPOCHS)
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weight], lr=hp.lr)
    schedule = build_scheduler(optimizer, hp, max_epochs=MAX_EPOCHS, steps_per_epoch=3)
    # The builder found every parameter it reads among the suggested ones, and built
    # this scheduler (or none, for "none").
    assert (schedule.scheduler is None) == (scheduler == "none")


def test_each_optimizer_draws_its_rate_from_its_own_range() -> None:
    # SGD with momentum wants rates ten times Adam's: one shared range wastes half of each.
    space = SearchSpace()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        hp = suggest(trial, space, max_epochs=MAX_EPOCHS)
        name = f"lr_{hp.optimizer}"
        assert set(trial.params) & {"lr", "lr_sgd", "lr_adam", "lr_adamw"} == {name}
        low, high = getattr(space, name)
        assert low <= hp.lr == trial.params[name] <= high
        assert hp.as_params()["lr"] == hp.lr  # MLflow and the summaries keep one "lr"
        assert hyperparams_from_params(trial.params) == hp
        seen.add(hp.optimizer)
        study.tell(trial, 1.0)
    assert seen == set(space.optimizers)
    assert "lr" not in space.as_dict() and space.as_dict()["lr_sgd"] == [1e-2, 3e-1]


def test_a_shared_lr_range_keeps_the_one_lr_parameter() -> None:
    # A TOML file that gives lr = [...] (every example does) searches one "lr", as before.
    space = SearchSpace.from_mapping({"lr": [1e-3, 1e-3], "optimizers": ["sgd", "adam"]},
                                     source="study.toml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(6):
        trial = study.ask()
        hp = suggest(trial, space, max_epochs=MAX_EPOCHS)
        assert trial.params["lr"] == hp.lr == 1e-3
        study.tell(trial, 1.0)
    assert space.as_dict()["lr"] == [1e-3, 1e-3]
    assert not any(key.startswith("lr_") for key in space.as_dict())
