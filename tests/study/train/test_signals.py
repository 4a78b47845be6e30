from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from data_pipeline import Fold, SearchData
from models import build
from study.train.engine_types import Hyperparams, TrainOptions
from study.train.signals import DEAD_SLICE, dead_units
from study.train.trial import train


def _param(model: nn.Module, name: str) -> nn.Parameter:
    return dict(model.named_parameters())[name]


def _grad(model: nn.Module, name: str) -> torch.Tensor:
    grad = _param(model, name).grad
    assert grad is not None
    return grad


@pytest.fixture
def fold(search_data: SearchData) -> Fold:
    return search_data.fold(0)


def _hp(**overrides: Any) -> Hyperparams:
    base: dict[str, Any] = {"lr": 0.1, "optimizer": "sgd", "momentum": 0.0, "dropout": 0.0,
                            "weight_decay": 0.0, "scheduler": "none"}
    return Hyperparams(**{**base, **overrides})


def test_one_step_epoch_signals_match_a_hand_computed_step(fold: Fold) -> None:
    # One batch holds the whole train split: the epoch is one SGD step, measured, and the
    # mean loss (hence its gradient) does not depend on the batch order.
    hp = _hp(batch_size=len(fold.train))
    torch.manual_seed(0)
    model = build("mlp", hidden=16)
    reference = build("mlp", hidden=16)
    reference.load_state_dict(model.state_dict())
    [epoch] = train(model, hp, fold, max_epochs=1, generator=torch.Generator().manual_seed(0))

    reference.train()
    F.cross_entropy(reference(fold.train.x), fold.train.y).backward()
    first, last = _grad(reference, "net.1.weight"), _grad(reference, "net.4.weight")
    assert epoch.signals["grad_norm/net.1"] == pytest.approx(first.norm().item(),
                                                             rel=1e-4)  # per layer
    assert epoch.signals["grad_norm/net.4"] == pytest.approx(last.norm().item(), rel=1e-4)
    names = [name for name, _ in reference.named_parameters()]
    overall = torch.cat([_grad(reference, n).flatten() for n in names]).norm().item()
    assert epoch.signals["grad_norm"] == pytest.approx(overall, rel=1e-4)  # every tensor
    # Plain SGD moves a weight by lr * grad: the ratio to the new weight's norm.
    moved = hp.lr * first.norm()
    after = (_param(reference, "net.1.weight") - hp.lr * first).norm()
    assert epoch.signals["update_ratio/net.1"] == pytest.approx((moved / after).item(), rel=1e-3)


def test_a_relu_layer_pushed_below_zero_is_all_dead(fold: Fold) -> None:
    model = build("mlp", hidden=16)
    names, shares = dead_units(model, fold.val.x[:256])
    assert names == ["net.2"]
    assert shares.tolist()[-1] < 0.5  # a fresh network: most units fire on some image
    with torch.no_grad():
        _param(model, "net.1.bias").fill_(-1e3)  # every pre-activation below 0: all silent
    _, shares = dead_units(model, fold.val.x[:256])
    assert shares.tolist() == [1.0, 1.0]  # the module and the whole network
    assert model.training  # the probe leaves the mode as it found it


def test_a_cnn_channel_counts_dead_only_if_silent_everywhere(fold: Fold) -> None:
    model = build("cnn", channels=4, hidden=8)
    with torch.no_grad():
        conv = _param(model, "features.0.bias")
        conv[:2] = -1e3  # channels 0 and 1 of the first conv: silent
        conv[2:] = 1e3  # channels 2 and 3: fire everywhere
    names, shares = dead_units(model, fold.val.x[:64])
    assert names[0] == "features.1"
    assert shares[0].item() == pytest.approx(0.5)  # 2 of 4 channels


def test_signals_off_measures_nothing(fold: Fold) -> None:
    [epoch] = train(build("mlp", hidden=16), _hp(batch_size=64), fold, max_epochs=1,
                    generator=torch.Generator().manual_seed(0),
                    options=TrainOptions(signals=False))
    assert epoch.signals == {}
    assert "grad_norm" not in epoch.as_dict() and "loss_gap" in epoch.as_dict()


def test_signals_do_not_change_what_is_learned(fold: Fold) -> None:
    # The probe reads gradients and weights, never writes them: the same losses either way.
    def losses(signals: bool) -> list[float]:
        torch.manual_seed(0)
        return [m.val_loss for m in train(
            build("mlp", hidden=16), _hp(batch_size=64), fold, max_epochs=2,
            generator=torch.Generator().manual_seed(0),
            options=TrainOptions(signals=signals))]

    assert losses(True) == losses(False)


def test_dead_units_read_off_validation_match_a_pass_of_their_own(fold: Fold) -> None:
    # The epoch's count comes from validation's own forward pass (its first DEAD_SLICE
    # images): the same as a separate pass over those images with the trained weights.
    model = build("mlp", hidden=16)
    with torch.no_grad():
        _param(model, "net.1.bias")[:4] = -1e3  # 4 of 16 units planted dead: no gradient
    [epoch] = train(model, _hp(batch_size=64), fold, max_epochs=1,
                    generator=torch.Generator().manual_seed(0))
    names, shares = dead_units(model, fold.val.x[:DEAD_SLICE])
    assert epoch.signals["dead_relu"] == pytest.approx(shares.tolist()[-1])
    assert epoch.signals["dead_relu"] >= 0.25  # the planted ones at least: the test can fail
