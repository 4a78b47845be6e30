"""MemberSchedules against a solo optimizer and scheduler driven in the solo loop's order."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from torch import nn

from study.search.search_space import OPTIMIZERS
from study.train.cohort.schedule import MemberSchedules
from study.train.engine_types import Hyperparams
from study.train.training import SCHEDULERS, _step_epoch_scheduler, build_optimizer, build_scheduler

EPOCHS, STEPS = 3, 5
# plateau_patience 0: a loss that fails to improve once already cuts the rate.
SCHEDULER_PARAMS: dict[str, dict[str, float]] = {
    "none": {}, "step": {"step_size": 1, "step_gamma": 0.5}, "cosine": {},
    "plateau": {"plateau_factor": 0.5, "plateau_patience": 0},
    "onecycle": {"onecycle_pct_start": 0.3}, "exponential": {"exp_gamma": 0.9},
}
FLAT = [1.0] * EPOCHS  # validation losses that never improve
FALLING = [1.0 - 0.1 * e for e in range(EPOCHS)]  # ... that always do


def _hp(scheduler: str, optimizer: str, lr: float = 1e-2) -> Hyperparams:
    return Hyperparams(lr=lr, optimizer=optimizer, batch_size=32, dropout=0.0,
                       weight_decay=1e-4, scheduler=scheduler,
                       momentum=0.9 if optimizer == "sgd" else None,
                       scheduler_params=SCHEDULER_PARAMS[scheduler])


def _momentum(opt: torch.optim.Optimizer) -> float:
    group = opt.param_groups[0]
    return float(group["betas"][0] if "betas" in group else group["momentum"])


def _solo_sequence(hp: Hyperparams, val_losses: Sequence[float]) -> list[tuple[float, float]]:
    """(lr, momentum) at every optimizer step of a real solo trial, in train()'s order."""
    model = nn.Linear(2, 1)
    opt = build_optimizer(model, hp)
    schedule = build_scheduler(opt, hp, max_epochs=EPOCHS, steps_per_epoch=STEPS)
    seen = []
    for epoch in range(EPOCHS):
        for _ in range(STEPS):
            model(torch.ones(1, 2)).sum().backward()
            seen.append((opt.param_groups[0]["lr"], _momentum(opt)))  # read before the step
            opt.step()
            if schedule.per_batch and schedule.scheduler is not None:
                schedule.scheduler.step()
        _step_epoch_scheduler(schedule, val_losses[epoch])  # after validation
    return seen


def _cohort_sequences(schedules: MemberSchedules,
                      val_losses: Sequence[Sequence[float]]) -> list[list[tuple[float, float]]]:
    """Each member's (lr, momentum) at every step; VAL_LOSSES: [member][epoch]."""
    seen: list[list[tuple[float, float]]] = [[] for _ in val_losses]
    for epoch in range(EPOCHS):
        for _ in range(STEPS):
            for k, pair in enumerate(zip(schedules.lr(), schedules.momentum())):
                seen[k].append(pair)
            schedules.step_batch()
        schedules.step_epoch([losses[epoch] for losses in val_losses])
    return seen


def test_every_scheduler_is_covered() -> None:
    assert set(SCHEDULER_PARAMS) == set(SCHEDULERS)  # a new scheduler needs its case here


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_member_follows_its_solo_schedule(scheduler: str, optimizer: str) -> None:
    hp = _hp(scheduler, optimizer)
    neighbour = _hp("onecycle", "adam", lr=3e-3)  # a busy schedule beside it changes nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "scheduler stepped before optimizer"
        got = _cohort_sequences(
            MemberSchedules([hp, neighbour], max_epochs=EPOCHS, steps_per_epoch=STEPS),
            [FLAT, FLAT])
    # exactly the floats a solo trial's optimizer would have used, step by step
    assert got[0] == _solo_sequence(hp, FLAT)
    assert got[1] == _solo_sequence(neighbour, FLAT)


def test_sgd_without_momentum_still_cycles_it_under_onecycle() -> None:
    # build_optimizer gives SGD momentum 0; OneCycleLR then cycles it, in a solo trial too
    hp = _hp("onecycle", "sgd")
    hp = Hyperparams(**{**hp.__dict__, "momentum": None})
    got = _cohort_sequences(MemberSchedules([hp], max_epochs=EPOCHS, steps_per_epoch=STEPS),
                            [FLAT])
    assert got[0] == _solo_sequence(hp, FLAT)
    assert got[0][0][1] > 0  # not the 0 the optimizer was built with


def test_plateau_members_step_on_their_own_losses() -> None:
    hps = [_hp("plateau", "adam"), _hp("plateau", "sgd")]
    got = _cohort_sequences(MemberSchedules(hps, max_epochs=EPOCHS, steps_per_epoch=STEPS),
                            [FLAT, FALLING])
    assert got[0] == _solo_sequence(hps[0], FLAT)
    assert got[1] == _solo_sequence(hps[1], FALLING)
    assert got[0][-1][0] < hps[0].lr  # the flat member's rate was cut ...
    assert got[1][-1][0] == hps[1].lr  # ... the improving member's was not


def test_keep_drops_rows() -> None:
    hps = [_hp("step", "sgd"), _hp("onecycle", "adam"), _hp("exponential", "adamw", lr=5e-3)]
    schedules = MemberSchedules(hps, max_epochs=EPOCHS, steps_per_epoch=STEPS)
    schedules.keep([0, 2])
    assert len(schedules) == 2
    # the members that stay run on as if alone; the one that left is gone from every list
    got = _cohort_sequences(schedules, [FLAT, FLAT])
    assert got == [_solo_sequence(hps[0], FLAT), _solo_sequence(hps[2], FLAT)]


@pytest.mark.parametrize("call,match", [
    (lambda s: s.step_epoch([1.0]), "one validation loss per member"),
    (lambda s: s.keep([1, 0]), r"rows=\[1, 0\]"),
    (lambda s: s.keep([2]), r"rows=\[2\]"),
])
def test_bad_calls_name_the_value(call: Any, match: str) -> None:
    schedules = MemberSchedules([_hp("none", "sgd")] * 2, max_epochs=EPOCHS,
                                steps_per_epoch=STEPS)
    with pytest.raises(ValueError, match=match):
        call(schedules)
