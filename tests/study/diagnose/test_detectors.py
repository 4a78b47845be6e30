"""Each detector on synthetic curves whose answer is known: the cases it must flag, and clean
curves it must leave alone."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pytest

from study.diagnose.detectors import Context, Thresholds, detect, fluctuation_ratio
from study.errors import ConfigError
from study.train.engine_types import EpochMetrics

CONTEXT = Context(val_size=6000, batch_size=64)


def curves(val_loss: Sequence[float], train_loss: Sequence[float] | None = None, *,
           val_acc: Sequence[float] | None = None, train_acc: float = 0.99,
           lr: Sequence[float] | None = None,
           signals: Sequence[Mapping[str, float]] | None = None) -> list[EpochMetrics]:
    n = len(val_loss)
    train = train_loss or [v * 0.9 for v in val_loss]
    return [EpochMetrics(epoch=i + 1, train_loss=train[i], train_acc=train_acc,
                         val_loss=val_loss[i], val_acc=(val_acc or [0.98] * n)[i],
                         lr=(lr or [0.01] * n)[i], seconds=1.0,
                         signals=(signals or [{}] * n)[i]) for i in range(n)]


def kinds(history: Sequence[EpochMetrics], context: Context = CONTEXT,
          thresholds: Thresholds = Thresholds()) -> list[str]:
    return [f.kind for f in detect(history, context, thresholds)]


# A clean run: both losses fall and flatten, accuracy climbs smoothly.
CLEAN = curves([0.30, 0.18, 0.13, 0.10, 0.085, 0.078, 0.074, 0.072, 0.071, 0.0705],
               [0.40, 0.20, 0.14, 0.10, 0.080, 0.070, 0.062, 0.058, 0.055, 0.053],
               val_acc=[0.91, 0.945, 0.96, 0.968, 0.972, 0.975, 0.977, 0.978, 0.9785, 0.979],
               signals=[{"dead_relu": 0.05, "grad_norm/net.1": 0.5,
                         "grad_norm/net.4": 0.3}] * 10)


def test_a_clean_run_has_no_finding() -> None:
    assert kinds(CLEAN) == []  # no detector cries wolf on a healthy curve


def test_overfitting_onset_is_the_best_epoch_and_the_gap_is_the_last() -> None:
    history = curves([0.20, 0.10, 0.07, 0.065, 0.07, 0.08, 0.09],
                     [0.25, 0.10, 0.06, 0.040, 0.03, 0.02, 0.01])
    [finding] = detect(history, CONTEXT)
    assert finding.kind == "overfitting" and finding.epoch == 4  # val loss rises after epoch 4
    assert finding.evidence["gap_at_end"] == pytest.approx(0.09 - 0.01)


def test_a_rise_without_falling_train_loss_is_not_overfitting() -> None:
    # Both rise together: that is instability, not memorisation.
    history = curves([0.20, 0.10, 0.07, 0.065, 0.07, 0.08, 0.09],
                     [0.25, 0.10, 0.06, 0.040, 0.05, 0.06, 0.07])
    assert "overfitting" not in kinds(history)


def test_a_network_that_has_not_fit_its_training_data_is_not_overfitting() -> None:
    # The same curves as the overfitting case, at 60% training accuracy: a pruned trial's
    # early epochs, say. Its rising validation loss is no memorisation of its training data.
    history = curves([0.20, 0.10, 0.07, 0.065, 0.07, 0.08, 0.09],
                     [0.25, 0.10, 0.06, 0.040, 0.03, 0.02, 0.01], train_acc=0.60)
    assert "overfitting" not in kinds(history)
    assert "overfitting" in kinds(curves([0.20, 0.10, 0.07, 0.065, 0.07, 0.08, 0.09],
                                         [0.25, 0.10, 0.06, 0.040, 0.03, 0.02, 0.01],
                                         train_acc=0.90))  # at the bar it counts


def test_a_recovered_spike_is_flagged_with_what_coincided() -> None:
    loss = [0.30, 0.15, 0.10, 0.09, 0.35, 0.085, 0.08, 0.078]
    lr = [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05]  # a StepLR step at epoch 5
    history = curves(loss, [v * 0.9 for v in loss], lr=lr)
    [finding] = detect(history, Context(val_size=6000, batch_size=16, norm="batch"))
    assert finding.kind == "spike" and finding.epoch == 5
    assert finding.evidence["recovered_epoch"] == 6  # back under the threshold next epoch
    assert finding.evidence["lr_change"] and finding.evidence["batchnorm_small_batch"]
    assert not finding.evidence["early"]


def test_a_spike_over_two_epochs_is_one_finding() -> None:
    loss = [0.30, 0.15, 0.10, 0.09, 0.30, 0.35, 0.085, 0.08]  # up at epochs 5 and 6, back at 7
    [finding] = detect(curves(loss, [v * 0.9 for v in loss]), CONTEXT)
    assert (finding.kind, finding.epoch) == ("spike", 5)
    assert finding.evidence["recovered_epoch"] == 7


def test_a_spike_that_never_recovers_is_not_transient() -> None:
    loss = [0.30, 0.15, 0.10, 0.09, 0.35, 0.36, 0.40]
    assert "spike" not in kinds(curves(loss))


def test_noise_within_the_threshold_is_not_a_spike() -> None:
    loss = [0.30, 0.15, 0.10, 0.095, 0.102, 0.094, 0.099, 0.093]  # +-5%: ordinary wobble
    assert "spike" not in kinds(curves(loss))


def test_fluctuation_is_judged_against_binomial_noise() -> None:
    # 98% on 6,000 images: one binomial standard error is 0.18 points.
    noise = math.sqrt(0.98 * 0.02 / 6000)
    assert noise == pytest.approx(0.0018, abs=1e-4)
    wobbling = [0.980, 0.975, 0.985, 0.974, 0.986, 0.975, 0.985, 0.976]  # +-0.5 points
    history = curves([0.07] * 8, [0.05] * 8, val_acc=wobbling)
    [finding] = detect(history, CONTEXT)
    assert finding.kind == "fluctuation" and finding.evidence["ratio"] > 2
    # The same wobble on 600 images is within noise (0.57 points): no finding.
    assert kinds(history, Context(val_size=600, batch_size=64)) == []


def test_a_steady_trend_is_not_fluctuation() -> None:
    # A straight climb has no residual around its trend.
    rising = [0.970 + 0.002 * i for i in range(8)]
    history = curves([0.07] * 8, [0.05] * 8, val_acc=rising)
    assert fluctuation_ratio(history, CONTEXT, 5) == pytest.approx(0.0, abs=1e-6)


def test_divergence_names_the_epoch_and_the_learning_rate() -> None:
    history = curves([0.3, 0.2, 0.5, 2.5], [0.3, 0.15, 0.6, 2.4], lr=[0.5, 0.5, 0.5, 0.5])
    [finding] = [f for f in detect(history, CONTEXT) if f.kind == "divergence"]
    assert finding.epoch == 3 and finding.evidence["lr"] == 0.5  # 0.6 > 2 x 0.15
    failed = detect(curves([0.3, 0.2], lr=[1.0, 1.0]),
                    Context(val_size=6000, batch_size=64, diverged=True))
    assert [(f.kind, f.epoch) for f in failed] == [("divergence", 3)]  # the epoch after


def test_underfitting_and_plateau() -> None:
    flat = curves([1.2, 1.1, 1.05, 1.04, 1.04, 1.04, 1.04], [1.3, 1.2, 1.1, 1.1, 1.1, 1.1, 1.1],
                  train_acc=0.6)
    assert kinds(flat) == ["underfitting", "plateau"]
    # A run still learning at a good accuracy is neither.
    assert kinds(CLEAN) == []


def test_dying_relu_uses_autotrainer_s_threshold() -> None:
    dead = [{"dead_relu": share} for share in (0.1, 0.4, 0.75, 0.9)]
    history = curves([0.3, 0.2, 0.15, 0.12], signals=dead)
    [finding] = detect(history, CONTEXT)
    assert finding.kind == "dying_relu" and finding.epoch == 3  # first at or over 70%
    assert kinds(history, thresholds=Thresholds(dying_relu=0.95)) == []  # configurable


def test_vanishing_and_exploding_gradients() -> None:
    vanish = [{"grad_norm/net.1": 1e-6, "grad_norm/net.4": 0.1}]  # ratio 1e-5, first < 1e-4
    explode = [{"grad_norm/net.1": 80.0, "grad_norm/net.4": 1.0}]  # ratio 80 > 70
    assert kinds(curves([0.3, 0.2, 0.15], signals=vanish * 3)) == ["vanishing_gradient"]
    assert kinds(curves([0.3, 0.2, 0.15], signals=explode * 3)) == ["exploding_gradient"]
    healthy = [{"grad_norm/net.1": 1e-3, "grad_norm/net.4": 0.1}]  # ratio 1e-2: fine
    assert kinds(curves([0.3, 0.2, 0.15], signals=healthy * 3)) == []


def test_thresholds_come_from_a_table_and_refuse_nonsense() -> None:
    assert Thresholds.from_mapping({"spike_mads": 3}, source="x.toml").spike_mads == 3
    with pytest.raises(ConfigError, match="unknown \\[diagnosis\\] keys \\['spike'\\]"):
        Thresholds.from_mapping({"spike": 3}, source="x.toml")
    with pytest.raises(ConfigError, match="spike_window must be a whole number"):
        Thresholds(spike_window=2.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dying_relu must be a number >= 0"):
        Thresholds(dying_relu=-1)
