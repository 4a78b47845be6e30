"""nn.Modules for MNIST and a factory. Never imports optuna: models know nothing of search.

Importing the package costs nothing: torch loads with the first model built (or class named),
so `models.MODELS` serves the config and the CLI's `--help` as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from models.registry import MODELS, NORMS, model_class

if TYPE_CHECKING:
    from torch import nn


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build model NAME (a key of MODELS) with keyword arguments of its constructor."""
    cls = model_class(name)  # an unknown NAME is refused here, with the choices
    dropout = kwargs.get("dropout", 0.0)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), but got {dropout=}")
    return cls(**kwargs)


def __getattr__(attribute: str) -> type[nn.Module]:
    """`models.MLP` and the like: each registered class by its own name, imported when named."""
    for name, location in MODELS.items():
        if location.endswith(f":{attribute}"):
            return model_class(name)
    raise AttributeError(f"module 'models' has no attribute {attribute!r}")


__all__ = ["MODELS", "NORMS", "build", "model_class"]
