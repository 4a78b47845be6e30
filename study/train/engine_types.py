"""The engine's vocabulary: what it takes (a trial's Hyperparams, the TrainOptions of how its
steps run) and what it gives (EpochMetrics). The search, the trackers, the detectors and the
console share these types; this module imports no torch and no Optuna, so each of them may.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

AMP_MODES = ("none", "bf16")
COMPILE_MODES = ("none", "default", "reduce-overhead")  # torch.compile modes; none = eager


@dataclass(frozen=True)
class Hyperparams:
    """One trial's hyperparameters. Its fields are exactly what the trainer needs."""

    lr: float
    optimizer: str
    batch_size: int
    dropout: float
    weight_decay: float
    scheduler: str
    momentum: float | None = None  # SGD only
    scheduler_params: Mapping[str, float] = field(default_factory=dict)
    norm: str = "none"  # the network's normalisation layers (models.NORMS)
    augment: str = "none"  # train-only augmentation (AUGMENTS), with its strengths:
    augment_params: Mapping[str, float] = field(default_factory=dict)

    def model_kwargs(self) -> dict[str, Any]:
        """What of these the network is built with (models.build), beside the study's own."""
        return {"dropout": self.dropout, "norm": self.norm}

    def as_params(self) -> dict[str, float | int | str]:
        """Flat name -> value, the same names Optuna records (MLflow params, summaries)."""
        params: dict[str, float | int | str] = {
            "lr": self.lr,
            "optimizer": self.optimizer,
            "batch_size": self.batch_size,
            "dropout": self.dropout,
            "weight_decay": self.weight_decay,
            "scheduler": self.scheduler,
            "norm": self.norm,
            "augment": self.augment,
        }
        if self.momentum is not None:
            params["sgd_momentum"] = self.momentum
        params.update(self.scheduler_params)
        params.update(self.augment_params)
        return params


@dataclass(frozen=True)
class TrainOptions:
    """How the step runs, never what it learns. The defaults are the plain fp32 eager loop."""

    amp: str = "none"  # "bf16": forward and loss under bfloat16 autocast (for GPUs; CPUs work)
    compile_mode: str = "none"  # a torch.compile mode; "reduce-overhead" adds CUDA graphs
    # A cohort's full-batch steps captured once as a CUDA graph and replayed
    # (study/train/cohort/graph.py): --cuda-graph. CUDA only; a capture that fails warns once
    # and the cohort goes on eagerly.
    cuda_graph: bool = False
    # Per-epoch gradient norms, update ratios and dead units (study/train/signals.py), which
    # the detectors of dying ReLUs and exploding gradients read: --no-signals skips them.
    signals: bool = True

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {list(AMP_MODES)}, but got amp={self.amp!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {list(COMPILE_MODES)}, but got "
                             f"compile_mode={self.compile_mode!r}")


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float  # the learning rate of the epoch's last optimizer step
    seconds: float
    # grad_norm, update_ratio and dead_relu, overall and per layer (study/train/signals.py); empty
    # where they were not measured (signals off, or a step replayed from a CUDA graph).
    signals: Mapping[str, float] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        """Validation minus training loss. The training loss is the epoch's running mean with
        dropout and augmentation on, so a small negative gap is normal early on."""
        return self.val_loss - self.train_loss

    def as_dict(self) -> dict[str, float]:
        return {
            "train_loss": self.train_loss,
            "train_acc": self.train_acc,
            "val_loss": self.val_loss,
            "val_acc": self.val_acc,
            # Not "lr": that is the sampled rate, a param; this is the schedule's rate now.
            "lr_now": self.lr,
            "epoch_seconds": self.seconds,
            "loss_gap": self.gap,
            **self.signals,
        }
