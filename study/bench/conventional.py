"""The baseline: MNIST the way the seed script and Optuna's PyTorch example load it.

torchvision.datasets.MNIST + ToTensor + Normalize, a DataLoader(shuffle=True) that builds each
batch from PIL images one sample at a time, and, in the study, the data reloaded by every
trial. Model, search space, optimizer and scheduler builders are the project's own, so the
data path and the loop are the only differences.
"""

from __future__ import annotations

import gzip
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim import lr_scheduler
from torch.utils.data import DataLoader, Dataset, Subset

import models
from data_pipeline import MnistFiles, Partition
from study.run.objective import trial_seed
from study.search.search_space import SearchSpace, suggest
from study.store.record import BEST_VAL_ACC_ATTR, BEST_VAL_LOSS_ATTR, EPOCHS_TRAINED_ATTR
from study.train.engine_types import Hyperparams
from study.train.training import build_optimizer, build_scheduler

# The constants every MNIST tutorial normalises with (fitted on all 60k training images).
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
VAL_BATCH_SIZE = 1000  # the test_batch_size of PyTorch's MNIST example
GZIP_MAGIC = b"\x1f\x8b"


def torchvision_root(files: MnistFiles, root: Path) -> Path:
    """ROOT/MNIST/raw/ holding uncompressed copies of FILES: what torchvision's MNIST reads."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem, path in files.paths.items():
        target = raw / stem
        if target.exists():
            continue
        with path.open("rb") as head:
            compressed = head.read(2) == GZIP_MAGIC
        with (gzip.open(path, "rb") if compressed else path.open("rb")) as src, \
                target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    return root


def mnist_dataset(root: Path) -> Dataset[tuple[torch.Tensor, int]]:
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    return datasets.MNIST(str(root), train=True, download=False, transform=transform)


def mnist_labels(root: Path) -> np.ndarray:
    from torchvision import datasets

    return datasets.MNIST(str(root), train=True, download=False).targets.numpy()


def loaders(root: Path, split: Partition, batch_size: int) -> tuple[DataLoader[tuple[torch.Tensor,
                                                                               int]], ...]:
    """Train (shuffled) and validation loaders over a holdout split's indices; reads the files."""
    full = mnist_dataset(root)
    train = DataLoader(Subset(full, split.train[0].tolist()), batch_size=batch_size,
                       shuffle=True)
    val = DataLoader(Subset(full, split.val[0].tolist()), batch_size=VAL_BATCH_SIZE)
    return train, val


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer,
                step_scheduler: Callable[[], object] | None,
                loader: DataLoader[tuple[torch.Tensor, int]], device: torch.device) -> None:
    """The textbook loop; STEP_SCHEDULER, when given, runs after every batch (OneCycle)."""
    model.train()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        if step_scheduler is not None:
            step_scheduler()


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader[tuple[torch.Tensor, int]],
             device: torch.device) -> tuple[float, float]:
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(dim=1) == y).sum().item())
        seen += len(y)
    return loss_sum / seen, correct / seen


def timed_epoch(model: nn.Module, optimizer: torch.optim.Optimizer,
                loaders_: tuple[DataLoader[tuple[torch.Tensor, int]], ...],
                device: torch.device) -> float:
    """Seconds for one training epoch plus the validation pass, as a trial's epoch costs."""
    started = time.perf_counter()
    train_epoch(model, optimizer, None, loaders_[0], device)
    evaluate(model, loaders_[1], device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


@dataclass
class ConventionalObjective:
    """Optuna's PyTorch example adapted to this study: the same space, objective and pruning."""

    root: Path
    split: Partition  # a holdout: one fold
    space: SearchSpace
    max_epochs: int
    hidden: int
    seed: int
    device: torch.device

    def __call__(self, trial: optuna.Trial) -> float:
        hp = suggest(trial, self.space, max_epochs=self.max_epochs)
        torch.manual_seed(trial_seed(self.seed, trial.number))
        train_loader, val_loader = loaders(self.root, self.split, hp.batch_size)  # per trial
        model = models.build("mlp", hidden=self.hidden, dropout=hp.dropout).to(self.device)
        optimizer = build_optimizer(model, hp)
        schedule = build_scheduler(optimizer, hp, max_epochs=self.max_epochs,
                                   steps_per_epoch=len(train_loader))
        per_batch = schedule.scheduler.step if schedule.per_batch and schedule.scheduler else None
        best_loss = math.inf
        for epoch in range(1, self.max_epochs + 1):
            train_epoch(model, optimizer, per_batch, train_loader, self.device)
            val_loss, val_acc = evaluate(model, val_loader, self.device)
            _step_epoch(schedule.scheduler, hp, val_loss)
            trial.set_user_attr(EPOCHS_TRAINED_ATTR, epoch)
            if val_loss < best_loss:
                best_loss = val_loss
                trial.set_user_attr(BEST_VAL_LOSS_ATTR, val_loss)
                trial.set_user_attr(BEST_VAL_ACC_ATTR, val_acc)
            trial.report(val_loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return best_loss


def _step_epoch(scheduler: object, hp: Hyperparams, val_loss: float) -> None:
    if hp.scheduler in ("none", "onecycle"):
        return
    if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_loss)
    elif isinstance(scheduler, lr_scheduler.LRScheduler):
        scheduler.step()
