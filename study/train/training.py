"""The training loop. Knows nothing of Optuna or MLflow: tensors and hyperparameters in,
per-epoch metrics out."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim import lr_scheduler

# From the module itself, not the package: the engine needs torch alone (no scikit-learn).
from data_pipeline.tensors import Fold, TensorSet, shuffled_batches
from study.train.augment import Augmentation, transform
from study.train.engine_types import EpochMetrics, Hyperparams, TrainOptions
from study.train.signals import DEAD_SLICE, DeadUnits, SignalProbe, dead_units, signal_values

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


def train(
    model: nn.Module, hp: Hyperparams, data: Fold, *, max_epochs: int,
    generator: torch.Generator, options: TrainOptions = TrainOptions(),
) -> Iterator[EpochMetrics]:
    """Train MODEL in place for up to MAX_EPOCHS, yielding metrics after every epoch.

    The caller may stop early (pruning) simply by not asking for the next epoch.
    Raises NonFiniteLossError when a loss stops being finite. OPTIONS say how the step runs
    (the default is the plain fp32 eager loop), never what it learns.
    """
    device = data.train.y.device
    optimizer = build_optimizer(model, hp)
    steps_per_epoch = math.ceil(len(data.train) / hp.batch_size)
    schedule = build_scheduler(optimizer, hp, max_epochs=max_epochs,
                               steps_per_epoch=steps_per_epoch)
    runner = compile_for_trials(model, options)
    augmentation = Augmentation.from_params(hp.augment, hp.augment_params)
    fill = background(data) if augmentation.active else 0.0
    for epoch in range(1, max_epochs + 1):
        started = time.perf_counter()
        probe = (SignalProbe([(n, p) for n, p in model.named_parameters() if p.requires_grad])
                 if options.signals else None)
        sums, lr = _train_epoch(runner, optimizer, schedule, data.train, hp.batch_size,
                                generator, device, amp=options.amp, augmentation=augmentation,
                                background=fill, probe=probe)
        # Always fp32: the recorded val_loss must match a later re-scoring of the checkpoint.
        val_sums, relus, dead = _validation(runner, model, data, probe)
        values = torch.cat([sums, val_sums, *(
            [] if probe is None else [probe.tensors().flatten().double(), dead.double()])])
        host = values.tolist()  # the epoch's one host sync
        train_loss, train_acc = host[0] / len(data.train), host[1] / len(data.train)
        val_loss, val_acc = host[2] / len(data.val), host[3] / len(data.val)
        if not math.isfinite(train_loss):
            raise NonFiniteLossError(epoch=epoch, which="train", value=train_loss)
        if not math.isfinite(val_loss):
            raise NonFiniteLossError(epoch=epoch, which="validation", value=val_loss)
        signals = {} if probe is None else signal_values(probe, relus, host[4:])
        _step_epoch_scheduler(schedule, val_loss)
        yield EpochMetrics(
            epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss,
            val_acc=val_acc, lr=lr, seconds=time.perf_counter() - started, signals=signals,
        )


def _validation(runner: nn.Module, model: nn.Module, data: Fold, probe: SignalProbe | None,
                ) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """Validation's sums and, when signals are on, the dead units of its first DEAD_SLICE
    images: read off the same pass when it runs eagerly, by a pass of their own through the
    eager MODEL when RUNNER is compiled (its graphs would not call the hooks)."""
    device = data.val.y.device
    if probe is None:
        return evaluation_sums(runner, data.val), [], torch.zeros(0, device=device)
    if runner is not model:
        relus, dead = dead_units(model, data.val.x[:DEAD_SLICE])
        return evaluation_sums(runner, data.val), relus, dead
    recorder = DeadUnits(model, first=DEAD_SLICE)
    with recorder.recording():
        sums = evaluation_sums(runner, data.val)
    return sums, recorder.names, recorder.shares(device)


def _train_epoch(
    model: nn.Module, optimizer: torch.optim.Optimizer, schedule: _Schedule, data: TensorSet,
    batch_size: int, generator: torch.Generator, device: torch.device, *, amp: str = "none",
    augmentation: Augmentation = Augmentation(), background: float = 0.0,
    probe: SignalProbe | None = None,
) -> tuple[torch.Tensor, float]:
    """One pass over DATA; returns the summed loss and correct count ([2], on the device: the
    caller syncs once) and the last step's learning rate. AUGMENTATION moves the images (the
    epoch's moves drawn from GENERATOR after its batch order, the k-th for the epoch's k-th
    image) and brings in BACKGROUND where they have no pixel. PROBE, if any, measures the
    sampled steps' gradients and updates."""
    model.train()
    lr = optimizer.param_groups[0]["lr"]
    # Accumulated on the device: no .item() (host sync) inside the step loop.
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    theta, start = None, 0
    for idx in shuffled_batches(len(data), batch_size, generator, device):
        # index_select: half the cost of advanced indexing for a 1-D index on the CPU.
        x, y = data.x.index_select(0, idx), data.y.index_select(0, idx)
        if augmentation.active:  # training batches only: evaluate() never comes here
            if theta is None:  # the epoch's moves, drawn once, after its batch order, and
                # moved to the device once: no copy inside the step loop
                theta = augmentation.draw(len(data), generator).to(device)
            x = transform(x, theta[start:start + len(idx)], background)
            start += len(idx)
        with autocast(device, amp):
            logits = model(x)
            loss = F.cross_entropy(logits, y)  # autocast computes it in fp32
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = optimizer.param_groups[0]["lr"]  # a Python float: no device sync
        if probe is not None:
            probe.before_step()
        optimizer.step()
        if probe is not None:
            probe.after_step()
        if schedule.per_batch and schedule.scheduler is not None:
            schedule.scheduler.step()
        loss_sum.add_(loss.detach(), alpha=y.shape[0])  # one op, not a multiply and an add
        correct += (logits.detach().argmax(dim=1) == y).sum()
    return torch.stack([loss_sum, correct.double()]), lr


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
