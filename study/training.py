"""The training loop. Knows nothing of Optuna or MLflow: tensors and hyperparameters in,
per-epoch metrics out."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim import lr_scheduler

from data_pipeline import SearchData, TensorSet, shuffled_batches
from study.search_space import Hyperparams

EVAL_BATCH_SIZE = 8192  # evaluation needs no gradients: big slices, few kernel launches


class NonFiniteLossError(RuntimeError):
    """Training diverged: a loss became NaN or infinite."""

    def __init__(self, *, epoch: int, which: str, value: float) -> None:
        super().__init__(f"{which} loss became {value} in epoch {epoch}: training diverged")
        self.epoch = epoch


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float  # the learning rate of the epoch's last optimizer step
    seconds: float

    def as_dict(self) -> dict[str, float]:
        return {
            "train_loss": self.train_loss,
            "train_acc": self.train_acc,
            "val_loss": self.val_loss,
            "val_acc": self.val_acc,
            "lr": self.lr,
            "epoch_seconds": self.seconds,
        }


def build_optimizer(model: nn.Module, hp: Hyperparams) -> torch.optim.Optimizer:
    params = model.parameters()
    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum or 0.0,
                               weight_decay=hp.weight_decay)
    if hp.optimizer == "adam":
        return torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
    raise ValueError(f"unknown optimizer {hp.optimizer!r}")


@dataclass
class _Schedule:
    scheduler: lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau | None
    per_batch: bool  # OneCycle steps every batch; the others every epoch


def build_scheduler(
    optimizer: torch.optim.Optimizer, hp: Hyperparams, *, max_epochs: int, steps_per_epoch: int
) -> _Schedule:
    p = hp.scheduler_params
    if hp.scheduler == "none":
        return _Schedule(None, per_batch=False)
    if hp.scheduler == "step":
        return _Schedule(lr_scheduler.StepLR(optimizer, step_size=int(p["step_size"]),
                                             gamma=p["step_gamma"]), per_batch=False)
    if hp.scheduler == "cosine":
        return _Schedule(lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs),
                         per_batch=False)
    if hp.scheduler == "exponential":
        return _Schedule(lr_scheduler.ExponentialLR(optimizer, gamma=p["exp_gamma"]),
                         per_batch=False)
    if hp.scheduler == "plateau":
        return _Schedule(lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=p["plateau_factor"], patience=int(p["plateau_patience"])),
            per_batch=False)
    if hp.scheduler == "onecycle":
        return _Schedule(lr_scheduler.OneCycleLR(
            optimizer, max_lr=hp.lr, epochs=max_epochs, steps_per_epoch=steps_per_epoch,
            pct_start=p["onecycle_pct_start"]), per_batch=True)
    raise ValueError(f"unknown scheduler {hp.scheduler!r}")


@torch.inference_mode()
def evaluate(model: nn.Module, data: TensorSet) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of MODEL on DATA, in large batches."""
    model.eval()
    loss_sum = torch.zeros((), device=data.y.device, dtype=torch.float64)
    correct = torch.zeros((), device=data.y.device, dtype=torch.int64)
    for start in range(0, len(data), EVAL_BATCH_SIZE):
        x = data.x[start:start + EVAL_BATCH_SIZE]
        y = data.y[start:start + EVAL_BATCH_SIZE]
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(dim=1) == y).sum()
    # One host sync per evaluation, not one per batch.
    return loss_sum.item() / len(data), correct.item() / len(data)


def train(
    model: nn.Module, hp: Hyperparams, data: SearchData, *, max_epochs: int,
    generator: torch.Generator,
) -> Iterator[EpochMetrics]:
    """Train MODEL in place for up to MAX_EPOCHS, yielding metrics after every epoch.

    The caller may stop early (pruning) simply by not asking for the next epoch.
    Raises NonFiniteLossError when a loss stops being finite.
    """
    device = data.train.y.device
    optimizer = build_optimizer(model, hp)
    steps_per_epoch = math.ceil(len(data.train) / hp.batch_size)
    schedule = build_scheduler(optimizer, hp, max_epochs=max_epochs,
                               steps_per_epoch=steps_per_epoch)
    for epoch in range(1, max_epochs + 1):
        started = time.perf_counter()
        train_loss, train_acc, lr = _train_epoch(model, optimizer, schedule, data.train,
                                                 hp.batch_size, generator, device)
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(epoch=epoch, which="train", value=train_loss)
        val_loss, val_acc = evaluate(model, data.val)
        if not math.isfinite(val_loss):
            raise NonFiniteLossError(epoch=epoch, which="validation", value=val_loss)
        _step_epoch_scheduler(schedule, val_loss)
        yield EpochMetrics(
            epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss,
            val_acc=val_acc, lr=lr,
            seconds=time.perf_counter() - started,
        )


def _train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, schedule: _Schedule, data: TensorSet,
    batch_size: int, generator: torch.Generator, device: torch.device,
) -> tuple[float, float, float]:
    """One pass over DATA; returns mean loss, accuracy and the last step's learning rate."""
    model.train()
    lr = optimizer.param_groups[0]["lr"]
    # Accumulated on the device: no .item() (host sync) inside the step loop.
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for idx in shuffled_batches(len(data), batch_size, generator, device):
        x, y = data.x[idx], data.y[idx]
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = optimizer.param_groups[0]["lr"]  # a Python float: no device sync
        optimizer.step()
        if schedule.per_batch and schedule.scheduler is not None:
            schedule.scheduler.step()
        loss_sum += loss.detach() * y.shape[0]
        correct += (logits.detach().argmax(dim=1) == y).sum()
    return loss_sum.item() / len(data), correct.item() / len(data), lr


def _step_epoch_scheduler(schedule: _Schedule, val_loss: float) -> None:
    if schedule.scheduler is None or schedule.per_batch:
        return
    if isinstance(schedule.scheduler, lr_scheduler.ReduceLROnPlateau):
        schedule.scheduler.step(val_loss)
    else:
        schedule.scheduler.step()
