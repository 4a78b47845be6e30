"""Model names and where each model's class lives: the one list of models.

Cheap to import (no torch): the config validates `model` against these names and the CLI offers
them as choices while parsing `--help`. A new model is its module plus one line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from torch import nn

# name -> "module:Class"; the order is the order `--help` lists them in.
MODELS: dict[str, str] = {
    "mlp": "models.mlp:MLP",
    "cnn": "models.cnn:SmallCNN",
}


# Normalisation layers a model may have: "none", or BatchNorm after the hidden layers.
NORMS = ("none", "batch")


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {list(NORMS)}")
    return norm


def model_class(name: str) -> type[nn.Module]:
    """The class registered as NAME, its module imported now (and torch with it)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    module, _, attribute = MODELS[name].partition(":")
    return cast("type[nn.Module]", getattr(importlib.import_module(module), attribute))
