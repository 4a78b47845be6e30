"""nn.Modules for MNIST and a factory. Never imports optuna: models know nothing of search."""

from __future__ import annotations

from typing import Any

from torch import nn

from models.cnn import SmallCNN
from models.mlp import MLP

MODELS: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": SmallCNN}


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build model NAME ('mlp' or 'cnn') with keyword arguments of its constructor."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    dropout = kwargs.get("dropout", 0.0)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), but got {dropout=}")
    return MODELS[name](**kwargs)


__all__ = ["MLP", "MODELS", "SmallCNN", "build"]
