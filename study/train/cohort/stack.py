"""K networks of one architecture as one stacked model: every tensor gains a leading K axis.

The members are built (and seeded) exactly as a solo trial builds its network; their
parameters are stacked with torch.func.stack_module_state and the forward pass is the solo
module's own, vectorised over the members with torch.func.vmap: linear layers become batched
matrix products and convolutions grouped ones, with no hand-written layer. Each member keeps
its own dropout rate (a buffer, so it stacks) and draws its own dropout masks.

Each stacked parameter is laid out in memory the way its gradient arrives: a batched matrix
product hands a linear layer's weight gradient back as [K, in, out] storage viewed [K, out, in],
and autograd copies a gradient whose strides differ from its leaf's: a copy of every weight
gradient, a large share of the step (docs/benchmarks.md, "Measurements behind the code's
choices"). The layout is learned once from a probe backward pass, not assumed.

A stack of one member is the solo network itself: one real copy of the module whose
parameters and buffers are views (squeeze(0)) of the stack's [1, ...] tensors, called
directly. No vmap, no functional_call: the same kernels as a plain training loop, torch's own
nn.Dropout included (so a lone trial draws the masks a plain loop draws), and gradients that
arrive in the leaves' own layout (the probe learns it on this path too). It is the same stack
to everything else (the optimizers, the signals, keep and add); when members join it, the
stack runs vectorised, and when all but one leave, directly again.

The callers' networks are never changed: the stack copies their tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from study.train.engine_types import TrainOptions
from study.train.training import compile_for_trials, dropout_rate_as_buffer

StateDict = dict[str, torch.Tensor]


class StackedModel:
    """K members of one architecture. Row k of every parameter is member k's tensor."""

    def __init__(self, members: Sequence[nn.Module], example: torch.Tensor) -> None:
        """MEMBERS: the solo networks, built and seeded as a solo trial builds them. EXAMPLE:
        a few inputs [B, ...] of the kind they take, for the probe that learns the layout."""
        if not members:
            raise ValueError("a stacked model needs at least one member")
        # A real copy for the stack of one, its tensors bound to the stack's (_bind_single),
        # with the solo network's own dropout modules.
        self._single = copy.deepcopy(members[0])
        self._runner: nn.Module = self._single  # or its compiled view (compile_single)
        rated = _rates_as_buffers(members)
        params, buffers = stack_module_state(rated)
        self.params: dict[str, torch.Tensor] = params  # leaves [K, ...], requires_grad
        self.buffers: dict[str, torch.Tensor] = buffers
        # The architecture without storage (a copy the stack holds its own tensors of):
        # functional_call swaps each member's tensors in.
        self._base = rated[0].to("meta")
        self._persistent = set(members[0].state_dict())  # the solo checkpoint's keys
        self._training = True
        # Each parameter's dimension order, outermost first, as its gradient arrives.
        self._orders = self._gradient_orders(example)
        self.params = self._laid_out(self.params)
        self._bind_single()

    @property
    def k(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def train(self, mode: bool = True) -> None:
        self._training = mode
        self._base.train(mode)
        self._single.train(mode)

    def eval(self) -> None:
        self.train(False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Member k's logits on x[k]: [K, B, ...] in, [K, B, 10] out."""
        return self._forward(x, in_dim=0)

    def single(self, x: torch.Tensor) -> torch.Tensor:
        """A stack of one: its network on x, [B, ...] in, [B, 10] out (no member axis)."""
        if self.k != 1:
            raise ValueError(f"single() runs a stack of one, but this one has {self.k}")
        return self._runner(x)

    def shared(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits on the same inputs: [B, ...] in, [K, B, 10] out."""
        return self._forward(x, in_dim=None)

    def _forward(self, x: torch.Tensor, *, in_dim: int | None) -> torch.Tensor:
        if self.k == 1:  # the solo network itself, on the stack's tensors
            return self._runner(x[0] if in_dim == 0 else x).unsqueeze(0)

        def one(params: StateDict, buffers: StateDict, inputs: torch.Tensor) -> torch.Tensor:
            return functional_call(self._base, (params, buffers), (inputs,))

        # randomness="different": each member draws its own dropout masks.
        return vmap(one, in_dims=(0, 0, in_dim), randomness="different")(
            self.params, self.buffers, x)

    def compile_single(self, options: TrainOptions) -> None:
        """The stack of one runs a torch.compile'd view of its network (OPTIONS.compile_mode),
        whose graphs later stacks of the same architecture reuse
        (study.train.training.compile_for_trials)."""
        self._runner = compile_for_trials(self._single, options)
        self._bind_single()  # its dropout modules were swapped: bind their rates' buffers

    @property
    def base(self) -> nn.Module:
        """The architecture (on the meta device): its modules are what a member runs."""
        return self._base

    def member_forward(self, row: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """Member ROW alone, as its solo network: [B, ...] in, [B, 10] out, through `base`'s
        modules (so hooks on them see this member's activations)."""
        params = {name: p[row] for name, p in self.params.items()}
        buffers = {name: b[row] for name, b in self.buffers.items()}
        return lambda x: functional_call(self._base, (params, buffers), (x,))

    def keep(self, rows: torch.Tensor) -> None:
        """Only the members at ROWS (a long index, in order) stay; the others leave."""
        self.params = self._laid_out({name: p.detach()[rows] for name, p in self.params.items()})
        self.buffers = {name: b[rows].clone() for name, b in self.buffers.items()}
        self._bind_single()

    def add(self, members: Sequence[nn.Module]) -> None:
        """MEMBERS (networks of the same architecture) join as the last rows."""
        params, buffers = stack_module_state(_rates_as_buffers(members))
        mine = {name: tuple(p.shape[1:]) for name, p in self.params.items()}
        theirs = {name: tuple(p.shape[1:]) for name, p in params.items()}
        if mine != theirs or set(buffers) != set(self.buffers):
            raise ValueError(f"joining members must share the architecture: parameters "
                             f"{mine}, but got {theirs}")
        self.params = self._laid_out({name: torch.cat([p.detach(), params[name].detach()])
                                      for name, p in self.params.items()})
        self.buffers = {name: torch.cat([b, buffers[name]]) for name, b in self.buffers.items()}
        self._bind_single()

    def member_state(self, row: int) -> StateDict:
        """Member ROW's weights as a CPU state dict with the solo model's keys."""
        tensors = {**self.params, **self.buffers}
        return {name: tensors[name][row].detach().to("cpu").contiguous()
                for name in tensors if name in self._persistent}

    @torch.no_grad()
    def copy_member(self, row: int, module: nn.Module) -> None:
        """Member ROW's weights and buffers into MODULE (its solo network), device to device:
        no host sync."""
        tensors = {**self.params, **self.buffers}
        for name, target in module.state_dict(keep_vars=True).items():
            target.copy_(tensors[name][row])

    def _gradient_orders(self, example: torch.Tensor) -> dict[str, tuple[int, ...]]:
        """Each parameter's dimension order (outermost first) in the gradient a stacked
        backward pass produces. The probe runs in eval mode (no dropout: no random number is
        drawn, so no member's stream moves) on detached copies of the parameters."""
        probe = {name: p.detach().clone().requires_grad_() for name, p in self.params.items()}
        mode = self._training
        self.eval()
        try:
            with torch.enable_grad():
                # Each member its own copy of the inputs, as in training (shared inputs take
                # another path through vmap, with other gradient layouts).
                inputs = example.expand(self.k, *example.shape)
                if self.k == 1:  # the path a stack of one trains on (its own dropout modules
                    # hold their rates as floats: no buffer of theirs to swap in)
                    own = dict(self._single.named_buffers())
                    out = functional_call(self._single, (
                        {n: p.squeeze(0) for n, p in probe.items()},
                        {n: b.squeeze(0) for n, b in self.buffers.items() if n in own}),
                        (example,))
                else:
                    out = vmap(lambda p, b, x: functional_call(self._base, (p, b), (x,)),
                               randomness="different")(probe, self.buffers, inputs)
                # autograd.grad, not backward(): .grad would show the layout after the copy.
                grads = torch.autograd.grad(out.float().sum(), list(probe.values()),
                                            allow_unused=True)
        finally:
            self.train(mode)
        orders: dict[str, tuple[int, ...]] = {}
        for (name, p), grad in zip(probe.items(), grads, strict=True):
            order = tuple(range(p.dim()))
            if grad is not None and grad.permute(_dim_order(grad)).is_contiguous():
                order = _dim_order(grad)  # a dense gradient: its layout is worth matching
            orders[name] = order
        return orders

    def _bind_single(self) -> None:
        """A stack of one: the real module's parameters and buffers become views of the
        stack's tensors (squeeze(0): a gradient through it is a view too, never a copy), so
        that calling it trains the stack. Plain attributes, not Parameters: the stack's
        tensors are the leaves."""
        if self.k != 1:
            return
        for tensors in (self.params, self.buffers):
            for name, tensor in tensors.items():
                *path, leaf = name.split(".")
                module = self._single.get_submodule(".".join(path))
                if isinstance(module, nn.Dropout):  # its rate, a float as nn.Dropout keeps it
                    module.p = float(tensor)  # read when the members change, not per step
                    continue
                module._parameters.pop(leaf, None)
                module._buffers.pop(leaf, None)
                setattr(module, leaf, tensor.squeeze(0))

    def _laid_out(self, params: StateDict) -> StateDict:
        """Fresh leaves holding PARAMS' values, each in the memory order of its gradient."""
        return {name: _in_order(p.detach(), self._orders[name]).requires_grad_(
                    self.params[name].requires_grad) for name, p in params.items()}


def _rates_as_buffers(members: Sequence[nn.Module]) -> list[nn.Module]:
    """Copies of MEMBERS whose dropout rates are buffers: one tensor per member, stacked like
    the weights, so that each member keeps its own rate under vmap."""
    copies = [copy.deepcopy(member) for member in members]
    for member in copies:
        dropout_rate_as_buffer(member)
    return copies


def _dim_order(t: torch.Tensor) -> tuple[int, ...]:
    """T's dimensions from the outermost in memory (largest stride) to the innermost."""
    return tuple(sorted(range(t.dim()), key=lambda d: (-t.stride()[d], d)))


def _in_order(t: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """A copy of T, same shape, whose memory runs over ORDER's dimensions outermost first.

    A tensor of its own, not a view: a view's root is what autograd rebuilds a view of it from
    after an in-place update, and the stack of one keeps views of its leaves (_bind_single)."""
    strides = [0] * t.dim()
    step = 1
    for dim in reversed(order):
        strides[dim] = step
        step *= t.shape[dim]
    return torch.empty_strided(t.shape, strides, dtype=t.dtype, device=t.device).copy_(t)
