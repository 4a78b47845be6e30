"""The warm start: a new study's first trials are known-good recipes, enqueued with Optuna's
enqueue_trial, so that the study has a good model within seconds and the sampler starts its
model from good points instead of from noise alone.

The recipes are, in order: a fast start, which reaches 98% validation accuracy within a few
seconds of training on a CPU (the MLP only: a short, steep step schedule at batch 256); the best
configuration this project has measured for the network; and the seed recipe
(study/run/baseline.py). A recipe is enqueued only where the study's space holds its
choices (optimizer, scheduler, batch size, norm, augmentation); a number outside the space's
range is moved to the nearest bound (the seed recipe's momentum 0 and weight decay 0, on a
log scale that has no 0), and the trial's user attribute `warm_start` says so
(store/record.py enqueues them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from study.search.search_space import SearchSpace
from study.train.engine_types import Hyperparams

# The seed documents' learning-rate experiment (study/run/baseline.py trains it as given).
SEED_RECIPE = Hyperparams(lr=0.05, optimizer="sgd", batch_size=64, dropout=0.0,
                          weight_decay=0.0, scheduler="step", momentum=0.0,
                          scheduler_params={"step_size": 5, "step_gamma": 0.5})

# The best measured configuration of each network (README, "Results on real MNIST").
BEST_KNOWN: Mapping[str, Hyperparams] = {
    "mlp": Hyperparams(lr=0.0179, optimizer="adamw", batch_size=64, dropout=0.0,
                       weight_decay=1.6e-5, scheduler="cosine", norm="batch",
                       augment="affine", augment_params={"aug_degrees": 10.0,
                                                         "aug_translate": 0.08,
                                                         "aug_scale": 0.08}),
    "cnn": Hyperparams(lr=1.9e-3, optimizer="adamw", batch_size=128, dropout=0.38,
                       weight_decay=4.6e-4, scheduler="onecycle",
                       scheduler_params={"onecycle_pct_start": 0.35}, norm="batch",
                       augment="affine", augment_params={"aug_degrees": 6.4,
                                                         "aug_translate": 0.10,
                                                         "aug_scale": 0.086}),
}

# A good model first, within seconds (README, "How it works", warm start): large steps at
# batch 256, cut by 0.3 every 4 epochs, so the recipe has converged by epoch 15 or so and early
# stopping ends it; the same BatchNorm and augmentation as the best known recipe.
FAST_START: Mapping[str, Hyperparams] = {
    "mlp": Hyperparams(lr=0.03, optimizer="adamw", batch_size=256, dropout=0.0,
                       weight_decay=1.6e-5, scheduler="step",
                       scheduler_params={"step_size": 4, "step_gamma": 0.3}, norm="batch",
                       augment="affine", augment_params=BEST_KNOWN["mlp"].augment_params),
}


# Recipes the pruner never judges (store/record.py's UNJUDGED_ATTR): the fast start's losses
# at epochs 2, 6 and 18 are ones that no trial annealing over 40 epochs reaches there, so as a
# rung's value they would prune the best known recipe itself.
UNJUDGED = frozenset({"fast start"})


def recipes(model: str) -> dict[str, Hyperparams]:
    """The warm-start recipes for MODEL, in the order they are enqueued."""
    named = {"fast start": FAST_START, "best known": BEST_KNOWN}
    found = {name: table[model] for name, table in named.items() if model in table}
    return {**found, "seed recipe": SEED_RECIPE}


def timing_recipe(model: str) -> Hyperparams | None:
    """The recipe whose epoch a budget plan times: the best known, the kind of trial a search
    mostly trains (batch 64), not the fast start's quicker epochs at batch 256."""
    return BEST_KNOWN.get(model)


def fitted(hp: Hyperparams, space: SearchSpace, *,
           max_epochs: int) -> tuple[Hyperparams, list[str]] | None:
    """HP as SPACE (of trials of MAX_EPOCHS) holds it, and what had to move; None when SPACE
    lacks one of its choices."""
    choices = {"optimizer": space.optimizers, "scheduler": space.schedulers,
               "batch_size": space.batch_sizes, "norm": space.norms, "augment": space.augments}
    if any(getattr(hp, name) not in allowed for name, allowed in choices.items()):
        return None
    ranges = {"lr": space.lr_range(hp.optimizer), "weight_decay": space.weight_decay,
              "dropout": space.dropout}
    if hp.momentum is not None:
        ranges["momentum"] = space.momentum
    moved, values = [], {}
    for name, (low, high) in ranges.items():
        value = getattr(hp, name)
        inside = min(max(value, low), high)
        if inside != value:
            moved.append(f"{name} {value:g} -> {inside:g}")
        values[name] = inside
    schedule = dict(hp.scheduler_params)
    if "step_size" in schedule:  # search_space._step_params: 1 .. max_epochs // 2
        most = max(1, max_epochs // 2)
        if schedule["step_size"] > most:
            moved.append(f"step_size {schedule['step_size']:g} -> {most}")
            schedule["step_size"] = most
    return dataclasses.replace(hp, **values, scheduler_params=schedule), moved
