"""K networks of one architecture as one stacked model: every tensor gains a leading K axis.

The members are built (and seeded) exactly as a solo trial builds its network; their
parameters are stacked with torch.func.stack_module_state and the forward pass is the solo
module's own, vectorised over the members with torch.func.vmap: linear layers become batched
matrix products and convolutions grouped ones, with no hand-written layer. Each member keeps
its own dropout rate (a buffer, so it stacks) and draws its own dropout masks.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from study.training import dropout_rate_as_buffer

StateDict = dict[str, torch.Tensor]


class StackedModel:
    """K members of one architecture. Row k of every parameter is member k's tensor."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        if not members:
            raise ValueError("a stacked model needs at least one member")
        for member in members:
            dropout_rate_as_buffer(member)  # the rate becomes a per-member tensor
        params, buffers = stack_module_state(list(members))
        self.params: dict[str, torch.Tensor] = params  # leaves [K, ...], requires_grad
        self.buffers: dict[str, torch.Tensor] = buffers
        # The architecture without storage: functional_call swaps each member's tensors in.
        self._base = copy.deepcopy(members[0]).to("meta")
        self._persistent = set(members[0].state_dict())  # the solo checkpoint's keys
        self._training = True

    @property
    def k(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def train(self, mode: bool = True) -> None:
        self._training = mode
        self._base.train(mode)

    def eval(self) -> None:
        self.train(False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Member k's logits on x[k]: [K, B, ...] in, [K, B, 10] out."""
        return self._forward(x, in_dim=0)

    def shared(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits on the same inputs: [B, ...] in, [K, B, 10] out."""
        return self._forward(x, in_dim=None)

    def _forward(self, x: torch.Tensor, *, in_dim: int | None) -> torch.Tensor:
        def one(params: StateDict, buffers: StateDict, inputs: torch.Tensor) -> torch.Tensor:
            return functional_call(self._base, (params, buffers), (inputs,))

        # randomness="different": each member draws its own dropout masks.
        return vmap(one, in_dims=(0, 0, in_dim), randomness="different")(
            self.params, self.buffers, x)

    def keep(self, rows: torch.Tensor) -> None:
        """Only the members at ROWS (a long index, in order) stay; the others leave."""
        self.params = {name: p.detach()[rows].clone().requires_grad_(p.requires_grad)
                       for name, p in self.params.items()}
        self.buffers = {name: b[rows].clone() for name, b in self.buffers.items()}

    def member_state(self, row: int) -> StateDict:
        """Member ROW's weights as a CPU state dict with the solo model's keys."""
        tensors = {**self.params, **self.buffers}
        return {name: tensors[name][row].detach().to("cpu", copy=True)
                for name in tensors if name in self._persistent}
