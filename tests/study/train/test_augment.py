"""Train-only augmentation: random affine moves of whole batches, drawn from the trial's own
generator, applied to training batches only (never to validation or test images)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from data_pipeline import Fold, SearchData
from models import build
from study.train.augment import Augmentation, sampling_grid, transform
from study.train.cohort import engine
from study.train.cohort.engine import Cohort, Member
from study.train.engine_types import EpochMetrics, Hyperparams
from study.train.training import evaluate
from study.train.trial import train

AFFINE = Augmentation("affine", degrees=15.0, translate=0.1, scale=0.1)
MARK = 7.0  # no normalised MNIST pixel reaches it (white is about 2.8)


@pytest.fixture
def fold(search_data: SearchData) -> Fold:
    return search_data.fold(0)


def _hp(augment: str = "affine", **overrides: Any) -> Hyperparams:
    params = {"none": {}, "rotate": {"aug_degrees": 15.0},
              "affine": {"aug_degrees": 15.0, "aug_translate": 0.1, "aug_scale": 0.1}}
    base: dict[str, Any] = {"lr": 3e-3, "optimizer": "adam", "batch_size": 32, "dropout": 0.0,
                            "weight_decay": 0.0, "scheduler": "none", "augment": augment,
                            "augment_params": params[augment]}
    return Hyperparams(**{**base, **overrides})


def test_draws_come_from_the_generator_and_stay_in_range() -> None:
    a = AFFINE.draw(500, torch.Generator().manual_seed(1))
    b = AFFINE.draw(500, torch.Generator().manual_seed(1))
    assert a.shape == (500, 2, 3) and torch.equal(a, b)  # the trial's seed fixes the moves
    scale = 1 / torch.linalg.det(a[:, :, :2].double()).sqrt()  # det = 1 / scale**2
    assert scale.min() >= 0.9 - 1e-6 and scale.max() <= 1.1 + 1e-6
    angle = torch.atan2(a[:, 1, 0], a[:, 0, 0]).abs().max()
    assert math.radians(10) < angle <= math.radians(15) + 1e-6  # up to ±degrees, and used
    assert a[:, :, 2].abs().max() <= 0.2 + 1e-6  # a shift of 0.1 of the side: 0.2 in [-1, 1]
    rotate = Augmentation("rotate", degrees=15.0).draw(100, torch.Generator().manual_seed(1))
    assert torch.allclose(rotate[:, :, 2], torch.zeros(100, 2))  # rotate neither shifts...
    det = torch.linalg.det(rotate[:, :, :2].double())
    assert torch.allclose(det, torch.ones(100, dtype=torch.float64))  # ...nor scales


def test_the_move_is_torchs_affine_grid_and_grid_sample() -> None:
    # Our grid is built separably (torch's affine_grid is 12x slower on the CPU). The grid is
    # the same up to float32 rounding of another order of operations (coordinates of size 1,
    # so 1e-6 is a few ulps), and every pixel is the same one except at a nearest-neighbour
    # tie: a grid point within rounding of a half pixel may round either way on any CPU.
    theta = AFFINE.draw(64, torch.Generator().manual_seed(0))
    x = torch.randn(64, 1, 28, 28)
    grid = F.affine_grid(theta, [64, 1, 28, 28], align_corners=False)
    torch.testing.assert_close(sampling_grid(theta, 28, 28), grid, rtol=0, atol=1e-6)
    want = F.grid_sample(x + 0.42, grid, mode="nearest", align_corners=False) - 0.42
    pixels = (grid + 1) * 28 / 2 - 0.5  # input pixel coordinates of each output pixel
    tie = ((pixels - pixels.floor() - 0.5).abs() < 1e-4).any(dim=-1)  # [64, 28, 28]
    differ = ~torch.isclose(transform(x, theta, -0.42), want, rtol=0, atol=1e-6)[:, 0]
    assert not (differ & ~tie).any()  # away from a tie, the very same pixel
    assert tie.sum() < 50  # and ties are rare (of 50,176 pixels), so the check has teeth


def test_an_identity_move_changes_nothing_and_moved_in_pixels_are_background() -> None:
    x = torch.randn(4, 1, 28, 28)
    identity = torch.eye(2, 3).expand(4, 2, 3)
    assert torch.allclose(transform(x, identity, -0.42), x, atol=1e-5)
    blank = torch.full((2, 1, 28, 28), -0.42)  # a black image, normalised
    shifted = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]]).expand(2, 2, 3)
    assert torch.allclose(transform(blank, shifted, -0.42), blank, atol=1e-6)  # not grey


def test_only_training_batches_are_augmented(fold: Fold, monkeypatch: pytest.MonkeyPatch,
                                             ) -> None:
    fold.val.x.fill_(MARK)  # every validation pixel marked
    seen: list[torch.Tensor] = []

    def spy(x: torch.Tensor, theta: torch.Tensor, background: float) -> torch.Tensor:
        seen.append(x.clone())
        return transform(x, theta, background)

    monkeypatch.setattr(engine, "transform", spy)
    torch.manual_seed(0)
    solo = build("mlp", hidden=16)
    list(train(solo, _hp(), fold, max_epochs=2, generator=torch.Generator().manual_seed(0)))
    batches = math.ceil(len(fold.train) / 32)
    assert len(seen) == 2 * batches  # every training batch, each epoch
    members = [Member(key=i, hp=_hp(), model=build("mlp", hidden=16),
                      generator=torch.Generator().manual_seed(i)) for i in range(2)]
    cohort = Cohort(members, fold, max_epochs=1)
    cohort.run_epoch()
    assert len(seen) == 3 * batches  # the cohort's: one call per step for all its members
    evaluate(solo, fold.val)
    assert len(seen) == 3 * batches  # evaluation moves nothing
    assert all((x != MARK).all() for x in seen)  # no validation image was ever moved


def test_augmentation_makes_a_different_trial_and_none_is_todays_loop(fold: Fold) -> None:
    def losses(hp: Hyperparams) -> list[float]:
        torch.manual_seed(0)
        metrics = train(build("mlp", hidden=16), hp, fold, max_epochs=2,
                        generator=torch.Generator().manual_seed(0))
        return [m.train_loss for m in metrics]

    plain = losses(_hp("none"))
    assert losses(_hp("none")) == plain  # reproducible
    assert losses(_hp("affine")) != plain and losses(_hp("rotate")) != plain


def test_augmenting_members_train_in_a_cohort_as_alone(fold: Fold) -> None:
    hps = [_hp("affine"), _hp("none"), _hp("rotate", lr=1e-3), _hp("affine", optimizer="sgd",
                                                                   lr=0.05, momentum=0.9)]
    members = []
    for seed, hp in enumerate(hps):
        torch.manual_seed(seed)
        members.append(Member(key=seed, hp=hp, model=build("mlp", hidden=16),
                              generator=torch.Generator().manual_seed(seed)))
    cohort = Cohort(members, fold, max_epochs=2)
    together: dict[object, list[float]] = {}
    while cohort.members:
        for key, result in cohort.run_epoch().items():
            assert isinstance(result, EpochMetrics)
            together.setdefault(key, []).extend([result.train_loss, result.val_loss])
        cohort.remove(cohort.finished())
    for seed, hp in enumerate(hps):
        torch.manual_seed(seed)
        alone = train(build("mlp", hidden=16), hp, fold, max_epochs=2,
                      generator=torch.Generator().manual_seed(seed))
        want = [v for m in alone for v in (m.train_loss, m.val_loss)]
        assert together[seed] == pytest.approx(want, rel=1e-5), f"member {seed}: {hp}"
