"""A member trained inside a cohort is the same trial as when trained alone."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Sequence

import pytest
import torch

import models
from data_pipeline import Fold, SearchData
from study.train.cohort import engine
from study.train.cohort.engine import Cohort, Member
from study.train.cohort.optim import StackedOptimizer
from study.train.engine_types import EpochMetrics, Hyperparams
from study.train.training import NonFiniteLossError
from study.train.trial import train

EPOCHS = 3
BATCH = 32
SCHEDULER_PARAMS: dict[str, dict[str, float]] = {
    "none": {}, "step": {"step_size": 1, "step_gamma": 0.5}, "cosine": {},
    "plateau": {"plateau_factor": 0.5, "plateau_patience": 0},
    "onecycle": {"onecycle_pct_start": 0.3}, "exponential": {"exp_gamma": 0.8},
}
# Relative tolerance of a member's losses against its solo run after EPOCHS epochs: stacked
# (batched) matrix products add their terms in another order than the solo ones.
RTOL = 1e-5


@pytest.fixture
def fold(search_data: SearchData) -> Fold:
    return search_data.fold(0)


def _hp(optimizer: str, lr: float, *, scheduler: str = "none", weight_decay: float = 1e-4,
        momentum: float | None = None, dropout: float = 0.0, norm: str = "none") -> Hyperparams:
    return Hyperparams(lr=lr, optimizer=optimizer, batch_size=BATCH, dropout=dropout,
                       weight_decay=weight_decay, scheduler=scheduler,
                       momentum=momentum if optimizer == "sgd" else None,
                       scheduler_params=SCHEDULER_PARAMS[scheduler], norm=norm)


def _eight(scheduler: str) -> list[Hyperparams]:
    """Eight members that differ in optimizer, learning rate, weight decay and momentum."""
    return [_hp("sgd", 0.05, scheduler=scheduler, momentum=0.0),
            _hp("sgd", 0.02, scheduler=scheduler, momentum=0.9, weight_decay=0.0),
            _hp("adam", 1e-3, scheduler=scheduler),
            _hp("adam", 3e-3, scheduler=scheduler, weight_decay=0.0),
            _hp("adamw", 1e-3, scheduler=scheduler, weight_decay=1e-2),
            _hp("adamw", 2e-3, scheduler=scheduler),
            _hp("sgd", 0.1, scheduler=scheduler, momentum=0.5),
            _hp("adam", 5e-4, scheduler=scheduler, weight_decay=1e-3)]


def _model(seed: int, hp: Hyperparams, name: str = "mlp") -> torch.nn.Module:
    torch.manual_seed(seed)
    return models.build(name, hidden=16, **hp.model_kwargs())


def _solo(fold: Fold, hp: Hyperparams, seed: int, name: str = "mlp") -> list[EpochMetrics]:
    generator = torch.Generator().manual_seed(seed)
    return list(train(_model(seed, hp, name), hp, fold, max_epochs=EPOCHS, generator=generator))


def _cohort(fold: Fold, hps: Sequence[Hyperparams], name: str = "mlp") -> Cohort:
    members = [Member(key=seed, hp=hp, model=_model(seed, hp, name),
                      generator=torch.Generator().manual_seed(seed))
               for seed, hp in enumerate(hps)]
    return Cohort(members, fold, max_epochs=EPOCHS)


def _run(cohort: Cohort) -> dict[Hashable, list[EpochMetrics | NonFiniteLossError]]:
    seen: dict[Hashable, list[EpochMetrics | NonFiniteLossError]] = {}
    while cohort.members:
        for key, result in cohort.run_epoch().items():
            seen.setdefault(key, []).append(result)
        cohort.remove(cohort.finished())  # done members leave, as the search removes them
    return seen


def _losses(history: Sequence[EpochMetrics | NonFiniteLossError]) -> list[float]:
    """Each epoch's train and validation loss, in order, flat (for pytest.approx)."""
    out = []
    for m in history:
        assert isinstance(m, EpochMetrics)
        out += [m.train_loss, m.val_loss]
    return out


@pytest.fixture(params=["cpu", "gpu"])
def update(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The cohort's update path: the CPU's (torch's fused kernel member by member) or, run on
    this CPU, the GPU's (one vectorised StackedOptimizer update of every member)."""
    if request.param == "gpu":
        monkeypatch.setattr(engine, "_optimizer", lambda device: StackedOptimizer)
    return str(request.param)


@pytest.mark.parametrize("scheduler", list(SCHEDULER_PARAMS))
def test_a_member_of_eight_trains_as_it_would_alone(fold: Fold, scheduler: str,
                                                     update: str) -> None:
    hps = _eight(scheduler)
    together = _run(_cohort(fold, hps))
    for seed, hp in enumerate(hps):
        alone = _solo(fold, hp, seed)
        got, want = _losses(together[seed]), _losses(alone)
        assert got == pytest.approx(want, rel=RTOL), f"member {seed}: {hp}"
        lrs = [m.lr for m in together[seed] if isinstance(m, EpochMetrics)]
        assert lrs == pytest.approx([m.lr for m in alone], rel=1e-6)  # the same schedule
        accs = [m.val_acc for m in together[seed] if isinstance(m, EpochMetrics)]
        assert accs == pytest.approx([m.val_acc for m in alone], abs=1 / len(fold.val))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_a_member_s_signals_are_those_it_would_have_alone(fold: Fold, name: str) -> None:
    # Gradient norms, update ratios and dead units per member: the same steps are measured.
    # (No dropout: a member draws its own masks, not the solo loop's.)
    hps = [_hp("sgd", 0.05, momentum=0.9), _hp("adam", 1e-3)]
    together = _run(_cohort(fold, hps, name))
    for seed, hp in enumerate(hps):
        alone = _solo(fold, hp, seed, name)
        for got, want in zip(together[seed], alone, strict=True):
            assert isinstance(got, EpochMetrics)
            assert set(got.signals) == set(want.signals)  # the same names, per layer
            assert got.signals == pytest.approx(want.signals, rel=1e-3, abs=1e-6)


def test_a_cohort_of_one_is_todays_loop(fold: Fold) -> None:
    hp = _hp("adam", 2e-3, scheduler="onecycle")
    got = _losses(_run(_cohort(fold, [hp]))[0])
    assert got == pytest.approx(_losses(_solo(fold, hp, 0)), rel=RTOL)


def test_the_cnn_trains_in_a_cohort_as_alone(fold: Fold) -> None:
    hps = [_hp("adam", 1e-3), _hp("sgd", 0.05, momentum=0.9)]
    together = _run(_cohort(fold, hps, "cnn"))
    for seed, hp in enumerate(hps):
        want = _losses(_solo(fold, hp, seed, "cnn"))
        assert _losses(together[seed]) == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_batchnorm_members_train_and_keep_running_statistics_as_alone(fold: Fold,
                                                                      name: str) -> None:
    # Each member normalises over its own batch and keeps its own running statistics (the
    # stacked buffers), which evaluation uses: validation losses show both.
    hps = [_hp("adam", 1e-3, norm="batch"), _hp("sgd", 0.05, momentum=0.9, norm="batch"),
           _hp("adamw", 3e-3, norm="batch")]
    cohort = _cohort(fold, hps, name)
    together = _run(cohort)
    for seed, hp in enumerate(hps):
        want = _losses(_solo(fold, hp, seed, name))
        # The CNN's grouped convolutions sum in another order, and BatchNorm divides by each
        # batch's spread, which magnifies that: 1e-3 relative after 3 epochs (measured 2.6e-4).
        assert _losses(together[seed]) == pytest.approx(want, rel=1e-3 if name == "cnn" else RTOL)


def test_members_are_independent(fold: Fold) -> None:
    hps = _eight("cosine")
    base = _run(_cohort(fold, hps))
    changed = _run(_cohort(fold, [_hp("sgd", 0.3, momentum=0.9), *hps[1:]]))
    assert _losses(changed[0]) != _losses(base[0])  # the changed member learns otherwise
    for seed in range(1, 8):
        assert _losses(changed[seed]) == _losses(base[seed])  # and no other member notices


def test_a_member_that_leaves_changes_no_other(fold: Fold) -> None:
    hps = _eight("step")
    base = _run(_cohort(fold, hps))
    cohort = _cohort(fold, hps)
    first = cohort.run_epoch()
    cohort.remove([2, 5])  # pruned after epoch 1
    assert set(cohort.keys) == {0, 1, 3, 4, 6, 7}  # (SGD members first, then Adam)
    rest = [cohort.run_epoch() for _ in range(EPOCHS - 1)]
    for seed in (0, 1, 3, 4, 6, 7):
        history = [first[seed], *(epoch[seed] for epoch in rest)]
        assert _losses(history) == pytest.approx(_losses(base[seed]), rel=1e-6)


@pytest.mark.parametrize("after", [1, EPOCHS], ids=["mid-cohort", "after-all-left"])
def test_members_that_join_train_as_they_would_alone(fold: Fold, after: int) -> None:
    first = [_hp("adam", 2e-3, scheduler="onecycle"), _hp("sgd", 0.05, momentum=0.9)]
    joining = [_hp("sgd", 0.03, momentum=0.8, scheduler="step"),
               _hp("adamw", 1e-3, scheduler="plateau"), _hp("adam", 3e-3, scheduler="cosine")]
    cohort = _cohort(fold, first)
    seen: dict[Hashable, list[EpochMetrics | NonFiniteLossError]] = {}
    for _ in range(after):
        for key, result in cohort.run_epoch().items():
            seen.setdefault(key, []).append(result)
    cohort.remove(cohort.finished())
    cohort.add([Member(key=seed, hp=hp, model=_model(seed, hp, "mlp"),
                       generator=torch.Generator().manual_seed(seed))
                for seed, hp in enumerate(joining, start=len(first))])
    for key, history in _run(cohort).items():
        seen.setdefault(key, []).extend(history)
    for seed, hp in enumerate([*first, *joining]):
        assert [m.epoch for m in seen[seed] if isinstance(m, EpochMetrics)] == [1, 2, 3]
        want = _losses(_solo(fold, hp, seed))  # the joiners too, from their first epoch
        assert _losses(seen[seed]) == pytest.approx(want, rel=RTOL), f"member {seed}: {hp}"


def test_a_joining_member_needs_the_batch_size_and_a_new_key(fold: Fold) -> None:
    cohort = _cohort(fold, [_hp("adam", 1e-3)])
    other = dataclasses.replace(_hp("adam", 1e-3), batch_size=2 * BATCH)
    with pytest.raises(ValueError, match="batch size 32"):
        cohort.add([Member(key=1, hp=other, model=_model(1, other, "mlp"),
                           generator=torch.Generator())])
    with pytest.raises(ValueError, match="new, distinct keys"):
        cohort.add([Member(key=0, hp=_hp("sgd", 0.1), model=_model(0, other, "mlp"),
                           generator=torch.Generator())])


def test_a_diverging_member_fails_alone(fold: Fold) -> None:
    hps = [_hp("sgd", 1e6, momentum=0.9), _hp("adam", 1e-3), _hp("sgd", 0.05, momentum=0.0)]
    cohort = _cohort(fold, hps)
    results = cohort.run_epoch()
    assert isinstance(results[0], NonFiniteLossError)  # reported, for its trial to FAIL
    assert "diverged" in str(results[0])
    cohort.remove([0])
    while not cohort.finished():
        for key, result in cohort.run_epoch().items():
            results = {**results, key: result}
    for seed in (1, 2):
        last = results[seed]
        assert isinstance(last, EpochMetrics) and math.isfinite(last.train_loss)
        want = _solo(fold, hps[seed], seed)[-1]
        assert (last.train_loss, last.val_loss) == pytest.approx(
            (want.train_loss, want.val_loss), rel=RTOL)


def test_each_member_draws_its_own_dropout_masks(fold: Fold) -> None:
    hp = _hp("adam", 1e-3, dropout=0.5)
    members = [Member(key=k, hp=hp, model=_model(0, hp), generator=torch.Generator()
                      .manual_seed(0)) for k in range(2)]  # identical twins
    cohort = Cohort(members, fold, max_epochs=EPOCHS)
    results = cohort.run_epoch()
    first, second = results[0], results[1]
    assert isinstance(first, EpochMetrics) and isinstance(second, EpochMetrics)
    assert first.train_loss != second.train_loss  # same weights and batches, other masks


def test_a_member_s_checkpoint_loads_into_its_solo_network(fold: Fold) -> None:
    hps = _eight("none")[:3]
    cohort = _cohort(fold, hps)
    cohort.run_epoch()
    solo = models.build("mlp", hidden=16)
    solo.load_state_dict(cohort.state(1))  # the solo model's keys and shapes
    logits = cohort.model.shared(fold.val.x[:5])[1]
    solo.eval()
    torch.testing.assert_close(solo(fold.val.x[:5]), logits.detach(), rtol=1e-5, atol=1e-6)


def test_members_of_different_batch_sizes_are_refused(fold: Fold) -> None:
    hp = _hp("adam", 1e-3)
    other = Hyperparams(**{**hp.__dict__, "batch_size": 64})
    with pytest.raises(ValueError, match="share one batch size"):
        _cohort(fold, [hp, other])
