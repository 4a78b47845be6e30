"""Vectorised SGD (with momentum), Adam and AdamW over stacked parameters.

Every parameter has a leading member axis: row k of each tensor is member k's. One step
updates all members with a handful of tensor ops per parameter (no Python loop over members),
each member with its own kind and hyperparameters; HFTA's hfta/optim is the precedent.

Mixed kinds: the members are split into two families, SGD and Adam/AdamW (AdamW differs
from Adam only in where the weight decay goes, which per-member coefficients express), and each
family is updated over its own rows only: a view when its rows are one contiguous range (the
engine can keep them so by ordering members by kind), else a gather into work tensors and a
scatter back. That beat computing both rules over every row and choosing with torch.where,
in steps of 16 mixed members of the MLP timed on one CPU thread.

Every whole-tensor intermediate goes to preallocated work tensors (out=, in place): on the CPU a
fresh temporary the size of a stacked tensor cost more than the arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

KINDS = ("sgd", "adam", "adamw")
# One step's learning rates (or momenta), one per member: a row of a device table
# (StackedOptimizer.rates) or Python floats (MemberOptimizers, and tests).
Rates = torch.Tensor | Sequence[float]


@dataclass
class _Family:
    """The members of one update rule (SGD, or Adam/AdamW) and that rule's state."""

    adam: bool
    members: list[int]  # rows of the stacked tensors, ascending
    rows: torch.Tensor  # [n] long, the same rows on the device
    span: slice | None  # the same rows as a slice when contiguous: views, no copies
    decoupled: torch.Tensor  # [n] bool: AdamW (decay the weights, not the gradient)
    # Whether any member decays through the gradient (SGD, Adam) or the weights (AdamW):
    # fixed per member, so known without asking the device (no host sync in step()).
    l2: bool
    shrinks: bool
    # SGD: one momentum buffer per parameter; Adam: exp_avg and exp_avg_sq per parameter.
    state: list[list[torch.Tensor]] = field(default_factory=list)  # [slot][param]: [n, ...]
    started: torch.Tensor | None = None  # SGD: [n] bool, the member has a momentum buffer
    # Per parameter, three [n, ...] work tensors written with out=/in place: on the CPU a fresh
    # temporary of a stacked tensor's size costs more than the arithmetic (page faults).
    scratch: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)


class StackedOptimizer:
    """SGD (with momentum), Adam and AdamW over stacked parameters, one member per row of every
    tensor, each member with its own kind and hyperparameters: member k's update is what
    torch.optim's algorithm would do to member k alone.

    Matches torch.optim's defaults otherwise: SGD without dampening or Nesterov, Adam(W)
    without amsgrad. A member's momentum buffer starts (as torch's does) at the first step
    where its momentum is nonzero; a member whose momentum returns to 0 later has its buffer
    replaced by the gradient, not kept aside as torch would (no scheduler here does that).
    """

    def __init__(self, params: Sequence[torch.Tensor], kinds: Sequence[str],
                 weight_decay: Sequence[float], *, betas2: float = 0.999,
                 eps: float = 1e-8) -> None:
        check_args(params, kinds, weight_decay, betas2=betas2, eps=eps)
        self._params = list(params)
        self._kinds = list(kinds)
        device = self._params[0].device
        # float64: torch computes its scalar coefficients (1 - lr*wd, lr/bias_c1 ...) from
        # Python floats, in double precision, and rounds them once to the parameters' dtype.
        self._weight_decay = torch.tensor(list(weight_decay), dtype=torch.float64,
                                          device=device)  # [K]
        self._decays = [wd != 0 for wd in weight_decay]
        self._beta2 = betas2
        self._eps = eps
        # Each member's step count (Adam's t): members that join later count from 0.
        self._steps = torch.zeros(len(self._kinds), dtype=torch.float64, device=device)
        self._families = [self._new_family(adam, members)
                          for adam, members in _split(self._kinds)]

    @property
    def kinds(self) -> list[str]:
        return list(self._kinds)

    def zero_grad(self) -> None:
        for p in self._params:
            p.grad = None

    def rates(self, table: Sequence[Sequence[float]]) -> list[torch.Tensor]:
        """An epoch's TABLE of rates ([step][member]) as rows of one float64 device tensor:
        one copy to the device an epoch, none in the step loop (a row is a view)."""
        device = self._params[0].device
        return list(torch.tensor(table, dtype=torch.float64, device=device).unbind(0))

    @torch.no_grad()
    def step(self, lr: Rates, momentum: Rates) -> None:
        """One update of every member. LR: [K], each member's learning rate now; MOMENTUM:
        [K], SGD members' momentum and Adam/AdamW members' beta1 (OneCycleLR cycles both).

        Python floats (as the schedules give them) become float64 tensors: torch.optim
        rounds each coefficient once, from a double, and so does this.
        """
        device = self._params[0].device
        lr = torch.as_tensor(lr, dtype=torch.float64, device=device)
        momentum = torch.as_tensor(momentum, dtype=torch.float64, device=device)
        members = len(self._kinds)
        if lr.shape != (members,) or momentum.shape != (members,):
            raise ValueError(f"lr and momentum must have shape ({members},), but got "
                             f"lr.shape={tuple(lr.shape)}, momentum.shape={tuple(momentum.shape)}")
        grads = [p.grad for p in self._params]
        if any(g is None for g in grads):
            raise ValueError("every stacked parameter needs a gradient: call backward() first")
        self._steps += 1  # in place, on the device: no host sync
        lr64, momentum64 = lr.to(torch.float64), momentum.to(torch.float64)
        for family in self._families:
            self._step_family(family, lr64, momentum64)

    @torch.no_grad()
    def keep(self, rows: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
        """Members leave: keep only ROWS (ascending indices) of every state tensor and
        hyperparameter, and from now on update PARAMS, the model's compacted stacked tensors."""
        kept = [int(r) for r in rows.tolist()]
        if kept != sorted(set(kept)) or not kept or kept[0] < 0 or kept[-1] >= len(self._kinds):
            raise ValueError(f"rows must be ascending distinct member indices below "
                             f"{len(self._kinds)}, but got rows={kept}")
        check_params(params, len(kept))
        renumber = {old: new for new, old in enumerate(kept)}
        self._params = list(params)
        self._kinds = [self._kinds[r] for r in kept]
        self._weight_decay = self._weight_decay[kept]
        self._steps = self._steps[kept]
        self._decays = [self._decays[r] for r in kept]
        families = []
        for family in self._families:
            stays = [i for i, m in enumerate(family.members) if m in renumber]
            if stays:
                families.append(self._compacted(family, stays, renumber))
        self._families = families

    @torch.no_grad()
    def add(self, params: Sequence[torch.Tensor], kinds: Sequence[str],
            weight_decay: Sequence[float]) -> None:
        """Members of KINDS join as the last rows of PARAMS, the model's extended stacked
        tensors, with fresh state (step count 0), as a new torch.optim optimizer's."""
        first = len(self._kinds)
        check_args(params, [*self._kinds, *kinds],
                   [*self._weight_decay.tolist(), *weight_decay], betas2=self._beta2,
                   eps=self._eps)
        device = self._params[0].device
        self._params = list(params)
        self._kinds = [*self._kinds, *kinds]
        self._weight_decay = torch.cat([self._weight_decay, torch.tensor(
            list(weight_decay), dtype=torch.float64, device=device)])
        self._decays += [wd != 0 for wd in weight_decay]
        self._steps = torch.cat([self._steps, self._steps.new_zeros(len(kinds))])
        families = {family.adam: family for family in self._families}
        self._families = []
        for adam, members in _split(self._kinds):
            old = families.get(adam)
            self._families.append(self._new_family(adam, members) if old is None
                                  else self._extended(old, [m for m in members if m >= first]))

    def _extended(self, family: _Family, joining: list[int]) -> _Family:
        """FAMILY with the rows JOINING appended, their state zeros (SGD: not started)."""
        if not joining:
            return family
        members = [*family.members, *joining]
        grown = self._new_family(family.adam, members)
        old = len(family.members)
        for slot, new_slot in zip(family.state, grown.state):
            for kept, fresh in zip(slot, new_slot):
                fresh[:old].copy_(kept)  # the rest stays zero
        if family.started is not None and grown.started is not None:
            grown.started[:old] = family.started
        return grown

    def _new_family(self, adam: bool, members: list[int]) -> _Family:
        device = self._params[0].device
        l2, shrinks = self._decay_flags(members)
        family = _Family(
            adam=adam, members=members,
            rows=torch.tensor(members, dtype=torch.long, device=device),
            span=_as_span(members),
            decoupled=torch.tensor([self._kinds[m] == "adamw" for m in members], device=device),
            l2=l2, shrinks=shrinks,
        )
        slots = 2 if adam else 1
        family.state = [[_zeros_rows(p, len(members)) for p in self._params]
                        for _ in range(slots)]
        if not adam:
            family.started = torch.zeros(len(members), dtype=torch.bool, device=device)
        family.scratch = _scratch(self._params, len(members))
        return family

    def _compacted(self, family: _Family, stays: list[int], renumber: dict[int, int]) -> _Family:
        members = [renumber[family.members[i]] for i in stays]
        l2, shrinks = self._decay_flags(members)
        index = torch.tensor(stays, dtype=torch.long, device=family.rows.device)
        return _Family(
            adam=family.adam, members=members,
            rows=torch.tensor(members, dtype=torch.long, device=family.rows.device),
            span=_as_span(members), decoupled=family.decoupled[index],
            l2=l2, shrinks=shrinks,
            state=[[_rows_like(p, len(stays)).copy_(t.index_select(0, index))
                    for p, t in zip(self._params, slot)] for slot in family.state],
            started=None if family.started is None else family.started[index],
            scratch=_scratch(self._params, len(members)),
        )

    def _decay_flags(self, members: list[int]) -> tuple[bool, bool]:
        """Whether any of MEMBERS decays its gradient (SGD, Adam) / its weights (AdamW)."""
        decayed = [m for m in members if self._decays[m]]
        return (any(self._kinds[m] != "adamw" for m in decayed),
                any(self._kinds[m] == "adamw" for m in decayed))

    def _step_family(self, family: _Family, lr: torch.Tensor, momentum: torch.Tensor) -> None:
        lr, momentum = lr[family.rows], momentum[family.rows]  # [n] float64
        wd = self._weight_decay[family.rows]  # [n] float64
        steps = self._steps[family.rows]  # [n] float64
        if family.adam:
            l2 = torch.where(family.decoupled, 0.0, wd)  # [n]: Adam adds wd*p to the grad ...
            shrink = torch.where(family.decoupled, 1 - lr * wd, 1.0)  # ... AdamW shrinks p
            coefficients = _AdamCoefficients(
                l2=l2, shrink=shrink, weight=1 - momentum,
                # Bias corrections with each member's CURRENT beta1, as torch does when
                # OneCycleLR cycles it: 1 - beta1**t, t the step count.
                step_size=lr / (1 - momentum ** steps),
                bias_c2_sqrt=(1 - self._beta2 ** steps).sqrt(),
                any_l2=family.l2, any_shrink=family.shrinks)
        else:
            assert family.started is not None
            carry = torch.where(family.started, momentum, 0.0)  # [n]: 0 starts buf at g
        for i, p in enumerate(self._params):
            grad = p.grad
            assert grad is not None  # checked in step()
            rows_p, rows_g, work = _gather(p, grad, family.span, family.rows, family.scratch[i])
            if family.adam:
                self._adam(rows_p, rows_g, family.state[0][i], family.state[1][i], work,
                           coefficients)
            else:
                _sgd(rows_p, rows_g, family.state[0][i], work, carry=carry, lr=lr,
                     wd=wd if family.l2 else None)
            if family.span is None:  # a gathered copy: write the updated rows back
                p.index_copy_(0, family.rows, rows_p)
        if family.started is not None:
            family.started |= momentum != 0

    def _adam(self, p: torch.Tensor, g: torch.Tensor, exp_avg: torch.Tensor,
              exp_avg_sq: torch.Tensor, work: torch.Tensor, c: _AdamCoefficients) -> None:
        if c.any_l2:  # WORK holds g + wd*p until the moments have read it
            g = _plus_scaled(g, p, c.l2, work)
        if c.any_shrink:
            p.mul_(_col(c.shrink, p))
        exp_avg.lerp_(g, _col(c.weight, p))
        exp_avg_sq.mul_(self._beta2).addcmul_(g, g, value=1 - self._beta2)
        denom = torch.sqrt(exp_avg_sq, out=work).div_(_col(c.bias_c2_sqrt, p)).add_(self._eps)
        update = torch.div(exp_avg, denom, out=denom).mul_(_col(c.step_size, p))
        p.sub_(update)


@dataclass(frozen=True)
class _AdamCoefficients:
    """One step's per-member scalars of the Adam family, [n] float64 (torch's precision)."""

    l2: torch.Tensor  # Adam's weight decay, added to the gradient (0 for AdamW)
    shrink: torch.Tensor  # AdamW's 1 - lr*wd (1 for Adam)
    weight: torch.Tensor  # 1 - beta1, exp_avg's lerp weight
    step_size: torch.Tensor  # lr / (1 - beta1**t)
    bias_c2_sqrt: torch.Tensor  # sqrt(1 - beta2**t), t each member's own step count
    any_l2: bool  # skip whole-tensor work no member needs
    any_shrink: bool


def _sgd(p: torch.Tensor, g: torch.Tensor, buf: torch.Tensor, work: torch.Tensor, *,
         carry: torch.Tensor, lr: torch.Tensor, wd: torch.Tensor | None) -> None:
    # torch.optim.SGD: g += wd*p; buf = g on the first step, then momentum*buf + g;
    # p -= lr*buf. A member with momentum 0 gets buf = 0*buf + g = g: the plain step.
    if wd is not None:
        g = _plus_scaled(g, p, wd, work)
    buf.mul_(_col(carry, p)).add_(g)
    p.sub_(torch.mul(buf, _col(lr, p), out=work))


def _plus_scaled(g: torch.Tensor, p: torch.Tensor, scale: torch.Tensor,
                 work: torch.Tensor) -> torch.Tensor:
    """G + SCALE*P (SCALE per member), written to WORK: G may be a view of p.grad."""
    return torch.mul(p, _col(scale, p), out=work).add_(g)


def _gather(p: torch.Tensor, grad: torch.Tensor, span: slice | None, rows: torch.Tensor,
            scratch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The family's rows of P and GRAD (views, or copies in SCRATCH) and a free work tensor."""
    copy_p, copy_g, work = scratch
    if span is not None:
        return p[span], grad[span], work
    return (torch.index_select(p, 0, rows, out=copy_p),
            torch.index_select(grad, 0, rows, out=copy_g), work)


def _rows_like(p: torch.Tensor, rows: int) -> torch.Tensor:
    """An uninitialised [ROWS, ...] tensor laid out in memory as P is: elementwise ops over
    tensors of one layout run as one flat loop, mixed layouts as slow strided ones (the
    stacked model lays weights out as their gradients arrive, not always contiguously)."""
    return torch.empty_like(p[:rows], memory_format=torch.preserve_format)


def _zeros_rows(p: torch.Tensor, rows: int) -> torch.Tensor:
    return _rows_like(p, rows).zero_()


def _scratch(params: Sequence[torch.Tensor], rows: int,
             ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return [(_rows_like(p, rows), _rows_like(p, rows), _rows_like(p, rows)) for p in params]


def _col(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[n] per-member VALUES as [n, 1, 1, ...] in LIKE's dtype, to broadcast against LIKE."""
    return values.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))



def _as_span(members: list[int]) -> slice | None:
    if members == list(range(members[0], members[-1] + 1)):
        return slice(members[0], members[-1] + 1)
    return None


def _split(kinds: Sequence[str]) -> list[tuple[bool, list[int]]]:
    """(is Adam/AdamW, member rows) for each update rule that some member uses."""
    sgd = [k for k, kind in enumerate(kinds) if kind == "sgd"]
    adam = [k for k, kind in enumerate(kinds) if kind != "sgd"]
    return [(is_adam, rows) for is_adam, rows in ((False, sgd), (True, adam)) if rows]


def check_args(params: Sequence[torch.Tensor], kinds: Sequence[str],
                weight_decay: Sequence[float], *, betas2: float, eps: float) -> None:
    bad = [kind for kind in kinds if kind not in KINDS]
    if not kinds or bad:
        raise ValueError(f"kinds must be a non-empty list of {list(KINDS)}, but got "
                         f"kinds={list(kinds)}")
    if len(weight_decay) != len(kinds) or any(wd < 0 for wd in weight_decay):
        raise ValueError(f"weight_decay must hold one value >= 0 per member ({len(kinds)}), "
                         f"but got weight_decay={list(weight_decay)}")
    if not 0 <= betas2 < 1 or eps < 0:
        raise ValueError(f"need 0 <= betas2 < 1 and eps >= 0, but got {betas2=}, {eps=}")
    check_params(params, len(kinds))


def check_params(params: Sequence[torch.Tensor], members: int) -> None:
    shapes = [tuple(p.shape) for p in params]
    if not params or any(not s or s[0] != members for s in shapes):
        raise ValueError(f"params must be stacked tensors with {members} rows, but got "
                         f"shapes {shapes}")
