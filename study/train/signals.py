"""Per-epoch training signals: gradient norms, update-to-weight ratios and dead ReLU units.

What the detectors (study/diagnose/detectors.py) read to tell a vanishing gradient from a
dead network or a learning rate that moves the weights too far. Torch only, like the training loop.

Cost: the norms are taken on one optimizer step in SAMPLE_EVERY (and always the first), from
per-tensor norms in a few fused `torch._foreach_*` kernels, and summed on the device; the
dead units are read off validation's own forward pass (its first DEAD_SLICE images). Nothing
leaves the device until the epoch's single host sync (python -m study.bench.signals measures
the whole cost).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

SAMPLE_EVERY = 32  # optimizer steps between two measured ones
DEAD_SLICE = 1024  # validation images a dead ReLU unit must be silent on (the first ones)


class SignalProbe:
    """Measures gradients and updates at sampled steps of an epoch.

    NAMED: the trainable parameters, (name, tensor). STACKED: they hold K members along a
    leading axis (the cohort engine), and every number is per member. Per layer means per
    weight tensor (biases and BatchNorm's scales are left out: their norms say little about a
    layer's health). Call `before_step` after backward and `after_step` after the optimizer
    step; `tensors` gives the epoch's means (device tensors).
    """

    def __init__(self, named: list[tuple[str, torch.Tensor]], *, stacked: bool = False) -> None:
        self.params = [p for _, p in named]
        self.stacked = stacked
        own_dims = 2 if stacked else 1  # a weight matrix or kernel, beyond the member axis
        self.weights = [i for i, (n, p) in enumerate(named)
                        if n.endswith("weight") and p.dim() > own_dims]
        self.layers = [named[i][0].removesuffix(".weight") for i in self.weights]
        members = (self.params[0].shape[0],) if stacked else ()
        device = self.params[0].device
        self.grad_sum = torch.zeros(len(self.params) + 1, *members, device=device)  # [P+1(,K)]
        self.ratio_sum = torch.zeros_like(self.grad_sum)
        self.samples = 0
        self._step = 0
        self._before: list[torch.Tensor] | None = None

    def _norms(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """[P] norms (one fused kernel), or [P, K] per member."""
        if not self.stacked:
            return torch.stack(torch._foreach_norm(list(tensors)))
        return torch.stack([torch.linalg.vector_norm(t, dim=tuple(range(1, t.dim())))
                            for t in tensors])

    def before_step(self) -> None:
        """Gradient norms now (after backward), weights kept for the update: sampled steps."""
        measured = self._step % SAMPLE_EVERY == 0
        self._step += 1
        if not measured:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        norms = self._norms(grads)
        self.grad_sum += torch.cat([norms, norms.square().sum(0).sqrt().unsqueeze(0)])
        self._before = [p.detach().clone() for p in self.params]
        self.samples += 1

    def after_step(self) -> None:
        if self._before is None:
            return
        after = [p.detach() for p in self.params]
        moved = self._norms(torch._foreach_sub(after, self._before))
        size = self._norms(after)
        tiny = torch.finfo(size.dtype).tiny  # a zero weight (all-zero init) moved: ratio huge
        ratios = moved / size.clamp_min(tiny)
        overall = moved.square().sum(0).sqrt() / size.square().sum(0).sqrt().clamp_min(tiny)
        self.ratio_sum += torch.cat([ratios, overall.unsqueeze(0)])
        self._before = None

    def tensors(self) -> torch.Tensor:
        """[2, P + 1(, K)]: mean gradient norms and update ratios (per tensor, then global)."""
        return torch.stack([self.grad_sum, self.ratio_sum]) / max(self.samples, 1)

    def named(self, values: list[list[float]]) -> dict[str, float]:
        """One member's host copy of `tensors()` as metric names: grad_norm, grad_norm/<layer>,
        update_ratio, update_ratio/<layer>."""
        out: dict[str, float] = {}
        for name, row in zip(("grad_norm", "update_ratio"), values, strict=True):
            out[name] = row[-1]
            out.update({f"{name}/{layer}": row[i] for i, layer in
                        zip(self.weights, self.layers, strict=True)})
        return out


def signal_values(probe: SignalProbe, relus: list[str], values: list[float]) -> dict[str, float]:
    """One member's signals from VALUES, the host copy of torch.cat([probe.tensors()
    .flatten(), dead]) for that member."""
    width = probe.grad_sum.shape[0]
    signals = probe.named([values[:width], values[width:2 * width]])
    dead_values = values[2 * width:]
    signals["dead_relu"] = dead_values[-1]
    signals.update({f"dead_relu/{name}": share for name, share in
                    zip(relus, dead_values, strict=False)})
    return signals


class DeadUnits:
    """Records, per ReLU module of a model, which units fire on the first FIRST images of
    the first forward pass while `recording` (dead_units runs that pass). A unit is a feature
    (MLP) or a channel (CNN: silent at every position)."""

    def __init__(self, model: nn.Module, *, first: int) -> None:
        self.relus = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
        self.names = [n for n, _ in self.relus]
        self.first = first
        self._silent: dict[str, torch.Tensor] = {}
        self._units: dict[str, int] = {}

    @contextmanager
    def recording(self) -> Iterator[DeadUnits]:
        hooks = [m.register_forward_hook(self._hook(n)) for n, m in self.relus]
        try:
            yield self
        finally:
            for hook in hooks:
                hook.remove()

    def _hook(self, name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def record(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            if name in self._silent:  # a later slice of the same pass
                return
            seen = output[:self.first]
            alive = seen.amax(dim=[0, *range(2, seen.dim())]) > 0  # [units]
            self._silent[name] = (~alive).sum()
            self._units[name] = alive.numel()
        return record

    def shares(self, device: torch.device) -> torch.Tensor:
        """[R + 1] on DEVICE: each module's share of silent units, then the share over all."""
        if not self._silent:
            return torch.zeros(1, device=device)
        counts = torch.stack([self._silent[n] for n in self.names]).float()  # [R]
        units = torch.tensor([self._units[n] for n in self.names], device=device,
                             dtype=torch.float32)
        return torch.cat([counts / units, (counts.sum() / units.sum()).unsqueeze(0)])


@torch.inference_mode()
def dead_units(model: nn.Module, x: torch.Tensor, *,
               forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
               ) -> tuple[list[str], torch.Tensor]:
    """Per ReLU module of MODEL, the share of its units silent (0) on every image of X, by a
    forward pass of its own: the names and `DeadUnits.shares`. Eval mode, as validation runs:
    dropout off, BatchNorm on running statistics. FORWARD: how to run MODEL's modules (a
    member of a stacked cohort); default MODEL itself."""
    dead = DeadUnits(model, first=len(x))
    with dead.recording(), _eval(model):
        (forward or model)(x)
    return dead.names, dead.shares(x.device)


@contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
