"""The cohort's optimizers against torch.optim, member by member: the vectorised update
(StackedOptimizer, for GPUs) and torch's fused kernel run member by member (MemberOptimizers,
for the CPU). Both take the same arguments, so every test runs on both."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from study.train.cohort.fused import MemberOptimizers
from study.train.cohort.optim import StackedOptimizer

SHAPES = [(12, 10), (12,), (3, 12), (3,)]  # an MLP's weight, bias, weight, bias per member
STEPS = 20
# torch's own kernels fuse a multiply-add (p.add_(buf, alpha=-lr), grad.add(p, alpha=wd)) where a
# per-member coefficient tensor needs a multiply and then an add: one more rounding a step.
# Adam(W) stays within 1e-7 absolute; SGD (lr 0.1, momentum 0.9, |p| up to ~10) within 1e-6,
# the same size as the gap between torch's own fused and for-loop SGD on these steps (4e-7).
TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}
ADAM_TOLERANCE = {"rtol": 1e-6, "atol": 1e-7}

LRS = [0.1, 0.03, 0.01, 0.05]
SGD_LRS = LRS
ADAM_LRS = [1e-2, 3e-3, 1e-3, 5e-3]
WDS = [1e-2, 1e-3, 0.0, 1e-4]
MOMENTA = [0.9, 0.8, 0.95, 0.85]  # SGD's momentum, Adam's beta1


Optimizer = type[StackedOptimizer] | type[MemberOptimizers]
both = pytest.mark.parametrize("cls", [StackedOptimizer, MemberOptimizers],
                               ids=["vectorised", "member-fused"])


def _solo(kind: str, params: list[torch.Tensor], *, lr: float, wd: float, momentum: float,
          fused: bool) -> torch.optim.Optimizer:
    speed = True if fused else None  # as study.train.training.build_optimizer does
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd, fused=speed)
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, betas=(momentum, 0.999), weight_decay=wd, fused=speed)


def _set_hyper(opt: torch.optim.Optimizer, lr: float, momentum: float) -> None:
    group = opt.param_groups[0]
    group["lr"] = lr
    if "betas" in group:
        group["betas"] = (momentum, group["betas"][1])
    else:
        group["momentum"] = momentum


def _stacked_init(members: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn((members, *s), generator=gen) for s in SHAPES]


def _grads(members: int, steps: int, seed: int = 1) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn((members, *s), generator=gen) for s in SHAPES] for _ in range(steps)]


def _run_stacked(opt: StackedOptimizer | MemberOptimizers, params: list[torch.Tensor],
                 grads: list[list[torch.Tensor]], lrs: list[list[float]],
                 momenta: list[list[float]]) -> None:
    for step_grads, lr, momentum in zip(grads, lrs, momenta):
        opt.zero_grad()
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step(lr, momentum)


def _compare_with_torch(cls: Optimizer, kinds: Sequence[str], lrs: list[list[float]],
                        wds: Sequence[float], momenta: list[list[float]], *, fused: bool,
                        transposed: bool = False) -> None:
    """LRS and MOMENTA: [step][member]; torch's param_groups get the same values each step."""
    members = len(kinds)
    init, grads = _stacked_init(members), _grads(members, len(lrs))
    stacked = [_transposed(t) if transposed else t.clone() for t in init]
    _run_stacked(cls(stacked, kinds, wds), stacked, grads, lrs, momenta)
    for k, kind in enumerate(kinds):
        solo = [t[k].clone() for t in init]
        opt = _solo(kind, solo, lr=lrs[0][k], wd=wds[k], momentum=momenta[0][k], fused=fused)
        for step, step_grads in enumerate(grads):
            _set_hyper(opt, lrs[step][k], momenta[step][k])
            for p, g in zip(solo, step_grads):
                p.grad = g[k].clone()
            opt.step()
        tolerance = TOLERANCE if kind == "sgd" else ADAM_TOLERANCE
        for mine, theirs in zip(stacked, solo):
            # member k of the stack ends where torch.optim takes member k alone
            torch.testing.assert_close(mine[k], theirs, rtol=tolerance["rtol"],
                                       atol=tolerance["atol"])


def _transposed(t: torch.Tensor) -> torch.Tensor:
    """A copy of T whose member rows are stored transposed, as the stacked model lays out a
    linear layer's weights (dense, not contiguous)."""
    if t.dim() < 3:
        return t.clone()
    return t.transpose(1, 2).contiguous().transpose(1, 2)


def _constant(values: Sequence[float], steps: int = STEPS) -> list[list[float]]:
    return [list(values)] * steps


@both
@pytest.mark.parametrize("fused", [False, True], ids=["for-loop", "fused"])
@pytest.mark.parametrize("weight_decay", [False, True], ids=["no-wd", "wd"])
@pytest.mark.parametrize("kind,momenta", [
    ("sgd", [0.0] * 4), ("sgd", MOMENTA), ("adam", MOMENTA), ("adamw", MOMENTA),
], ids=["sgd-momentum0", "sgd-momentum", "adam", "adamw"])
def test_each_kind_matches_torch(cls: Optimizer, kind: str, momenta: list[float],
                                 weight_decay: bool, fused: bool) -> None:
    lrs = SGD_LRS if kind == "sgd" else ADAM_LRS
    wds = WDS if weight_decay else [0.0] * 4
    _compare_with_torch(cls, [kind] * 4, _constant(lrs), wds, _constant(momenta), fused=fused)


@both
@pytest.mark.parametrize("fused", [False, True], ids=["for-loop", "fused"])
@pytest.mark.parametrize("kinds", [
    ["sgd", "adam", "adamw", "sgd"],  # gathered rows
    ["sgd", "sgd", "adamw", "adam"],  # each family a contiguous view
], ids=["interleaved", "contiguous"])
def test_mixed_kinds_match_torch(cls: Optimizer, kinds: list[str], fused: bool) -> None:
    lrs = [SGD_LRS[k] if kind == "sgd" else ADAM_LRS[k] for k, kind in enumerate(kinds)]
    _compare_with_torch(cls, kinds, _constant(lrs), WDS, _constant(MOMENTA), fused=fused)


@both
@pytest.mark.parametrize("fused", [False, True], ids=["for-loop", "fused"])
def test_per_step_momentum_and_lr_match_torch(cls: Optimizer, fused: bool) -> None:
    # OneCycleLR moves lr and momentum/beta1 every batch; torch reads them from param_groups
    kinds = ["sgd", "adam", "adamw", "sgd"]
    phase = [s / (STEPS - 1) for s in range(STEPS)]
    momenta = [[0.95 - 0.1 * t + 0.01 * k for k in range(4)] for t in phase]
    lrs = [[(ADAM_LRS if kind != "sgd" else SGD_LRS)[k] * (0.1 + t)
            for k, kind in enumerate(kinds)] for t in phase]
    _compare_with_torch(cls, kinds, lrs, WDS, momenta, fused=fused)


@both
@pytest.mark.parametrize("kinds", [["adam"] * 4, ["sgd", "adam", "adamw", "sgd"]],
                         ids=["one-kind", "mixed"])
def test_one_members_lr_changes_no_other_member(cls: Optimizer, kinds: list[str]) -> None:
    init, grads = _stacked_init(4), _grads(4, STEPS)
    lrs = [1e-2] * 4
    bumped = [1e-2, 5e-2, 1e-2, 1e-2]
    runs = []
    for member_lrs in (lrs, bumped):
        params = [t.clone() for t in init]
        _run_stacked(cls(params, kinds, WDS), params, grads,
                     _constant(member_lrs), _constant(MOMENTA))
        runs.append(params)
    for before, after in zip(*runs):
        assert torch.equal(before[[0, 2, 3]], after[[0, 2, 3]])  # the others: bit for bit
        assert not torch.equal(before[1], after[1])  # member 1 itself did move differently


@both
@pytest.mark.parametrize("kept", [[0, 2, 3], [0, 3], [1, 2]],
                         ids=["one-adam-leaves", "all-adam-leave", "all-sgd-leave"])
def test_keep_continues_as_if_never_stacked(cls: Optimizer, kept: list[int]) -> None:
    kinds, lrs = ["sgd", "adam", "adamw", "sgd"], [0.1, 1e-2, 3e-3, 0.05]
    init, grads = _stacked_init(4), _grads(4, 2 * STEPS)
    params = [t.clone() for t in init]
    opt = cls(params, kinds, WDS)
    _run_stacked(opt, params, grads[:STEPS], _constant(lrs), _constant(MOMENTA))
    compacted = [p[kept].clone() for p in params]  # what the model hands over
    opt.keep(torch.tensor(kept), compacted)
    later = [[g[kept] for g in step] for step in grads[STEPS:]]
    _run_stacked(opt, compacted, later, _constant([lrs[k] for k in kept]),
                 _constant([MOMENTA[k] for k in kept]))

    alone = [t[kept].clone() for t in init]  # the kept members, stacked without the others
    own = cls(alone, [kinds[k] for k in kept], [WDS[k] for k in kept])
    _run_stacked(own, alone, [[g[kept] for g in step] for step in grads],
                 _constant([lrs[k] for k in kept], 2 * STEPS),
                 _constant([MOMENTA[k] for k in kept], 2 * STEPS))
    for mine, theirs in zip(compacted, alone):
        assert torch.equal(mine, theirs)  # bit for bit: no trace of the members that left
    assert opt.kinds == [kinds[k] for k in kept]


@both
def test_zero_grad_drops_gradients(cls: Optimizer) -> None:
    params = _stacked_init(2)
    opt = cls(params, ["sgd", "adam"], [0.0, 0.0])
    for p in params:
        p.grad = torch.ones_like(p)
    opt.zero_grad()
    assert all(p.grad is None for p in params)  # set to None, as torch's set_to_none=True


@both
@pytest.mark.parametrize("kinds,wds,match", [
    (["sgd", "rmsprop"], [0.0, 0.0], "rmsprop"),
    (["sgd", "adam"], [0.0], r"weight_decay=\[0.0\]"),
    (["sgd", "adam", "adam"], [0.0] * 3, "with 3 rows"),
])
def test_bad_arguments_name_the_value(cls: Optimizer, kinds: list[str], wds: list[float],
                                      match: str) -> None:
    with pytest.raises(ValueError, match=match):  # the message shows what was wrong
        cls(_stacked_init(2), kinds, wds)


@both
def test_keep_rejects_unordered_rows(cls: Optimizer) -> None:
    params = _stacked_init(3)
    opt = cls(params, ["sgd"] * 3, [0.0] * 3)
    with pytest.raises(ValueError, match=r"rows=\[2, 0\]"):
        opt.keep(torch.tensor([2, 0]), [p[[2, 0]] for p in params])


@both
@pytest.mark.parametrize("kinds", [["sgd", "adam", "adamw", "sgd"]], ids=["mixed"])
def test_weights_stored_transposed_match_torch(cls: Optimizer, kinds: list[str]) -> None:
    # the stacked model stores weights as their gradients arrive: member rows transposed
    lrs = [SGD_LRS[k] if kind == "sgd" else ADAM_LRS[k] for k, kind in enumerate(kinds)]
    _compare_with_torch(cls, kinds, _constant(lrs), WDS, _constant(MOMENTA), fused=True,
                        transposed=True)


@both
def test_members_that_join_start_as_a_new_torch_optimizer(cls: Optimizer) -> None:
    # Two members step alone, then an SGD and an AdamW member join (the SGD one after Adam
    # rows: the vectorised update gathers its family); all four then step together.
    kinds, lrs = ["adam", "sgd", "sgd", "adamw"], [1e-2, 0.1, 0.05, 3e-3]
    init, grads = _stacked_init(4), _grads(4, 2 * STEPS)
    first = [t[:2].clone() for t in init]
    opt = cls(first, kinds[:2], WDS[:2])
    _run_stacked(opt, first, [[g[:2] for g in step] for step in grads[:STEPS]],
                 _constant(lrs[:2]), _constant(MOMENTA[:2]))
    params = [torch.cat([p, t[2:]]) for p, t in zip(first, init)]  # what the model hands over
    opt.add(params, kinds[2:], WDS[2:])
    _run_stacked(opt, params, grads[STEPS:], _constant(lrs), _constant(MOMENTA))
    assert opt.kinds == kinds
    for k, kind in enumerate(kinds):
        solo = [t[k].clone() for t in init]
        torch_opt = _solo(kind, solo, lr=lrs[k], wd=WDS[k], momentum=MOMENTA[k], fused=True)
        for step_grads in grads[:STEPS] if k < 2 else []:
            for p, g in zip(solo, step_grads):
                p.grad = g[k].clone()
            torch_opt.step()
        for step_grads in grads[STEPS:]:
            for p, g in zip(solo, step_grads):
                p.grad = g[k].clone()
            torch_opt.step()
        for mine, theirs in zip(params, solo):
            torch.testing.assert_close(mine[k], theirs, rtol=TOLERANCE["rtol"],
                                       atol=TOLERANCE["atol"])
