"""The step loop never waits for the device and never builds a tensor from host data.

On a GPU either costs every step what the step itself costs: a sync drains the launch queue,
a host-made tensor is a blocking copy. Proved here on the CPU: every op an epoch dispatches is
counted (TorchDispatchMode), and an epoch of 32 steps must dispatch no more of them than an
epoch of 4. What a sync becomes: `.item()`, `float()`, `int()` and `bool()` of a tensor are
aten::_local_scalar_dense, a boolean mask or `nonzero` sizes its result from the data; a
`torch.tensor` or `torch.as_tensor` of Python values is aten::lift_fresh. `.tolist()`
dispatches nothing, so it is counted by a wrapper.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import models
from data_pipeline.tensors import Fold, Normalizer, TensorSet
from study.train.cohort import engine
from study.train.cohort.engine import Cohort, Member
from study.train.cohort.optim import StackedOptimizer
from study.train.engine_types import Hyperparams
from study.train.trial import train

BATCH = 16
SYNCS = ("_local_scalar_dense", "nonzero", "masked_select", "tolist")
HOST_DATA = ("lift_fresh", "lift_fresh_copy")
# Everything a step may do: a onecycle schedule (per-step rates), augmentation (per-step
# moves), dropout, BatchNorm, signals on (measured steps), SGD with momentum beside AdamW.
HPS = [Hyperparams(lr=0.01, optimizer="adamw", batch_size=BATCH, dropout=0.1,
                   weight_decay=1e-4, scheduler="onecycle",
                   scheduler_params={"onecycle_pct_start": 0.3}, norm="batch",
                   augment="affine", augment_params={"aug_degrees": 10.0,
                                                     "aug_translate": 0.08, "aug_scale": 0.08}),
       Hyperparams(lr=0.05, optimizer="sgd", batch_size=BATCH, dropout=0.0,
                   weight_decay=1e-4, scheduler="onecycle", momentum=0.9,
                   scheduler_params={"onecycle_pct_start": 0.3}, norm="batch")]


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        self.counts[func._overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _fold(images: int) -> Fold:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(images, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (images,), generator=g)
    return Fold(train=TensorSet(x, y), val=TensorSet(x[:64], y[:64]),
                normalizer=Normalizer(mean=0.13, std=0.31))


def _counted(epoch: Callable[[], object], monkeypatch: pytest.MonkeyPatch,
             ) -> collections.Counter[str]:
    """The ops one call of EPOCH dispatches, and its .tolist() calls."""
    ops = _Ops()
    tolist = torch.Tensor.tolist

    def counted_tolist(self: torch.Tensor) -> Any:
        ops.counts["tolist"] += 1
        return tolist(self)

    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "tolist", counted_tolist)
        with ops:
            epoch()
    return ops.counts


def _solo(fold: Fold) -> Callable[[], object]:
    hp = HPS[0]
    torch.manual_seed(0)
    epochs: Iterator[object] = train(models.build("mlp", hidden=16, **hp.model_kwargs()), hp,
                                     fold, max_epochs=3, generator=torch.Generator().manual_seed(0))
    next(epochs)  # the first epoch makes what later ones reuse (the optimizer's state)
    return lambda: next(epochs)


def _cohort(fold: Fold) -> Callable[[], object]:
    members = []
    for seed, hp in enumerate(HPS):
        torch.manual_seed(seed)
        members.append(Member(key=seed, hp=hp,
                              model=models.build("mlp", hidden=16, **hp.model_kwargs()),
                              generator=torch.Generator().manual_seed(seed)))
    cohort = Cohort(members, fold, max_epochs=3)
    cohort.run_epoch()
    return cohort.run_epoch


@pytest.mark.parametrize("loop", ["solo", "cohort on the CPU's update",
                                  "cohort on the GPU's update"])
def test_an_epoch_syncs_and_copies_a_fixed_few_times_however_many_steps(
    loop: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    if loop == "cohort on the GPU's update":  # StackedOptimizer, as on a GPU, run on the CPU
        monkeypatch.setattr(engine, "_optimizer", lambda device: StackedOptimizer)
    make = _solo if loop == "solo" else _cohort
    few = _counted(make(_fold(4 * BATCH)), monkeypatch)
    many = _counted(make(_fold(32 * BATCH)), monkeypatch)
    assert many["addmm"] + many["bmm"] > 4 * (few["addmm"] + few["bmm"])  # 8x the steps ran
    for name in (*SYNCS, *HOST_DATA):
        assert many[name] == few[name], f"{name}: {few[name]} in 4 steps, {many[name]} in 32"
    assert few["_local_scalar_dense"] == few["nonzero"] == few["masked_select"] == 0
    assert few["tolist"] <= 2  # the epoch's sums with validation's, and its signals
    # per epoch: the rate tables, the augmenting members' rows, a few scalars
    assert few["lift_fresh"] + few["lift_fresh_copy"] <= 6


def test_the_counter_sees_a_sync_and_a_host_made_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    t = torch.ones(3)
    counts = _counted(lambda: (t.sum().item(), torch.tensor([0.1]), t.tolist()), monkeypatch)
    assert counts["_local_scalar_dense"] == counts["lift_fresh"] == counts["tolist"] == 1
