"""Per-epoch training signals: gradient norms, update-to-weight ratios and dead ReLU units.

What the detectors (study/detectors.py) read to tell a vanishing gradient from a dead network
or a learning rate that moves the weights too far. Torch only, like the training loop.

Cost: the norms are taken on one optimizer step in SAMPLE_EVERY (and always the first), from
per-tensor norms in a few fused `torch._foreach_*` kernels, and summed on the device; the
dead-unit count is one forward pass over a fixed validation slice. Nothing leaves the device
until the epoch's single host sync (python -m study.bench.signals measures the whole cost).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

SAMPLE_EVERY = 16  # optimizer steps between two measured ones
DEAD_SLICE = 1024  # validation images a dead ReLU unit must be silent on (the first ones)


class SignalProbe:
    """Measures MODEL's gradients and updates at sampled steps of an epoch.

    Per layer means per weight tensor (biases and BatchNorm's scales are left out: their
    norms say little about a layer's health). Call `before_step` after backward and
    `after_step` after the optimizer step; `tensors` gives the epoch's sums (device tensors).
    """

    def __init__(self, model: nn.Module) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in named]
        self.weights = [i for i, (n, p) in enumerate(named) if n.endswith("weight") and p.dim() > 1]
        self.layers = [named[i][0].removesuffix(".weight") for i in self.weights]
        device = self.params[0].device
        self.grad_sum = torch.zeros(len(self.params) + 1, device=device)  # per tensor, global
        self.ratio_sum = torch.zeros(len(self.params) + 1, device=device)
        self.samples = 0
        self._step = 0
        self._before: list[torch.Tensor] | None = None

    def before_step(self) -> None:
        """Gradient norms now (after backward), weights kept for the update: sampled steps."""
        measured = self._step % SAMPLE_EVERY == 0
        self._step += 1
        if not measured:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        norms = torch.stack(torch._foreach_norm(grads))  # [P]
        self.grad_sum += torch.cat([norms, norms.square().sum().sqrt().unsqueeze(0)])
        self._before = [p.detach().clone() for p in self.params]
        self.samples += 1

    def after_step(self) -> None:
        if self._before is None:
            return
        after = [p.detach() for p in self.params]
        moved = torch.stack(torch._foreach_norm(torch._foreach_sub(after, self._before)))  # [P]
        size = torch.stack(torch._foreach_norm(after))  # [P]
        tiny = torch.finfo(size.dtype).tiny  # a zero weight (all-zero init) moved: ratio huge
        ratios = moved / size.clamp_min(tiny)
        overall = moved.square().sum().sqrt() / size.square().sum().sqrt().clamp_min(tiny)
        self.ratio_sum += torch.cat([ratios, overall.unsqueeze(0)])
        self._before = None

    def tensors(self) -> torch.Tensor:
        """[2, P + 1]: mean gradient norms and update ratios (per tensor, then global)."""
        return torch.stack([self.grad_sum, self.ratio_sum]) / max(self.samples, 1)

    def named(self, values: list[list[float]]) -> dict[str, float]:
        """The host copy of `tensors()` as metric names: grad_norm, grad_norm/<layer>, ..."""
        out: dict[str, float] = {}
        for name, row in zip(("grad_norm", "update_ratio"), values, strict=True):
            out[name] = row[-1]
            out.update({f"{name}/{layer}": row[i] for i, layer in
                        zip(self.weights, self.layers, strict=True)})
        return out


@torch.inference_mode()
def dead_units(model: nn.Module, x: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """Per ReLU module of MODEL, the share of its units silent (0) on every image of X.

    A unit is a feature (MLP) or a channel (CNN: silent at every position). Returns the
    modules' names and a device tensor [R + 1]: each module's share, then the share over all
    units. Eval mode, as validation runs: dropout off, BatchNorm on running statistics.
    """
    names: list[str] = []
    silent: list[torch.Tensor] = []
    units: list[int] = []

    def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        reduce = [0, *range(2, output.dim())]  # all but the unit axis
        alive = output.amax(dim=reduce) > 0  # [units]
        silent.append((~alive).sum())
        units.append(alive.numel())

    relus = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    with _hooks([m for _, m in relus], hook), _eval(model):
        model(x)
    names = [n for n, _ in relus]
    if not silent:
        return names, torch.zeros(1, device=x.device)
    counts = torch.stack(silent).float()  # [R]
    total = torch.tensor(float(sum(units)), device=x.device)
    per_module = counts / torch.tensor(units, device=x.device, dtype=torch.float32)
    return names, torch.cat([per_module, (counts.sum() / total).unsqueeze(0)])


@contextmanager
def _hooks(modules: list[nn.Module], hook: object) -> Iterator[None]:
    handles = [m.register_forward_hook(hook) for m in modules]  # type: ignore[arg-type]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
