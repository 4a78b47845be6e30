"""The search space: the ONLY place that calls trial.suggest_*."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.registry import NORMS
from study.errors import ConfigError
from study.train.engine_types import Hyperparams

if TYPE_CHECKING:  # only in hints: the CLI parses its flags without importing optuna
    import optuna

OPTIMIZERS = ("sgd", "adam", "adamw")

# A learning-rate schedule is two halves under one name: here the suggestions of its own
# (conditional) parameters, in training.SCHEDULERS the builder that reads them. SCHEDULERS below
# is the list the config checks names against (cheap: no torch); a test pins the two tables to
# the same names.


def _no_params(trial: optuna.trial.BaseTrial, max_epochs: int) -> dict[str, float]:
    return {}


def _step_params(trial: optuna.trial.BaseTrial, max_epochs: int) -> dict[str, float]:
    return {
        "step_size": trial.suggest_int("step_size", 1, max(1, max_epochs // 2)),
        "step_gamma": trial.suggest_float("step_gamma", 0.1, 0.9),
    }


def _plateau_params(trial: optuna.trial.BaseTrial, max_epochs: int) -> dict[str, float]:
    return {
        "plateau_factor": trial.suggest_float("plateau_factor", 0.1, 0.7),
        "plateau_patience": trial.suggest_int("plateau_patience", 0, 3),
    }


def _onecycle_params(trial: optuna.trial.BaseTrial, max_epochs: int) -> dict[str, float]:
    return {"onecycle_pct_start": trial.suggest_float("onecycle_pct_start", 0.1, 0.5)}


def _exponential_params(trial: optuna.trial.BaseTrial, max_epochs: int) -> dict[str, float]:
    return {"exp_gamma": trial.suggest_float("exp_gamma", 0.7, 0.99)}


def _no_augment(trial: optuna.trial.BaseTrial) -> dict[str, float]:
    return {}


def _rotate_params(trial: optuna.trial.BaseTrial) -> dict[str, float]:
    # The seed documents rotated by up to 10 degrees; twice that still reads as the same digit.
    return {"aug_degrees": trial.suggest_float("aug_degrees", 0.0, 20.0)}


def _affine_params(trial: optuna.trial.BaseTrial) -> dict[str, float]:
    return {**_rotate_params(trial),
            "aug_translate": trial.suggest_float("aug_translate", 0.0, 0.15),  # of the side
            "aug_scale": trial.suggest_float("aug_scale", 0.0, 0.15)}


# Train-only augmentation (study/train/augment.py): name -> its strengths' suggestions.
AUGMENTS: dict[str, Callable[[optuna.trial.BaseTrial], dict[str, float]]] = {
    "none": _no_augment, "rotate": _rotate_params, "affine": _affine_params,
}
AUGMENT_PARAMS = ("aug_degrees", "aug_translate", "aug_scale")

# name -> its parameters' suggestions; the order is the default search space's. cosine anneals
# over max_epochs and onecycle peaks at lr: neither needs more than this.
SCHEDULERS: dict[str, Callable[[optuna.trial.BaseTrial, int], dict[str, float]]] = {
    "none": _no_params, "step": _step_params, "cosine": _no_params,
    "plateau": _plateau_params, "onecycle": _onecycle_params,
    "exponential": _exponential_params,
}


_LR_NAMES = ("lr", *(f"lr_{optimizer}" for optimizer in OPTIMIZERS))


@dataclass(frozen=True)
class SearchSpace:
    """Ranges of the searched hyperparameters; the TOML table [search_space] overrides them."""

    # [low, high]; low == high pins a parameter to one value. lr: one range that every
    # optimizer shares (the Optuna parameter "lr"); None: each optimizer its own range below
    # (the parameters "lr_sgd", "lr_adam", "lr_adamw"), as SGD with momentum wants rates ten
    # times Adam's. All log scale.
    lr: tuple[float, float] | None = None
    lr_sgd: tuple[float, float] = (1e-2, 3e-1)
    lr_adam: tuple[float, float] = (3e-4, 1e-2)
    lr_adamw: tuple[float, float] = (1e-3, 3e-2)
    # The defaults below are informed by measured studies (README, "How it works"): BatchNorm
    # and mild affine augmentation with little dropout win at 40 epochs; batches of 32 and
    # over 256 and the schedules that do not anneal over the epochs (none, plateau,
    # exponential) never made a best trial. "step" stays for the seed recipe (warm start).
    weight_decay: tuple[float, float] = (1e-6, 1e-3)  # log scale
    dropout: tuple[float, float] = (0.0, 0.3)
    momentum: tuple[float, float] = (0.8, 0.95)  # SGD only
    batch_sizes: tuple[int, ...] = (64, 128, 256)
    optimizers: tuple[str, ...] = ("adamw", "adam", "sgd")
    schedulers: tuple[str, ...] = ("cosine", "onecycle", "step")
    # "batch": BatchNorm after the hidden layers (models/); "none": the seed network.
    norms: tuple[str, ...] = ("batch", "none")
    # Train-only augmentation: "rotate", "affine" (study/train/augment.py), or none.
    augments: tuple[str, ...] = ("affine", "rotate", "none")

    def __post_init__(self) -> None:
        if self.lr is not None:
            _check_range("lr", self.lr, log=True)
        for optimizer in OPTIMIZERS:
            _check_range(f"lr_{optimizer}", getattr(self, f"lr_{optimizer}"), log=True)
        _check_range("weight_decay", self.weight_decay, log=True, off=True)
        _check_range("momentum", self.momentum, log=False, upper=1.0)
        _check_range("dropout", self.dropout, log=False, upper=0.9)
        if not self.batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1
                                       for b in self.batch_sizes):
            raise ConfigError(f"batch_sizes must be positive integers, but got {self.batch_sizes}")
        _check_choices("optimizers", self.optimizers, OPTIMIZERS)
        _check_choices("schedulers", self.schedulers, SCHEDULERS)
        _check_choices("norms", self.norms, NORMS)
        _check_choices("augments", self.augments, AUGMENTS)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], *, source: str) -> SearchSpace:
        unknown = sorted(set(table) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"{source}: unknown [search_space] keys {unknown}; "
                f"valid keys are {sorted(cls.__dataclass_fields__)}"
            )
        not_lists = sorted(key for key, value in table.items() if not isinstance(value, list))
        if not_lists:
            raise ConfigError(f"{source}: [search_space] {not_lists} must be lists, e.g. "
                              f"lr = [1e-4, 1e-2] or optimizers = [\"adam\"]")
        try:
            return cls(**{key: tuple(value) for key, value in table.items()})
        except ConfigError as exc:
            raise ConfigError(f"{source}: [search_space] {exc}") from exc
        except TypeError as exc:  # e.g. strings where numbers belong: "a" < "b" works, 0 < "a" not
            raise ConfigError(f"{source}: [search_space] has a value of the wrong type "
                              f"({exc})") from exc

    def as_dict(self) -> dict[str, list[Any]]:
        """The space as TOML would give it: the ranges in use (lr, or one per optimizer)."""
        names = [name for name in self.__dataclass_fields__ if name not in _LR_NAMES]
        names[:0] = ["lr"] if self.lr is not None else [
            f"lr_{optimizer}" for optimizer in OPTIMIZERS if optimizer in self.optimizers]
        return {name: list(getattr(self, name)) for name in names}

    def lr_param(self, optimizer: str) -> str:
        """The Optuna parameter that holds OPTIMIZER's learning rate in this space."""
        return "lr" if self.lr is not None else f"lr_{optimizer}"

    def lr_range(self, optimizer: str) -> tuple[float, float]:
        return self.lr if self.lr is not None else getattr(self, f"lr_{optimizer}")


def _check_range(name: str, bounds: tuple[float, ...], *, log: bool, upper: float = 1e9,
                 off: bool = False) -> None:
    """Refuse a bad [low, high]. low == high pins the parameter to one value (the seed
    recipe's lr = [0.05, 0.05]); OFF allows a log range pinned at [0, 0], the setting off."""
    numbers = all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
    if len(bounds) != 2 or not numbers:
        raise ConfigError(f"{name} must be two numbers [low, high], but got {list(bounds)}")
    low, high = bounds
    switched_off = off and low == high == 0
    if low > high or (log and low <= 0 and not switched_off) or low < 0 or high > upper:
        scale = "0 < low <= high" if log else f"0 <= low <= high <= {upper}"
        if off:
            scale += ", or [0, 0] for none"
        raise ConfigError(f"{name} range must satisfy {scale}, but got {name}={list(bounds)}")


def _suggest_float(trial: optuna.trial.BaseTrial, name: str, bounds: tuple[float, float], *,
                   log: bool) -> float:
    """A float in BOUNDS; on a log scale unless pinned at zero (where no log scale exists)."""
    return trial.suggest_float(name, *bounds, log=log and bounds[0] > 0)


def _check_choices(name: str, chosen: tuple[str, ...], allowed: Collection[str]) -> None:
    bad = [c for c in chosen if c not in allowed]
    if not chosen or bad:
        raise ConfigError(f"{name} must be a non-empty subset of {list(allowed)}, but got "
                          f"{list(chosen)}")


def suggest(trial: optuna.trial.BaseTrial, space: SearchSpace, *, max_epochs: int) -> Hyperparams:
    """Sample one point of SPACE; scheduler- and optimizer-specific parameters are conditional."""
    optimizer = trial.suggest_categorical("optimizer", list(space.optimizers))
    scheduler = trial.suggest_categorical("scheduler", list(space.schedulers))
    hp = Hyperparams(
        lr=_suggest_lr(trial, space, optimizer),
        optimizer=optimizer,
        batch_size=int(str(trial.suggest_categorical("batch_size", _batch_choices(trial, space)))),
        dropout=trial.suggest_float("dropout", *space.dropout),
        weight_decay=_suggest_float(trial, "weight_decay", space.weight_decay, log=True),
        scheduler=scheduler,
        momentum=(trial.suggest_float("sgd_momentum", *space.momentum)
                  if optimizer == "sgd" else None),
        scheduler_params=SCHEDULERS[scheduler](trial, max_epochs),
        norm=_choice(trial, "norm", space.norms),
    )
    # Last, so that the parameters above draw what they drew before these choices existed.
    augment = _choice(trial, "augment", space.augments)
    return dataclasses.replace(hp, augment=augment, augment_params=AUGMENTS[augment](trial))


def _suggest_lr(trial: optuna.trial.BaseTrial, space: SearchSpace, optimizer: str) -> float:
    """The learning rate, in OPTIMIZER's range; parameters given by hand (a FixedTrial) may
    call it "lr" whatever the space, as hyperparams_from_params reads them."""
    from optuna.trial import FixedTrial

    name, bounds = space.lr_param(optimizer), space.lr_range(optimizer)
    try:
        return _suggest_float(trial, name, bounds, log=True)
    except ValueError:
        if isinstance(trial, FixedTrial) and name != "lr":
            return _suggest_float(trial, "lr", bounds, log=True)
        raise


def _choice(trial: optuna.trial.BaseTrial, name: str, choices: Sequence[str]) -> str:
    """A categorical choice; parameters given by hand (a FixedTrial) may leave out one that
    has a single choice, as they could before the parameter existed."""
    from optuna.trial import FixedTrial

    try:
        return str(trial.suggest_categorical(name, list(choices)))
    except ValueError:
        if isinstance(trial, FixedTrial) and len(choices) == 1:
            return choices[0]
        raise


def batch_size_label(size: int, sizes: Sequence[int]) -> str:
    """SIZE zero-padded to the widest of SIZES: "0032" ... "1024".

    optuna-dashboard orders a categorical parameter's values as text, so plain numbers would
    put 1024 before 128 in its contour and rank plots; equal-width labels sort by size.
    """
    return str(size).zfill(len(str(max(sizes))))


def as_stored(params: Mapping[str, Any], space: SearchSpace) -> dict[str, Any]:
    """PARAMS as a trial of SPACE stores them (a batch size as its label): what
    `study.enqueue_trial` must be given for Optuna to take them as they are."""
    stored = dict(params)
    if "lr" in stored and space.lr is None:
        stored[space.lr_param(str(stored["optimizer"]))] = stored.pop("lr")
    if isinstance(stored.get("batch_size"), int):
        stored["batch_size"] = batch_size_label(stored["batch_size"], space.batch_sizes)
    return stored


def _batch_choices(trial: optuna.trial.BaseTrial, space: SearchSpace) -> list[int | str]:
    from optuna.trial import FixedTrial

    sizes = sorted(space.batch_sizes)
    labels = [batch_size_label(s, sizes) for s in sizes]
    if isinstance(trial, FixedTrial):  # parameters given by hand: a plain int will do too
        return [*labels, *sizes]
    study = getattr(trial, "study", None)
    if study is not None and _study_uses_plain_batch_sizes(study):
        return list(sizes)  # a study made before the labels: its stored distribution stays
    return list(labels)


def _study_uses_plain_batch_sizes(study: optuna.Study) -> bool:
    from optuna.distributions import CategoricalDistribution

    for trial in study.get_trials(deepcopy=False):
        distribution = trial.distributions.get("batch_size")
        if isinstance(distribution, CategoricalDistribution):
            return isinstance(distribution.choices[0], int)
    return False


def hyperparams_from_params(params: Mapping[str, Any]) -> Hyperparams:
    """Rebuild Hyperparams from a finished trial's params (FrozenTrial.params)."""
    core = {*_LR_NAMES, "optimizer", "batch_size", "dropout", "weight_decay", "scheduler",
            "sgd_momentum", "norm", "augment", *AUGMENT_PARAMS}
    return Hyperparams(
        # "lr", or per optimizer "lr_<optimizer>" (a space without a shared range)
        lr=float(params["lr"] if "lr" in params else params[f"lr_{params['optimizer']}"]),
        optimizer=str(params["optimizer"]),
        batch_size=int(params["batch_size"]),
        dropout=float(params["dropout"]),
        weight_decay=float(params["weight_decay"]),
        scheduler=str(params["scheduler"]),
        momentum=float(params["sgd_momentum"]) if "sgd_momentum" in params else None,
        scheduler_params={k: v for k, v in params.items() if k not in core},
        norm=str(params.get("norm", "none")),  # trials made before norm was searched: none
        augment=str(params.get("augment", "none")),
        augment_params={k: float(params[k]) for k in AUGMENT_PARAMS if k in params},
    )
