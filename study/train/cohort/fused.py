"""Each member updated by torch's own fused optimizer kernel, one member at a time.

The alternative to study.train.cohort.optim's vectorised update, for the CPU. There the update is
bound by memory traffic, not by calls: the vectorised rules pass over the stacked tensors about
ten times a step (one tensor op each), while torch's fused SGD/Adam/AdamW kernel reads and
writes each element once. K calls of the fused kernel, each over one member's rows (views of
the stacked tensors, no copies), beat one vectorised update on every K we time
(docs/benchmarks.md, "Measurements behind the code's choices"). On a GPU the count of
kernel launches is what costs, and the vectorised update's is independent of K.

The update of a member is then torch.optim's, by construction: the same functional
(torch.optim.sgd.sgd, torch.optim.adam.adam) that torch.optim.SGD/Adam/AdamW call with
fused=True, with the member's own hyperparameters and state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.optim import adam, sgd

from study.train.cohort.optim import Rates, check_args, check_params


@dataclass
class _MemberState:
    kind: str
    weight_decay: float
    # SGD: one momentum buffer per parameter, None until the first step with momentum, as
    # torch's; Adam(W): exp_avg and exp_avg_sq per parameter, and torch's step counters.
    buffers: list[torch.Tensor | None] = field(default_factory=list)
    exp_avgs: list[torch.Tensor] = field(default_factory=list)
    exp_avg_sqs: list[torch.Tensor] = field(default_factory=list)
    steps: list[torch.Tensor] = field(default_factory=list)


class MemberOptimizers:
    """SGD (with momentum), Adam and AdamW over stacked parameters, member k (row k of every
    tensor) updated by torch's fused kernel with its own kind and hyperparameters.

    The same interface as study.train.cohort.optim.StackedOptimizer, so the engine takes either.
    """

    def __init__(self, params: Sequence[torch.Tensor], kinds: Sequence[str],
                 weight_decay: Sequence[float], *, betas2: float = 0.999,
                 eps: float = 1e-8) -> None:
        check_args(params, kinds, weight_decay, betas2=betas2, eps=eps)
        self._params = list(params)
        self._orders = [_memory_order(p) for p in self._params]
        self._flat_params = _member_views(self._params)
        self._beta2 = betas2
        self._eps = eps
        self._members = [self._new_state(kind, wd, row)
                         for row, (kind, wd) in enumerate(zip(kinds, weight_decay))]

    @property
    def kinds(self) -> list[str]:
        return [m.kind for m in self._members]

    def zero_grad(self) -> None:
        for p in self._params:
            p.grad = None

    def rates(self, table: Sequence[Sequence[float]]) -> list[Sequence[float]]:
        """An epoch's TABLE of rates ([step][member]) as they are: torch's fused kernels take
        each member's rate as a Python float."""
        return list(table)

    @torch.no_grad()
    def step(self, lr: Rates, momentum: Rates) -> None:
        """One update of every member. LR: each member's learning rate now; MOMENTUM: SGD
        members' momentum and Adam/AdamW members' beta1 (OneCycleLR cycles both)."""
        if len(lr) != len(self._members) or len(momentum) != len(self._members):
            raise ValueError(f"need one lr and one momentum per member ({len(self._members)}),"
                             f" but got {len(lr)} and {len(momentum)}")
        grads = [p.grad for p in self._params]
        if any(g is None for g in grads):
            raise ValueError("every stacked parameter needs a gradient: call backward() first")
        # [K, n] views in the parameters' memory order. Autograd hands back each gradient in
        # its leaf's layout; one set by hand may differ, and is copied into it.
        flat_grads = [_flat(g if g.stride() == p.stride() else torch.empty_like(p).copy_(g),
                            order) for p, g, order in zip(self._params, grads, self._orders)
                      if g is not None]
        for row, (member, member_lr, member_momentum) in enumerate(
                zip(self._members, lr, momentum)):
            params = self._flat_params[row]
            member_grads = [g[row] for g in flat_grads]
            if member.kind == "sgd":
                sgd.sgd(params, member_grads, member.buffers, fused=True,
                        weight_decay=member.weight_decay, momentum=float(member_momentum),
                        lr=float(member_lr), dampening=0.0, nesterov=False, maximize=False)
            else:
                adam.adam(params, member_grads, member.exp_avgs, member.exp_avg_sqs, [],
                          member.steps, fused=True,
                          decoupled_weight_decay=member.kind == "adamw", amsgrad=False,
                          beta1=float(member_momentum), beta2=self._beta2, lr=float(member_lr),
                          weight_decay=member.weight_decay, eps=self._eps, maximize=False)

    def keep(self, rows: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        """Members leave: keep only ROWS (ascending indices) and from now on update PARAMS,
        the model's compacted stacked tensors. A member's state is its own: nothing moves."""
        kept = [int(r) for r in rows.tolist()]
        if kept != sorted(set(kept)) or not kept or kept[0] < 0 or kept[-1] >= len(
                self._members):
            raise ValueError(f"rows must be ascending distinct member indices below "
                             f"{len(self._members)}, but got rows={kept}")
        check_params(params, len(kept))
        self._params = list(params)
        self._orders = [_memory_order(p) for p in self._params]
        self._flat_params = _member_views(self._params)
        self._members = [self._members[r] for r in kept]

    def add(self, params: Sequence[torch.Tensor], kinds: Sequence[str],
            weight_decay: Sequence[float]) -> None:
        """Members of KINDS join as the last rows of PARAMS, the model's extended stacked
        tensors, with fresh state, as a new torch.optim optimizer's."""
        first = len(self._members)
        check_args(params, [*self.kinds, *kinds], [*self._weight_decays(), *weight_decay],
                   betas2=self._beta2, eps=self._eps)
        self._params = list(params)
        self._orders = [_memory_order(p) for p in self._params]
        self._flat_params = _member_views(self._params)
        self._members += [self._new_state(kind, wd, first + i)
                          for i, (kind, wd) in enumerate(zip(kinds, weight_decay))]

    def _weight_decays(self) -> list[float]:
        return [m.weight_decay for m in self._members]

    def _new_state(self, kind: str, weight_decay: float, row: int) -> _MemberState:
        state = _MemberState(kind=kind, weight_decay=weight_decay)
        if kind == "sgd":
            state.buffers = [None] * len(self._params)
        else:
            # As torch.optim.Adam's _init_group: zeros like each parameter, and a float32 step
            # count on the parameter's device (fused).
            state.exp_avgs = [torch.zeros_like(p) for p in self._flat_params[row]]
            state.exp_avg_sqs = [torch.zeros_like(p) for p in self._flat_params[row]]
            state.steps = [torch.zeros((), dtype=torch.float32, device=p.device)
                           for p in self._params]
        return state



def _member_views(params: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """[member][parameter]: each member's rows of PARAMS as 1-D views, made once."""
    flat = [_flat(p, _memory_order(p)) for p in params]
    return [[f[row] for f in flat] for row in range(flat[0].shape[0])]


def _memory_order(t: torch.Tensor) -> list[int]:
    """Stacked T's dimensions after the member axis, outermost in memory first."""
    return [0, *sorted(range(1, t.dim()), key=lambda d: (-t.stride()[d], d))]


def _flat(t: torch.Tensor, order: list[int]) -> torch.Tensor:
    """Stacked T as a [K, n] view whose rows run in memory order (ORDER: _memory_order(T), the
    same for its gradient). A member's rows of a stacked weight may be laid out transposed
    (study.train.cohort.stack); torch's fused CPU kernels run several times slower over such
    strides than over the same memory as one contiguous run. Every update is elementwise, so
    the shape does not matter, only that the parameter, its gradient and its state run through
    memory in one order."""
    return t.permute(order).view(t.shape[0], -1)
