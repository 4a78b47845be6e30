"""The one epoch loop: K members of one fold and one batch size trained as one stacked model.

Every trial trains here; a lone trial is a cohort of one (study/train/trial.py), which reaches
exactly the weights of the textbook PyTorch loop (tests/study/train/plain_loop.py). A member is
one (trial, fold) pair. Each member keeps everything that makes a lone trial what it is: its
network built and seeded as a lone trial builds it, its batch order drawn from its own
generator (torch.randperm on the CPU, the same on every device), its own dropout masks,
optimizer kind, hyperparameters and learning-rate schedule. Only the arithmetic is shared: one
stacked forward and backward pass per step, one vectorised optimizer update. Members leave at
epoch boundaries (pruned, diverged or done) and the stack is compacted; new members may join
there too, each counting its own epochs from 1. This module knows nothing of Optuna or MLflow.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from data_pipeline.tensors import Fold
from study.train.augment import Augmentation, transform
from study.train.cohort.fused import MemberOptimizers
from study.train.cohort.graph import WARMUP_STEPS, CapturedStep, on_side_stream
from study.train.cohort.memory import evaluation_image_bytes, evaluation_slice
from study.train.cohort.optim import Rates, StackedOptimizer
from study.train.cohort.schedule import MemberSchedules
from study.train.cohort.stack import StackedModel, StateDict
from study.train.engine_types import EpochMetrics, Hyperparams, TrainOptions
from study.train.signals import DEAD_SLICE, SignalProbe, dead_units, signal_values
from study.train.training import NonFiniteLossError, autocast, background

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """One (trial, fold): what a solo run of train() would be given."""

    key: Hashable  # the caller's name for it, e.g. (trial number, fold)
    hp: Hyperparams
    model: nn.Module  # built and seeded as a lone trial builds it, on the fold's device
    generator: torch.Generator  # its batch order (and augmentation moves)


class Cohort:
    """Members that share a fold and a batch size, trained one epoch at a time."""

    def __init__(self, members: Sequence[Member], fold: Fold, *, max_epochs: int,
                 options: TrainOptions = TrainOptions()) -> None:
        if not members:
            raise ValueError("a cohort needs at least one member")
        sizes = {m.hp.batch_size for m in members}
        if len(sizes) != 1:
            raise ValueError(f"a cohort's members share one batch size, but got {sorted(sizes)}")
        if options.compile_mode != "none" and len(members) > 1:
            raise ValueError(f"compile_mode={options.compile_mode!r} compiles a lone "
                             f"network: a cohort of one, but got {len(members)} members")
        self.fold = fold
        self.batch_size = sizes.pop()
        self.max_epochs = max_epochs
        self.options = options
        self._graph_failed = False  # a capture failed: the cohort steps eagerly from then on
        self.members: list[Member] = []
        self._epochs: dict[Hashable, int] = {}
        self._stack(members)

    def _stack(self, members: Sequence[Member]) -> None:
        """A new stack of MEMBERS (the cohort has none left, or is new). SGD members first,
        then Adam/AdamW: each update family is one contiguous block of rows, which the
        vectorised optimizer updates through views instead of gathered copies."""
        self.members = sorted(members, key=lambda m: m.hp.optimizer != "sgd")
        self.model = StackedModel([m.model for m in self.members], self.fold.train.x[:2])
        if self.options.compile_mode != "none":
            self.model.compile_single(self.options)
        self.optimizer = _optimizer(self.fold.train.y.device)(
            self.model.parameters(), [m.hp.optimizer for m in self.members],
            [m.hp.weight_decay for m in self.members])
        self.schedules = MemberSchedules(
            [m.hp for m in self.members], max_epochs=self.max_epochs,
            steps_per_epoch=math.ceil(len(self.fold.train) / self.batch_size))
        self._epochs = {m.key: 0 for m in self.members}
        # What evaluating one image takes per member (the architecture's, fixed for good).
        self._image_bytes = evaluation_image_bytes(self.members[0].model, self.fold.val.x[:1])
        self._forget_graph()

    def _forget_graph(self) -> None:
        """The members changed: a captured step points at tensors that are gone."""
        self._captured: CapturedStep | None = None
        self._warm = 0

    @property
    def keys(self) -> list[Hashable]:
        return [m.key for m in self.members]

    def epochs(self, key: Hashable) -> int:
        """Epochs member KEY has trained in this cohort."""
        return self._epochs[key]

    def finished(self) -> list[Hashable]:
        """The members that have trained all max_epochs: they must leave before the next."""
        return [m.key for m in self.members if self._epochs[m.key] >= self.max_epochs]

    def add(self, members: Sequence[Member]) -> None:
        """MEMBERS join at this epoch boundary, as if each started a solo run now: their own
        networks, batch orders, fresh optimizer state and schedules. They are appended (an
        SGD member after Adam ones makes the vectorised update gather its rows)."""
        if not members:
            return
        if self.options.compile_mode != "none" and len(self.members) + len(members) > 1:
            raise ValueError(f"compile_mode={self.options.compile_mode!r} compiles a lone "
                             f"network: no member can join it")
        sizes = {m.hp.batch_size for m in members}
        keys = [m.key for m in members]
        if sizes != {self.batch_size}:
            raise ValueError(f"members joining a cohort of batch size {self.batch_size} must "
                             f"share it, but got {sorted(sizes)}")
        if len(set(keys)) != len(keys) or set(keys) & set(self._epochs):
            raise ValueError(f"joining members need new, distinct keys, but got {keys}")
        if not self.members:  # everyone left: the stack still holds them, so start anew
            self._stack(members)
            return
        self.model.add([m.model for m in members])
        self.optimizer.add(self.model.parameters(), [m.hp.optimizer for m in members],
                           [m.hp.weight_decay for m in members])
        self.schedules.add([m.hp for m in members])
        self.members = [*self.members, *members]
        self._epochs.update({key: 0 for key in keys})
        self._forget_graph()

    def run_epoch(self) -> dict[Hashable, EpochMetrics | NonFiniteLossError]:
        """One epoch for every member: its metrics, or why its loss stopped being finite.

        A member whose loss is not finite is reported and should leave; the others are
        untouched by it (members share no arithmetic across rows).
        """
        if done := self.finished():
            raise RuntimeError(f"members {done} have trained all {self.max_epochs} epochs: "
                               f"remove() them first")
        if not self.members:
            raise RuntimeError("the cohort has no members left")
        for member in self.members:
            self._epochs[member.key] += 1
        started = time.perf_counter()
        train_sums, lrs, probe = self._train_epoch()
        signals = self._signals(probe)
        # The epoch's losses and accuracies, training and validation: one host sync.
        train_loss, train_acc, val_loss, val_acc = torch.cat(
            [train_sums, self._evaluate()]).tolist()
        self.schedules.step_epoch([float(v) if math.isfinite(v) else math.inf
                                   for v in val_loss])
        seconds = time.perf_counter() - started
        results: dict[Hashable, EpochMetrics | NonFiniteLossError] = {}
        for k, member in enumerate(self.members):
            epoch = self._epochs[member.key]
            if not math.isfinite(train_loss[k]):
                results[member.key] = NonFiniteLossError(epoch=epoch, which="train",
                                                         value=train_loss[k])
            elif not math.isfinite(val_loss[k]):
                results[member.key] = NonFiniteLossError(epoch=epoch, which="validation",
                                                         value=val_loss[k])
            else:
                results[member.key] = EpochMetrics(
                    epoch=epoch, train_loss=train_loss[k], train_acc=train_acc[k],
                    val_loss=val_loss[k], val_acc=val_acc[k], lr=lrs[k], seconds=seconds,
                    signals=signals[k])
        return results

    def remove(self, keys: Sequence[Hashable]) -> None:
        """The members KEYS leave; the stack, optimizer state and schedules are compacted."""
        gone = set(keys)
        rows = [k for k, m in enumerate(self.members) if m.key not in gone]
        if len(rows) == len(self.members):
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.fold.train.y.device)
        self.members = [self.members[k] for k in rows]
        self._epochs = {m.key: self._epochs[m.key] for m in self.members}
        if not rows:
            return
        self._forget_graph()
        self.model.keep(index)
        self.optimizer.keep(index, self.model.parameters())
        self.schedules.keep(rows)

    def copy_member(self, key: Hashable, module: nn.Module) -> None:
        """Member KEY's weights now into MODULE, its solo network (on the fold's device)."""
        self.model.copy_member(self.keys.index(key), module)

    def state(self, key: Hashable) -> StateDict:
        """Member KEY's weights now, as a CPU state dict with the solo model's keys."""
        return self.model.member_state(self.keys.index(key))

    def _train_epoch(self) -> tuple[torch.Tensor, list[float], SignalProbe | None]:
        """One pass over the fold for every member. Everything a step reads is made before
        the step loop, once an epoch, on the device: the batch orders, the augmentation's
        matrices and the rates; inside it nothing is copied from the host and nothing waits
        for the device (tests/study/train/cohort/test_host_syncs.py)."""
        data, device, k = self.fold.train, self.fold.train.y.device, len(self.members)
        n, b = len(data), self.batch_size
        self.model.train()
        # Each member's order from its own generator, drawn on the CPU: the same on every device.
        order = torch.stack([torch.randperm(n, generator=m.generator)
                             for m in self.members]).to(device)
        loss_sum = torch.zeros(k, device=device, dtype=torch.float64)
        correct = torch.zeros(k, device=device, dtype=torch.int64)
        # Members that augment: their images move, the epoch's moves drawn from each one's
        # generator after its batch order, as a plain loop would (the captured step holds no
        # augmentation).
        augmentations = [Augmentation.from_params(m.hp.augment, m.hp.augment_params)
                         for m in self.members]
        moving = [i for i, a in enumerate(augmentations) if a.active]
        thetas = torch.stack([augmentations[i].draw(n, self.members[i].generator)
                              for i in moving]).to(device) if moving else None  # [M, n, 2, 3]
        rows = torch.tensor(moving, dtype=torch.long, device=device)
        fill = background(self.fold) if moving else 0.0
        graphed = self._graphs_on(device) and not moving
        # Each member's gradients and updates, as a plain loop measures them (not inside a
        # captured graph: its steps are replays).
        probe = (SignalProbe([(n, p) for n, p in self.model.params.items() if p.requires_grad],
                             stacked=True) if self.options.signals and not graphed else None)
        if self._captured is not None:
            self._captured.new_epoch()
        steps = math.ceil(n / b)
        lr_table, momentum_table = self.schedules.epoch_table(steps)
        lrs, momenta = self.optimizer.rates(lr_table), self.optimizer.rates(momentum_table)
        for step, start in enumerate(range(0, n, b)):
            idx = order[:, start:start + b]  # [K, b]
            if graphed and idx.shape[1] == b:  # the last, short batch runs eagerly
                graphed = self._graphed_step(idx, lrs[step], momenta[step], loss_sum, correct)
            else:
                moves = None if thetas is None else (
                    rows, thetas[:, start:start + b].flatten(0, 1))
                self._step(idx, lrs[step], momenta[step], loss_sum, correct, moves=moves,
                           fill=fill, probe=probe)
        if self._captured is not None:
            loss_sum += self._captured.loss_sum
            correct += self._captured.correct
        # [2, K] on the device: mean losses and accuracies; the last step's rates; the probe
        return (torch.stack([loss_sum.div(n), correct.double().div(n)]), lr_table[-1], probe)

    def _signals(self, probe: SignalProbe | None) -> list[dict[str, float]]:
        """Each member's epoch signals (study/train/signals.py), in one host sync for the cohort."""
        if probe is None:
            return [{} for _ in self.members]
        x = self.fold.val.x[:DEAD_SLICE]
        relus: list[str] = []
        dead = []
        for k in range(len(self.members)):
            relus, shares = dead_units(self.model.base, x,
                                       forward=self.model.member_forward(k))
            dead.append(shares)
        grads = probe.tensors()  # [2, P + 1, K]
        table = torch.cat([grads.permute(2, 0, 1).flatten(1), torch.stack(dead)], dim=1)
        return [signal_values(probe, relus, row) for row in table.double().tolist()]

    def _step(self, idx: torch.Tensor, lr: Rates, momentum: Rates, loss_sum: torch.Tensor,
              correct: torch.Tensor, *, captured: bool = False,
              moves: tuple[torch.Tensor, torch.Tensor] | None = None,
              fill: float = 0.0, probe: SignalProbe | None = None) -> None:
        """One step of every member on the images at IDX [K, b]; the batch's summed losses
        and correct counts are added to LOSS_SUM and CORRECT. Free of host syncs, so that a
        CUDA graph can capture it (CAPTURED: autocast's cast cache off, as capture needs).
        MOVES: the augmenting members' rows and their images' affine matrices, in order; FILL:
        the background they move in. PROBE: measures the step's gradients and update."""
        data, k = self.fold.train, idx.shape[0]
        x = data.x.index_select(0, idx.reshape(-1)).view(k, -1, *data.x.shape[1:])
        if moves is not None:  # one grid_sample over every augmenting member's images
            rows, theta = moves
            if len(rows) == k:  # every member moves its images: no gather, no scatter
                x = transform(x.flatten(0, 1), theta, fill).view(x.shape)
            else:
                moved = transform(x.index_select(0, rows).flatten(0, 1), theta, fill)
                x = x.index_copy(0, rows, moved.view(len(rows), *x.shape[1:]))
        y = data.y.index_select(0, idx.reshape(-1)).view(k, -1)
        with autocast(data.y.device, self.options.amp, cache=not captured):
            if k == 1:  # a lone trial: its network and loss, as a plain loop runs them
                logits = self.model.single(x[0])  # [b, 10]
                loss = F.cross_entropy(logits, y[0])
                losses = loss.detach().unsqueeze(0)
            else:
                logits = self.model(x)  # [K, b, 10]
                losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                         reduction="none").view(k, -1).float().mean(dim=1)
                # Rows are independent: the sum's gradient in row k is member k's own loss's.
                loss = losses.sum()
        self.optimizer.zero_grad()
        loss.backward()
        if probe is not None:
            probe.before_step()
        self.optimizer.step(lr, momentum)
        if probe is not None:
            probe.after_step()
        loss_sum.add_(losses.detach(), alpha=y.shape[1])
        correct += (logits.detach().argmax(dim=-1) == y).sum(dim=-1)  # [K] (K = 1: [b] vs [1, b])

    def _graphs_on(self, device: torch.device) -> bool:
        """Whether full-batch steps replay a captured CUDA graph: asked for (--cuda-graph), on
        a GPU, and not given up after a capture that failed."""
        return self.options.cuda_graph and device.type == "cuda" and not self._graph_failed

    def _graphed_step(self, idx: torch.Tensor, lr: Rates, momentum: Rates,
                      loss_sum: torch.Tensor, correct: torch.Tensor) -> bool:
        """A replay of the captured step; until there is one, the warm-up steps (eager, on a
        side stream) and then the capture (StackedOptimizer: its update has no host sync).
        False when the capture failed: this step ran eagerly, and so will the rest."""
        if self._captured is None and self._warm < WARMUP_STEPS:
            on_side_stream(lambda: self._step(idx, lr, momentum, loss_sum, correct), idx.device)
            self._warm += 1
            return True
        if self._captured is None:
            try:
                self._captured = CapturedStep.capture(
                    lambda *static: self._step(*static, captured=True), members=idx.shape[0],
                    batch_size=idx.shape[1], device=idx.device, before=self.optimizer.zero_grad)
            except RuntimeError as exc:  # torch raises its CUDA errors as RuntimeError
                logger.warning("--cuda-graph: capturing the cohort's step on %s failed (%s); "
                               "the cohort steps eagerly", idx.device, str(exc).splitlines()[0])
                self._graph_failed = True
                self.optimizer.zero_grad()
                self._step(idx, lr, momentum, loss_sum, correct)
                return False
        # On a GPU the rates are rows of the epoch's device tables (StackedOptimizer.rates).
        assert isinstance(lr, torch.Tensor) and isinstance(momentum, torch.Tensor)
        self._captured.replay(idx, lr, momentum)
        return True

    @torch.inference_mode()
    def _evaluate(self) -> torch.Tensor:
        """Every member on the fold's validation set: the same images, fp32, in slices."""
        data, k = self.fold.val, len(self.members)
        self.model.eval()
        loss_sum = torch.zeros(k, device=data.y.device, dtype=torch.float64)
        correct = torch.zeros(k, device=data.y.device, dtype=torch.int64)
        size = evaluation_slice(self._image_bytes, members=k, images=len(data),
                                device=data.y.device)
        for start in range(0, len(data), size):
            x, y = data.x[start:start + size], data.y[start:start + size]
            logits = self.model.shared(x)  # [K, b, 10]
            loss_sum += F.cross_entropy(logits.permute(0, 2, 1), y.expand(k, -1),
                                        reduction="none").sum(dim=1)
            correct += (logits.argmax(dim=-1) == y).sum(dim=1)
        # [2, K] on the device: mean losses and accuracies
        return torch.stack([loss_sum.div(len(data)), correct.double().div(len(data))])


def _optimizer(device: torch.device) -> type[StackedOptimizer] | type[MemberOptimizers]:
    """The update that is faster where the cohort trains: torch's fused kernel member by
    member on the CPU (memory traffic), one vectorised update on a GPU (kernel launches)."""
    return MemberOptimizers if device.type == "cpu" else StackedOptimizer
