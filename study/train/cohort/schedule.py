"""Each cohort member's learning rate (and momentum or beta1) from torch's own schedulers.

No schedule formula lives here: every member gets a shadow optimizer of its own kind over one
dummy parameter, built by study.train.training.build_optimizer, and the scheduler that
study.train.training.build_scheduler builds for it. The shadows never update anything; they are
read for the numbers the stacked optimizer (study.train.cohort.optim) then applies to all members.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from study.train.engine_types import Hyperparams
from study.train.training import _Schedule, _step_epoch_scheduler, build_optimizer, build_scheduler


class MemberSchedules:
    """Each member's learning rate (and momentum/beta1) from torch's own scheduler classes: a
    shadow optimizer of the member's kind over one dummy parameter, with the scheduler
    study.train.training.build_scheduler builds for it -- the same classes and arguments as a solo
    trial.

    Call order, as the plain PyTorch loop: read lr() and momentum() before each
    optimizer step, step_batch() after it, step_epoch() after the epoch's validation.
    """

    def __init__(self, hps: Sequence[Hyperparams], *, max_epochs: int,
                 steps_per_epoch: int) -> None:
        if not hps or max_epochs < 1 or steps_per_epoch < 1:
            raise ValueError(f"need at least one member, max_epochs >= 1 and "
                             f"steps_per_epoch >= 1, but got {len(hps)} members, "
                             f"{max_epochs=}, {steps_per_epoch=}")
        self._max_epochs, self._steps_per_epoch = max_epochs, steps_per_epoch
        self._optimizers: list[torch.optim.Optimizer] = []
        self._schedules: list[_Schedule] = []
        self.add(hps)

    def add(self, hps: Sequence[Hyperparams]) -> None:
        """Members join, last: each schedule starts from its first step, as a solo run's."""
        for hp in hps:
            optimizer, schedule = _shadow(hp, max_epochs=self._max_epochs,
                                          steps_per_epoch=self._steps_per_epoch)
            self._optimizers.append(optimizer)
            self._schedules.append(schedule)

    def __len__(self) -> int:
        return len(self._schedules)

    def lr(self) -> list[float]:
        """Each member's learning rate for the next optimizer step."""
        return [optimizer.param_groups[0]["lr"] for optimizer in self._optimizers]

    def momentum(self) -> list[float]:
        """Each member's momentum (SGD) or beta1 (Adam, AdamW) for the next step: OneCycleLR
        cycles it, as it does in a solo trial."""
        return [_momentum(optimizer) for optimizer in self._optimizers]

    def epoch_table(self, steps: int) -> tuple[list[list[float]], list[list[float]]]:
        """The next STEPS optimizer steps' learning rates and momenta, [step][member], read as
        a plain loop reads them before each step, the per-batch schedulers stepped after each:
        a whole epoch's rates in one table, so that the engine copies them to the device once
        an epoch instead of once a step."""
        lrs, momenta = [], []
        for _ in range(steps):
            lrs.append(self.lr())
            momenta.append(self.momentum())
            self.step_batch()
        return lrs, momenta

    def step_batch(self) -> None:
        """After each optimizer step: the per-batch schedulers (OneCycle) step; others don't."""
        for schedule in self._schedules:
            if schedule.per_batch and schedule.scheduler is not None:
                schedule.scheduler.step()

    def step_epoch(self, val_losses: Sequence[float]) -> None:
        """After validation: the per-epoch schedulers step, ReduceLROnPlateau on its own
        member's validation loss (VAL_LOSSES, one per member)."""
        if len(val_losses) != len(self._schedules):
            raise ValueError(f"need one validation loss per member ({len(self._schedules)}), "
                             f"but got {len(val_losses)}: {list(val_losses)}")
        for schedule, val_loss in zip(self._schedules, val_losses):
            _step_epoch_scheduler(schedule, val_loss)  # study.train.training's

    def keep(self, rows: Sequence[int]) -> None:
        """Members leave: keep only ROWS (ascending member indices), as the optimizer does."""
        kept = list(rows)
        if kept != sorted(set(kept)) or not kept or kept[0] < 0 or kept[-1] >= len(self):
            raise ValueError(f"rows must be ascending distinct member indices below "
                             f"{len(self)}, but got rows={kept}")
        self._optimizers = [self._optimizers[r] for r in kept]
        self._schedules = [self._schedules[r] for r in kept]


def _shadow(hp: Hyperparams, *, max_epochs: int,
            steps_per_epoch: int) -> tuple[torch.optim.Optimizer, _Schedule]:
    holder = nn.Module()
    holder.register_parameter("dummy", nn.Parameter(torch.zeros(1)))
    # Not fused: the dummy never updates, and the class and hyperparameters are what the
    # scheduler sees (OneCycleLR cycles "momentum" for SGD, "betas" for Adam and AdamW).
    optimizer = build_optimizer(holder, hp, fused=False)
    schedule = build_scheduler(optimizer, hp, max_epochs=max_epochs,
                               steps_per_epoch=steps_per_epoch)
    # A plain loop steps its optimizer before its scheduler; torch warns when a scheduler
    # steps first. One step with no gradient changes nothing and tells torch it happened.
    optimizer.step()
    return optimizer, schedule


def _momentum(optimizer: torch.optim.Optimizer) -> float:
    group = optimizer.param_groups[0]
    if "betas" in group:
        return float(group["betas"][0])
    return float(group["momentum"])
