"""The one-sentence answers that end the report's three questions, from plain numbers.

Each verdict states the answer, its evidence and how sure it can be, and says "too few trials
to tell" where that is the truth. Pure functions: the report gathers the numbers, these read
them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

MIN_GROUP = 3  # trials a group needs before its best few say anything
TOP = 3  # a group's best trials: the spread among them is what one more trial could move
FEW = 5  # under this many trials a side, a difference is a hint, not a finding
MIN_CORRELATION_TRIALS = 8
Z_95 = 1.959964  # the normal quantile of a two-sided 95% interval


def _counts(groups: Mapping[str, Sequence[float]]) -> str:
    """'cosine 13, step 4': each group's size, the largest first."""
    return ", ".join(f"{name} {len(values)}" for name, values in
                     sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def top_spread(values: Sequence[float]) -> float:
    """How far apart a group's TOP best values lie (the group has TOP values at least)."""
    best = sorted(values)[:TOP]
    return best[-1] - best[0]


def scheduler_verdict(losses: Mapping[str, Sequence[float]]) -> str:
    """Did the scheduler matter? LOSSES: scheduler -> its complete trials' val losses.

    Yes when the two best schedulers' best trials lie further apart than the spread among
    either one's TOP best trials (what another trial of the same scheduler could move)."""
    counts = f"complete trials per scheduler: {_counts(losses) or 'none'}"
    sized = {name: values for name, values in losses.items() if len(values) >= MIN_GROUP}
    if len(sized) < 2:
        return (f"Too few trials to tell: two schedulers need {MIN_GROUP} complete trials "
                f"each ({counts}).")
    (best, first), (runner_up, second) = sorted(
        ((min(values), name) for name, values in sized.items()))[:2]
    gap = runner_up - best
    spread = max(top_spread(sized[first]), top_spread(sized[second]))
    few = min(len(sized[first]), len(sized[second])) < FEW
    if gap > spread:
        return (f"Yes: {first}'s best trial ({best:.4f}) beats {second}'s ({runner_up:.4f}) "
                f"by {gap:.4f}, more than the spread among either one's {TOP} best trials "
                f"({spread:.4f}); {counts}"
                + ("; with this few trials, a hint rather than a finding." if few else "."))
    return (f"No: the best schedulers, {first} and {second}, lie {gap:.4f} apart, within the "
            f"spread among either one's {TOP} best trials ({spread:.4f}); {counts}.")


def batch_size_verdict(ratios: Mapping[int, Sequence[float]], *, threshold: float) -> str:
    """Does batch size change the noise? RATIOS: batch size -> its trials' fluctuation ratios
    (the validation accuracy's wobble in binomial standard errors); THRESHOLD: beyond noise."""
    counts = "trials per batch size: " + (", ".join(
        f"{size} {len(values)}" for size, values in sorted(ratios.items())) or "none")
    sized = {size: statistics.median(values) for size, values in sorted(ratios.items())
             if len(values) >= MIN_GROUP}
    if len(sized) < 2:
        return (f"Too few trials to tell: two batch sizes need {MIN_GROUP} trials each "
                f"({counts}).")
    noisy = [size for size, median in sized.items() if median > threshold]
    quiet = [size for size in sized if size not in noisy]
    span = f"{min(sized.values()):.1f}-{max(sized.values()):.1f}"
    if not noisy:
        return (f"No: at every batch size with {MIN_GROUP} trials or more, the median wobble "
                f"({span} standard errors) is within the noise the validation set's size "
                f"explains (under {threshold:g}); {counts}.")
    if not quiet:
        return (f"No: the median wobble is beyond noise at every batch size ({span} standard "
                f"errors, over {threshold:g}), so batch size does not explain it; {counts}.")
    return (f"Yes: the median wobble is beyond noise at batch "
            f"{', '.join(map(str, noisy))} and within it at {', '.join(map(str, quiet))} "
            f"({span} standard errors, noise under {threshold:g}); {counts}.")


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation of XS and YS (ties share their mean rank); None when
    either side does not vary."""
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    return statistics.correlation(_ranks(xs), _ranks(ys))


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def regularisation_verdict(gaps: Sequence[float], by: Mapping[str, Sequence[float]]) -> str:
    """Do dropout and weight decay relate to the overfitting gap? GAPS: the complete trials'
    final gaps; BY: parameter -> each trial's value. A rank correlation beyond what chance
    alone reaches 95% of the time (about 1.96 / sqrt(n - 1)) counts."""
    n = len(gaps)
    if n < MIN_CORRELATION_TRIALS:
        return (f"Too few trials to tell: a correlation needs {MIN_CORRELATION_TRIALS} "
                f"complete trials, this study has {n}.")
    chance = Z_95 / math.sqrt(n - 1)
    parts = []
    for name, values in by.items():
        rho = spearman(values, gaps)
        if rho is None:
            parts.append(f"{name} was not varied")
        elif abs(rho) > chance:
            trend = "shrinks" if rho < 0 else "grows"
            parts.append(f"the gap {trend} as {name} grows (Spearman rho {rho:+.2f})")
        else:
            parts.append(f"{name}: no relation beyond chance (rho {rho:+.2f})")
    related = any(" as " in part for part in parts)
    return (f"{'Yes' if related else 'No'}: {'; '.join(parts)}; n = {n} complete trials, "
            f"chance alone reaches rho ±{chance:.2f}.")
