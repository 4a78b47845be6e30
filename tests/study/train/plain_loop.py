"""The textbook PyTorch training loop, kept in the tests as the engine's reference: torch's own
optimizer and scheduler, the network's own nn.Dropout, batches in a permutation drawn from
the trial's generator (then the augmentation's moves, from the same generator). A lone trial
of the engine (study.train.trial.train, a cohort of one) must reach the very weights it does."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim import lr_scheduler

from data_pipeline import Fold
from study.train.augment import Augmentation, transform
from study.train.engine_types import Hyperparams
from study.train.training import background, build_optimizer, build_scheduler, evaluate


def plain_train(model: nn.Module, hp: Hyperparams, fold: Fold, *, max_epochs: int,
                generator: torch.Generator) -> list[float]:
    """Train MODEL in place; each epoch's validation loss."""
    optimizer = build_optimizer(model, hp)
    n = len(fold.train)
    schedule = build_scheduler(optimizer, hp, max_epochs=max_epochs,
                               steps_per_epoch=math.ceil(n / hp.batch_size))
    augmentation = Augmentation.from_params(hp.augment, hp.augment_params)
    val_losses = []
    for _ in range(max_epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        theta = augmentation.draw(n, generator) if augmentation.active else None
        for start in range(0, n, hp.batch_size):
            idx = order[start:start + hp.batch_size]
            x, y = fold.train.x[idx], fold.train.y[idx]
            if theta is not None:
                x = transform(x, theta[start:start + len(idx)], background(fold))
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            if schedule.per_batch and schedule.scheduler is not None:
                schedule.scheduler.step()
        val_loss, _ = evaluate(model, fold.val)
        val_losses.append(val_loss)
        if isinstance(schedule.scheduler, lr_scheduler.ReduceLROnPlateau):
            schedule.scheduler.step(val_loss)
        elif schedule.scheduler is not None and not schedule.per_batch:
            schedule.scheduler.step()
    return val_losses
