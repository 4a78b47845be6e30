"""What the one epoch loop (study/train/cohort/engine.py) is made of, one trial's worth: torch's
optimizers and schedulers as a trial's hyperparameters name them, evaluation, bf16 autocast,
torch.compile and CPU threads. Knows nothing of Optuna or MLflow."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim import lr_scheduler

# From the module itself, not the package: the engine needs torch alone (no scikit-learn).
from data_pipeline.tensors import Fold, TensorSet
from study.train.engine_types import Hyperparams, TrainOptions

logger = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 8192  # evaluation needs no gradients: big slices, few kernel launches


def set_cpu_threads(threads: int) -> None:
    """Intra-op threads for CPU work; 0 keeps torch's default (one per core).

    MNIST's matrices are small: on an idle 2-core machine a second thread gains the MLP little
    or nothing, and beside one busy process its spinning OpenMP threads make an epoch several
    times slower (docs/benchmarks.md, section 1). More cores pay off as more study workers.
    """
    if threads < 0:
        raise ValueError(f"threads must be >= 0, but got {threads=}")
    if threads:
        torch.set_num_threads(threads)
    logger.info("CPU intra-op threads: %d", torch.get_num_threads())


class NonFiniteLossError(RuntimeError):
    """Training diverged: a loss became NaN or infinite."""

    def __init__(self, *, epoch: int, which: str, value: float) -> None:
        super().__init__(f"{which} loss became {value} in epoch {epoch}: training diverged")
        self.epoch = epoch


def build_optimizer(
    model: nn.Module, hp: Hyperparams, *, fused: bool = True
) -> torch.optim.Optimizer:
    params = model.parameters()
    # Fused kernels (CPU and CUDA) instead of torch's default loop of small ops per parameter:
    # one pass over memory per step, measured faster on the CPU (docs/benchmarks.md, sec. 6).
    speed = True if fused else None  # None: torch's default (for-loop or foreach)
    if hp.optimizer == "sgd":
        return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum or 0.0,
                               weight_decay=hp.weight_decay, fused=speed)
    if hp.optimizer == "adam":
        return torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay, fused=speed)
    if hp.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay, fused=speed)
    raise ValueError(f"unknown optimizer {hp.optimizer!r}")


@dataclass
class _Schedule:
    scheduler: lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau | None
    per_batch: bool  # OneCycle steps every batch; the others every epoch


def build_scheduler(
    optimizer: torch.optim.Optimizer, hp: Hyperparams, *, max_epochs: int, steps_per_epoch: int
) -> _Schedule:
    build = SCHEDULERS.get(hp.scheduler)
    if build is None:
        raise ValueError(f"unknown scheduler {hp.scheduler!r}; choose one of {sorted(SCHEDULERS)}")
    return build(optimizer, hp, max_epochs, steps_per_epoch)


def _none(opt: torch.optim.Optimizer, hp: Hyperparams, epochs: int, steps: int) -> _Schedule:
    return _Schedule(None, per_batch=False)


def _step(opt: torch.optim.Optimizer, hp: Hyperparams, epochs: int, steps: int) -> _Schedule:
    p = hp.scheduler_params
    return _Schedule(lr_scheduler.StepLR(opt, step_size=int(p["step_size"]),
                                         gamma=p["step_gamma"]), per_batch=False)


def _cosine(opt: torch.optim.Optimizer, hp: Hyperparams, epochs: int, steps: int) -> _Schedule:
    return _Schedule(lr_scheduler.CosineAnnealingLR(opt, T_max=epochs), per_batch=False)


def _plateau(opt: torch.optim.Optimizer, hp: Hyperparams, epochs: int, steps: int) -> _Schedule:
    p = hp.scheduler_params
    return _Schedule(lr_scheduler.ReduceLROnPlateau(
        opt, factor=p["plateau_factor"], patience=int(p["plateau_patience"])), per_batch=False)


def _onecycle(opt: torch.optim.Optimizer, hp: Hyperparams, epochs: int, steps: int) -> _Schedule:
    return _Schedule(lr_scheduler.OneCycleLR(
        opt, max_lr=hp.lr, epochs=epochs, steps_per_epoch=steps,
        pct_start=hp.scheduler_params["onecycle_pct_start"]), per_batch=True)


def _exponential(opt: torch.optim.Optimizer, hp: Hyperparams, epochs: int,
                 steps: int) -> _Schedule:
    return _Schedule(lr_scheduler.ExponentialLR(opt, gamma=hp.scheduler_params["exp_gamma"]),
                     per_batch=False)


# name -> builder(optimizer, hyperparams, max_epochs, steps_per_epoch): the other half of each
# scheduler, beside its parameters' suggestions in search_space.SCHEDULERS (same names).
SCHEDULERS: dict[str, Callable[[torch.optim.Optimizer, Hyperparams, int, int], _Schedule]] = {
    "none": _none, "step": _step, "cosine": _cosine, "plateau": _plateau,
    "onecycle": _onecycle, "exponential": _exponential,
}


def evaluate(model: nn.Module, data: TensorSet) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of MODEL on DATA, in large batches."""
    loss_sum, correct = evaluation_sums(model, data).tolist()  # one host sync
    return loss_sum / len(data), correct / len(data)


@torch.inference_mode()
def evaluation_sums(model: nn.Module, data: TensorSet) -> torch.Tensor:
    """Summed cross-entropy and correct count of MODEL on DATA ([2] float64, on the device:
    no host sync)."""
    model.eval()
    loss_sum = torch.zeros((), device=data.y.device, dtype=torch.float64)
    correct = torch.zeros((), device=data.y.device, dtype=torch.int64)
    for start in range(0, len(data), EVAL_BATCH_SIZE):
        x = data.x[start:start + EVAL_BATCH_SIZE]
        y = data.y[start:start + EVAL_BATCH_SIZE]
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(dim=1) == y).sum()
    return torch.stack([loss_sum, correct.double()])


def background(fold: Fold) -> float:
    """A black pixel as FOLD's normalisation makes it: what augmentation moves in."""
    return -fold.normalizer.mean / fold.normalizer.std


def autocast(device: torch.device, amp: str, *,
             cache: bool = True) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast for AMP "bf16", else nothing. CACHE=False where a CUDA graph captures
    the step: autocast's cache of cast weights must not outlive the capture."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache)


def compile_for_trials(model: nn.Module, options: TrainOptions) -> nn.Module:
    """MODEL itself, or a compiled view of it whose graphs every later trial reuses.

    Dynamo keys compiled code on the forward's code object and guards on the module's
    structure, not its identity, so a new model of the same shape hits the cache. Two things
    would still recompile every trial: the batch size (dynamic=True makes it symbolic) and the
    dropout rate, a Python float Dropout bakes into the graph. Dropout modules are therefore
    swapped, in place, for one holding its rate in a buffer (the state_dict is unchanged).
    """
    if options.compile_mode == "none":
        return model
    dropout_rate_as_buffer(model)
    mode = None if options.compile_mode == "default" else options.compile_mode
    compiled = torch.compile(model, mode=mode, dynamic=True)
    return cast(nn.Module, compiled)


class _BufferRateDropout(nn.Module):
    """Dropout whose rate is a tensor: one compiled graph serves every rate."""

    p: torch.Tensor  # [] float, the drop probability

    def __init__(self, p: float) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(float(p)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = torch.rand_like(x) >= self.p  # P(keep) = 1 - p, as in nn.Dropout
        return x * keep / (1.0 - self.p)


def dropout_rate_as_buffer(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Dropout):
            # The rate lives where the model lives (it may already be on the GPU).
            device = next((t.device for t in module.parameters()), torch.device("cpu"))
            setattr(module, name, _BufferRateDropout(child.p).to(device))
        else:
            dropout_rate_as_buffer(child)


def _step_epoch_scheduler(schedule: _Schedule, val_loss: float) -> None:
    if schedule.scheduler is None or schedule.per_batch:
        return
    if isinstance(schedule.scheduler, lr_scheduler.ReduceLROnPlateau):
        schedule.scheduler.step(val_loss)
    else:
        schedule.scheduler.step()
