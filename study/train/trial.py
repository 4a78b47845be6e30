"""One network trained alone: a cohort of one, through the one epoch loop there is
(study/train/cohort/engine.py). Knows nothing of Optuna or MLflow: tensors and
hyperparameters in, per-epoch metrics out."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

# From the module itself, not the package: the engine needs torch alone (no scikit-learn).
from data_pipeline.tensors import Fold
from study.train.cohort.engine import Cohort, Member
from study.train.engine_types import EpochMetrics, Hyperparams, TrainOptions
from study.train.training import NonFiniteLossError


def train(
    model: nn.Module, hp: Hyperparams, data: Fold, *, max_epochs: int,
    generator: torch.Generator, options: TrainOptions = TrainOptions(),
) -> Iterator[EpochMetrics]:
    """Train MODEL for up to MAX_EPOCHS, yielding metrics after every epoch; after each, MODEL
    holds the weights it has reached.

    The caller may stop early (pruning) simply by not asking for the next epoch. Raises
    NonFiniteLossError when a loss stops being finite. GENERATOR draws the batch order (and
    the augmentation's moves); torch's global generator the dropout masks, as in any PyTorch
    loop. OPTIONS say how the step runs (the default is the plain fp32 eager loop), never
    what it learns.
    """
    cohort = Cohort([Member(key=0, hp=hp, model=model, generator=generator)], data,
                    max_epochs=max_epochs, options=options)
    for _ in range(max_epochs):
        result = cohort.run_epoch()[0]
        if isinstance(result, NonFiniteLossError):
            raise result
        cohort.copy_member(0, model)
        yield result
