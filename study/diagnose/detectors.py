"""What went wrong in a trial, each finding with the evidence a person can check on its curves.

Pure functions of a fold's per-epoch metrics (study.train.training.EpochMetrics, signals included):
overfitting onset, transient validation spikes, fluctuation beyond what the validation set's
size explains, divergence, underfitting and plateaus, dying ReLUs, vanishing and exploding
gradients. The thresholds are `Thresholds`, set from the config's [diagnosis] table; README's
"Diagnosis" section explains each. The gradient and dead-unit thresholds are AutoTrainer's
(Zhang et al., "AUTOTRAINER: An Automatic DNN Training Problem Detection and Repair System",
ICSE 2021: beta_1 = 1e-3, beta_2 = 1e-4, beta_3 = 70, gamma = 0.7).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from study.errors import ConfigError

if TYPE_CHECKING:  # the config imports the thresholds: no torch for `--help`
    from study.train.engine_types import EpochMetrics

MAD_TO_SD = 1.4826  # a normal sample's median absolute deviation times this is its sd


@dataclass(frozen=True)
class Thresholds:
    """When a detector speaks up. Defaults documented in README's Diagnosis section."""

    # overfitting: validation loss above its best by this share (and at least the floor in nats)
    # at the last epoch, while the training loss fell since the best epoch (and the training
    # accuracy is UNDERFIT_TRAIN_ACC or more: the network fits its training data)
    overfit_rise: float = 0.02
    overfit_min_rise: float = 0.002
    # spike: a validation loss above the median of the SPIKE_WINDOW epochs before it by
    # SPIKE_MADS robust standard deviations and by SPIKE_MIN_RISE of that median, which a
    # later epoch brings back under median * (1 + SPIKE_MIN_RISE)
    spike_window: int = 3
    spike_mads: float = 5.0
    spike_min_rise: float = 0.10
    early_epochs: int = 2  # a spike in these first epochs is "early"
    lr_change: float = 0.2  # a relative change of the epoch's rate that counts as a step
    small_batch: int = 32  # BatchNorm at or under this batch size is "with a small batch"
    # fluctuation: over the last FLUCTUATION_WINDOW epochs, the sd of validation accuracy
    # around its linear trend above FLUCTUATION_RATIO binomial standard errors
    fluctuation_window: int = 5
    fluctuation_ratio: float = 2.0
    # divergence: a non-finite loss, a loss of EXPLODED_LOSS or more, or a training loss over
    # DIVERGE_FACTOR times its low (and DIVERGE_MIN_RISE above it)
    diverge_factor: float = 2.0
    diverge_min_rise: float = 0.1
    exploded_loss: float = 1e5  # AutoTrainer's loss limit
    # underfitting: training accuracy under this at the end (after MIN_EPOCHS epochs)
    underfit_train_acc: float = 0.90
    # plateau: the training loss improved less than PLATEAU_MIN_GAIN (relative) over the
    # last PLATEAU_WINDOW epochs while training accuracy is still under PLATEAU_TRAIN_ACC
    plateau_window: int = 4
    plateau_min_gain: float = 0.01
    plateau_train_acc: float = 0.98
    min_epochs: int = 3  # underfitting and plateaus are judged only after this many epochs
    dying_relu: float = 0.7  # AutoTrainer's gamma: share of dead units
    vanish_ratio: float = 1e-3  # AutoTrainer's beta_1: first / last layer gradient norm
    vanish_first: float = 1e-4  # AutoTrainer's beta_2: and the first layer's norm under this
    explode_ratio: float = 70.0  # AutoTrainer's beta_3: first / last layer gradient norm

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = (int,) if f.type == "int" else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind) \
                    or not math.isfinite(value) or value < 0:
                what = "a whole number" if f.type == "int" else "a number"
                raise ConfigError(f"[diagnosis] {f.name} must be {what} >= 0, but got "
                                  f"{f.name}={value!r}")
        for name in ("spike_window", "fluctuation_window", "plateau_window"):
            if getattr(self, name) < 2:
                raise ConfigError(f"[diagnosis] {name} must be >= 2 epochs, but got "
                                  f"{name}={getattr(self, name)!r}")

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], *, source: str) -> Thresholds:
        known = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown [diagnosis] keys {unknown}; known: "
                              f"{sorted(known)}")
        return cls(**table)

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Context:
    """What the curves alone do not say."""

    val_size: int  # validation images behind val_acc: its binomial noise
    batch_size: int
    norm: str = "none"
    diverged: bool = False  # the trial failed on a non-finite loss in the epoch after the last
    lr: float = math.nan  # the trial's learning rate: a divergence before any epoch names it


@dataclass(frozen=True)
class Finding:
    kind: str
    epoch: int  # where it is marked on the curve
    summary: str  # one line, evidence included
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


Detector = Callable[[Sequence["EpochMetrics"], Context, Thresholds], list[Finding]]


def detect(history: Sequence[EpochMetrics], context: Context,
           thresholds: Thresholds = Thresholds()) -> list[Finding]:
    """Every finding of every detector on one fold's epochs, in DETECTORS' order."""
    return [finding for detector in DETECTORS.values()
            for finding in detector(history, context, thresholds)]


def findings_detail(per_fold: Sequence[Sequence[Finding]]) -> list[dict[str, Any]]:
    """Every finding of a trial with its evidence and fold (1-based): the trial's MLflow run
    keeps it as findings.json, and the report reads it from there."""
    return [{**f.as_dict(), "fold": k + 1} for k, findings in enumerate(per_fold)
            for f in findings]


@dataclass(frozen=True)
class FindingsSummary:
    """A trial's findings in short: what its user attrs (mirrored as MLflow tags) keep, to
    filter on in both UIs, a row of the dashboard's trial table one line high. The findings'
    lines and evidence go to the trial's MLflow run (findings_detail)."""

    kinds: str  # comma-separated, in KINDS order; "none" when clean
    # Of the last fold, for the report's batch-size and regularisation questions; None where
    # it trained too few epochs to say.
    fluctuation_ratio: float | None
    final_gap: float | None


def summarise_findings(per_fold: Sequence[Sequence[Finding]],
                       histories: Sequence[Sequence[EpochMetrics]], *,
                       val_sizes: Sequence[int], thresholds: Thresholds) -> FindingsSummary:
    found = {f.kind for findings in per_fold for f in findings}
    kinds = ", ".join(kind for kind in KINDS if kind in found) or "none"
    if not histories or not histories[-1]:
        return FindingsSummary(kinds, None, None)
    last = histories[-1]
    context = Context(val_size=val_sizes[len(histories) - 1], batch_size=0)
    return FindingsSummary(kinds, fluctuation_ratio(last, context, thresholds.fluctuation_window),
                           last[-1].gap)


def fluctuation_ratio(history: Sequence[EpochMetrics], context: Context,
                      window: int) -> float | None:
    """The sd of the last WINDOW validation accuracies around their linear trend, in binomial
    standard errors sqrt(p (1 - p) / n); None with fewer epochs (or a perfect score)."""
    if len(history) < max(window, 3):
        return None
    accs = [m.val_acc for m in history[-window:]]
    p = statistics.fmean(accs)
    noise = math.sqrt(p * (1 - p) / context.val_size)
    if noise == 0:
        return None
    slope, intercept = statistics.linear_regression(range(window), accs)
    residuals = [a - (intercept + slope * i) for i, a in enumerate(accs)]
    sd = math.sqrt(sum(r * r for r in residuals) / (window - 2))  # two fitted parameters
    return sd / noise


def overfitting(history: Sequence[EpochMetrics], context: Context,
                t: Thresholds) -> list[Finding]:
    if len(history) < 2:
        return []
    best = min(history, key=lambda m: m.val_loss)
    last = history[-1]
    if last.train_acc < t.underfit_train_acc:
        return []  # a network that has not fit its training data is not overfitting it
    rise = max(best.val_loss * t.overfit_rise, t.overfit_min_rise)
    if not (last.epoch > best.epoch and last.val_loss > best.val_loss + rise
            and last.train_loss < best.train_loss):
        return []
    return [Finding("overfitting", best.epoch, (
        f"overfitting after epoch {best.epoch}: val loss {best.val_loss:.4g} -> "
        f"{last.val_loss:.4g} by epoch {last.epoch} while train loss fell "
        f"{best.train_loss:.4g} -> {last.train_loss:.4g}; gap at the end {last.gap:.4g}"),
        {"onset_epoch": best.epoch, "best_val_loss": best.val_loss,
         "last_val_loss": last.val_loss, "train_loss_at_onset": best.train_loss,
         "last_train_loss": last.train_loss, "gap_at_end": last.gap,
         "rise_needed": rise})]


def spikes(history: Sequence[EpochMetrics], context: Context, t: Thresholds) -> list[Finding]:
    found = []
    losses = [m.val_loss for m in history]
    after_spike = 0  # epochs up to here belong to the last spike found (one event, one finding)
    for i in range(2, len(history) - 1):  # two epochs before it at least, and one after
        if i < after_spike:
            continue
        before = losses[max(0, i - t.spike_window):i]
        median = statistics.median(before)
        spread = MAD_TO_SD * statistics.median(abs(v - median) for v in before)
        threshold = median + max(t.spike_mads * spread, t.spike_min_rise * median)
        if losses[i] <= threshold:
            continue
        back = next((j for j in range(i + 1, len(losses))
                     if losses[j] <= median * (1 + t.spike_min_rise)), None)
        if back is None:
            continue  # no recovery: not transient (overfitting or divergence say the rest)
        after_spike = back
        m = history[i]
        coincided = _spike_coincidences(history, i, context, t)  # phrase -> did it
        causes = [phrase for phrase, happened in coincided.items() if happened]
        lr_change, early, small_batch_norm = coincided.values()
        found.append(Finding("spike", m.epoch, (
            f"val loss spike at epoch {m.epoch}: {m.val_loss:.4g} against a median of "
            f"{median:.4g} over the {len(before)} epochs before (threshold {threshold:.4g}), "
            f"back by epoch {history[back].epoch}; "
            f"{', '.join(causes) if causes else 'no lr change, not early, no BatchNorm'}"),
            {"spike_epoch": m.epoch, "val_loss": m.val_loss, "median_before": median,
             "threshold": threshold, "recovered_epoch": history[back].epoch,
             "lr_change": lr_change, "early": early, "batchnorm_small_batch": small_batch_norm}))
    return found


def _spike_coincidences(history: Sequence[EpochMetrics], i: int, context: Context,
                        t: Thresholds) -> dict[str, bool]:
    """What the spike at epoch index I coincided with: an lr change, the first epochs,
    BatchNorm at a small batch (in that order), each as the phrase that says it."""
    lr, previous = history[i].lr, history[i - 1].lr
    return {
        f"with an lr change {previous:.3g} -> {lr:.3g}":
            previous > 0 and abs(lr - previous) / previous > t.lr_change,
        f"in the first {t.early_epochs} epochs": history[i].epoch <= t.early_epochs,
        f"BatchNorm with batch {context.batch_size}":
            context.norm == "batch" and context.batch_size <= t.small_batch,
    }


def fluctuation(history: Sequence[EpochMetrics], context: Context,
                t: Thresholds) -> list[Finding]:
    ratio = fluctuation_ratio(history, context, t.fluctuation_window)
    if ratio is None or ratio <= t.fluctuation_ratio:
        return []
    window = history[-t.fluctuation_window:]
    p = statistics.fmean(m.val_acc for m in window)
    noise = math.sqrt(p * (1 - p) / context.val_size)
    return [Finding("fluctuation", window[0].epoch, (
        f"val accuracy wobbles beyond noise over epochs {window[0].epoch}-{window[-1].epoch}: "
        f"sd {ratio * noise * 100:.2f} points around its trend against {noise * 100:.2f} "
        f"points of binomial noise at {p:.2%} on {context.val_size} images ({ratio:.1f}x)"),
        {"first_epoch": window[0].epoch, "last_epoch": window[-1].epoch, "ratio": ratio,
         "sd_points": ratio * noise * 100, "noise_points": noise * 100, "val_size":
         context.val_size})]


def divergence(history: Sequence[EpochMetrics], context: Context,
               t: Thresholds) -> list[Finding]:
    if context.diverged:
        epoch = len(history) + 1
        lr, which = ((history[-1].lr, "the last epoch's rate") if history
                     else (context.lr, "the trial's rate"))
        return [Finding("divergence", epoch, (
            f"diverged: non-finite loss in epoch {epoch}, at lr {lr:.3g} ({which})"),
            {"epoch": epoch, "lr": lr, "non_finite": True})]
    exploded = next((m for m in history if max(m.train_loss, m.val_loss) >= t.exploded_loss),
                    None)
    if exploded is not None:
        return [_diverging(exploded, low=min(m.train_loss for m in history))]
    if not history:
        return []
    # Rising to the end, not a transient jump (the spike detector's): the last epoch is over
    # the limit, and the finding marks the first epoch after the low that crossed it.
    low_at = min(range(len(history)), key=lambda i: history[i].train_loss)
    low = history[low_at].train_loss
    limit = max(t.diverge_factor * low, low + t.diverge_min_rise)
    if history[-1].train_loss <= limit:
        return []
    onset = next(m for m in history[low_at:] if m.train_loss > limit)
    return [_diverging(onset, low=low)]


def _diverging(m: EpochMetrics, *, low: float) -> Finding:
    return Finding("divergence", m.epoch, (
        f"diverging: train loss {m.train_loss:.4g} in epoch {m.epoch} against a low of "
        f"{low:.4g}, at lr {m.lr:.3g}"),
        {"epoch": m.epoch, "lr": m.lr, "train_loss": m.train_loss, "low": low,
         "non_finite": False})


def underfitting(history: Sequence[EpochMetrics], context: Context,
                 t: Thresholds) -> list[Finding]:
    if len(history) < t.min_epochs:
        return []
    last = history[-1]
    found = []
    if last.train_acc < t.underfit_train_acc:
        found.append(Finding("underfitting", last.epoch, (
            f"underfitting: train accuracy {last.train_acc:.1%} after {last.epoch} epochs "
            f"(under {t.underfit_train_acc:.0%})"),
            {"train_acc": last.train_acc, "epochs": last.epoch}))
    if len(history) > t.plateau_window and last.train_acc < t.plateau_train_acc:
        earlier = history[-t.plateau_window - 1]
        gain = (earlier.train_loss - last.train_loss) / earlier.train_loss
        if gain < t.plateau_min_gain:
            found.append(Finding("plateau", earlier.epoch, (
                f"plateau: train loss {earlier.train_loss:.4g} -> {last.train_loss:.4g} over "
                f"epochs {earlier.epoch}-{last.epoch} ({gain:.1%} better) at train accuracy "
                f"{last.train_acc:.1%}"),
                {"from_epoch": earlier.epoch, "gain": gain, "train_acc": last.train_acc}))
    return found


def dying_relu(history: Sequence[EpochMetrics], context: Context,
               t: Thresholds) -> list[Finding]:
    first = next((m for m in history if m.signals.get("dead_relu", 0.0) >= t.dying_relu), None)
    if first is None:
        return []
    last = history[-1].signals.get("dead_relu", 0.0)
    return [Finding("dying_relu", first.epoch, (
        f"dying ReLUs: {first.signals['dead_relu']:.0%} of units silent on the validation "
        f"slice from epoch {first.epoch} ({last:.0%} at the end; threshold "
        f"{t.dying_relu:.0%})"), {"epoch": first.epoch, "dead_share": first.signals["dead_relu"],
                                  "dead_share_at_end": last})]


def gradients(history: Sequence[EpochMetrics], context: Context,
              t: Thresholds) -> list[Finding]:
    found: dict[str, Finding] = {}
    for m in history:
        layers = [(k.removeprefix("grad_norm/"), v) for k, v in m.signals.items()
                  if k.startswith("grad_norm/")]
        if len(layers) < 2:
            continue
        (first_name, first), (last_name, last) = layers[0], layers[-1]
        ratio = first / last if last > 0 else math.inf
        evidence = {"epoch": m.epoch, "first_layer": first_name, "first_norm": first,
                    "last_layer": last_name, "last_norm": last, "ratio": ratio}
        if ratio < t.vanish_ratio and first < t.vanish_first and "vanish" not in found:
            found["vanish"] = Finding("vanishing_gradient", m.epoch, (
                f"vanishing gradient in epoch {m.epoch}: {first_name} {first:.2g} against "
                f"{last_name} {last:.2g} (ratio {ratio:.2g} < {t.vanish_ratio:g})"), evidence)
        if ratio > t.explode_ratio and "explode" not in found:
            found["explode"] = Finding("exploding_gradient", m.epoch, (
                f"exploding gradient in epoch {m.epoch}: {first_name} {first:.2g} against "
                f"{last_name} {last:.2g} (ratio {ratio:.3g} > {t.explode_ratio:g})"), evidence)
    return list(found.values())


# kind -> detector; the order findings are listed in.
DETECTORS: dict[str, Detector] = {
    "divergence": divergence, "overfitting": overfitting, "spike": spikes,
    "fluctuation": fluctuation, "underfitting": underfitting, "dying_relu": dying_relu,
    "gradients": gradients,
}
# Every kind a finding may have (underfitting's detector also finds plateaus, gradients'
# both kinds): the report's table lists them all, zeros included.
KINDS = ("divergence", "overfitting", "spike", "fluctuation", "underfitting", "plateau",
         "dying_relu", "vanishing_gradient", "exploding_gradient")
