"""The leakage audit of a split: class balance, index disjointness and duplicate images.

Pure functions on numpy arrays and a report that renders itself as JSON and markdown. The
parts of a split are named index arrays into the training file ("train"/"val", or
"fold1".."foldK"); the test file is always the part "test". Duplicates are found by
data_pipeline.duplicates over the training and test files together.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from data_pipeline.duplicates import CLOSEST, DEAD_ZONE, Duplicates, Pairs
from data_pipeline.errors import DataError

TEST_PART = "test"
N_CLASSES = 10
TEST_ACCESS = (
    "The search only receives train/validation tensors (SearchData holds no test "
    "tensors). The test files are read before the search by the data fingerprint and this "
    "audit (content hashes and duplicate checks only), and once after the search by the final "
    "evaluation of the best trial."
)
_LISTED_PAIRS = 20  # per (parts, kind) in the markdown; the JSON lists every pair


@dataclass(frozen=True)
class PartStats:
    name: str
    size: int
    class_counts: tuple[int, ...]
    class_proportions: tuple[float, ...]
    max_deviation: float  # largest |class proportion - the full training set's|


@dataclass(frozen=True)
class DuplicatePair:
    kind: str  # "exact" or "near"; "candidate" (a closer look, not a duplicate) in `closest`
    part_a: str  # parts in split order (train, val, ..., test): part_a never after part_b
    index_a: int  # index into part_a's file (the training file, or the test file for "test")
    part_b: str
    index_b: int
    distance: float  # aligned distance of the normalised images; 0.0 for exact duplicates
    shift: tuple[int, int] = (0, 0)  # (rows, columns) moving image b onto image a

    @property
    def cross_split(self) -> bool:
        return self.part_a != self.part_b


@dataclass(frozen=True)
class AuditReport:
    split: dict[str, Any]  # scheme, seed, fractions/folds, data and split fingerprints
    reference: PartStats  # the whole training file, before any image was dropped
    parts: tuple[PartStats, ...]  # the split's parts, then the test set
    max_class_deviation: float  # over the split's parts (not test): stratification at work
    index_overlaps: dict[str, int]  # "train&val" -> indices in both (0: disjoint)
    near_threshold: float
    hash_candidates: int  # candidate pairs the near-duplicate search verified on the pixels
    duplicates: tuple[DuplicatePair, ...]
    # The closest pairs, to judge by eye (`audit --output` draws them in this order): the
    # flagged ones, cross-split first, or when none is flagged the closest candidates.
    closest: tuple[DuplicatePair, ...]
    normalisation: tuple[dict[str, Any], ...]  # mean, std and the images they come from
    dropped: tuple[int, ...]  # training-file indices removed by --drop-duplicates
    test_access: str = TEST_ACCESS

    def cross_split(self) -> list[DuplicatePair]:
        return [p for p in self.duplicates if p.cross_split]

    def pair_counts(self) -> dict[str, dict[str, int]]:
        """'train/val' -> {'exact': n, 'near': m} for every pair of parts (and part with itself)."""
        names = [p.name for p in self.parts]
        counts = {f"{a}/{b}": {"exact": 0, "near": 0}
                  for i, a in enumerate(names) for b in names[i:]}
        for pair in self.duplicates:
            counts[f"{pair.part_a}/{pair.part_b}"][pair.kind] += 1
        return counts

    def summary(self) -> dict[str, Any]:
        """A compact, JSON-able digest for the Optuna study's user attrs."""
        cross = self.cross_split()
        return {
            "split_fingerprint": self.split["split_fingerprint"],
            "sizes": {p.name: p.size for p in self.parts},
            "max_class_deviation": round(self.max_class_deviation, 6),
            "index_overlaps": self.index_overlaps,
            "near_threshold": self.near_threshold,
            "duplicate_pairs": {k: v for k, v in self.pair_counts().items() if any(v.values())},
            "cross_split_exact": sum(p.kind == "exact" for p in cross),
            "cross_split_near": sum(p.kind == "near" for p in cross),
            "dropped_from_train": len(self.dropped),
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["pair_counts"] = self.pair_counts()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_markdown(self) -> str:
        return "\n".join(["# Leakage audit", "", *_md_split(self), *_md_balance(self),
                          *_md_duplicates(self), *_md_normalisation(self)]) + "\n"


def class_stats(name: str, labels: np.ndarray, reference: np.ndarray | None) -> PartStats:
    """Counts and proportions of each class; deviation from REFERENCE proportions (if any)."""
    counts = np.bincount(labels, minlength=N_CLASSES)
    proportions = counts / max(len(labels), 1)
    deviation = 0.0 if reference is None else float(np.abs(proportions - reference).max())
    return PartStats(name=name, size=int(len(labels)),
                     class_counts=tuple(int(c) for c in counts),
                     class_proportions=tuple(round(float(p), 6) for p in proportions),
                     max_deviation=round(deviation, 6))


def build_report(
    *, train_labels: np.ndarray, test_labels: np.ndarray, parts: Mapping[str, np.ndarray],
    duplicates: Duplicates, near_threshold: float, split: Mapping[str, Any],
    normalisation: Sequence[Mapping[str, Any]], dropped: Sequence[int] = (),
) -> AuditReport:
    """The audit of PARTS (index arrays into the training file) against the test file.

    DUPLICATES index the training and test images concatenated (test after train); pairs
    with an image in no part (dropped) are left out.
    """
    if TEST_PART in parts:
        raise ValueError(f"{TEST_PART!r} names the test file; it cannot be a part of the split")
    full = np.bincount(train_labels, minlength=N_CLASSES) / len(train_labels)
    stats = [class_stats(name, train_labels[idx], full) for name, idx in parts.items()]
    test_stats = class_stats(TEST_PART, test_labels, full)
    locate = _Locator(parts, n_train=len(train_labels), n_test=len(test_labels))
    kinds = np.where(duplicates.exact, "exact", "near")
    found = locate(duplicates.a, duplicates.b, duplicates.distance, duplicates.shift, kinds)
    return AuditReport(
        split=dict(split), reference=class_stats("training set", train_labels, None),
        parts=(*stats, test_stats),
        max_class_deviation=max(s.max_deviation for s in stats),
        index_overlaps=index_overlaps(parts), near_threshold=near_threshold,
        hash_candidates=duplicates.candidates, duplicates=found,
        closest=_closest(found, duplicates.closest, locate),
        normalisation=tuple(dict(n) for n in normalisation),
        dropped=tuple(int(i) for i in dropped),
    )


def index_overlaps(parts: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Indices shared by each two parts: all zero when the split is a partition."""
    names = list(parts)
    return {f"{a}&{b}": int(np.intersect1d(parts[a], parts[b]).size)
            for i, a in enumerate(names) for b in names[i + 1:]}


class _Locator:
    """Pairs of indices into train+test turned into DuplicatePairs of named parts."""

    def __init__(self, parts: Mapping[str, np.ndarray], *, n_train: int, n_test: int) -> None:
        self.names = [*parts, TEST_PART]
        self.part_of = np.full(n_train + n_test, -1, dtype=np.int64)  # -1: dropped, in no part
        for number, idx in enumerate(parts.values()):
            self.part_of[idx] = number
        self.part_of[n_train:] = len(self.names) - 1
        self.file_index = np.concatenate([np.arange(n_train), np.arange(n_test)])

    def __call__(self, a: np.ndarray, b: np.ndarray, distance: np.ndarray, shift: np.ndarray,
                 kinds: np.ndarray) -> tuple[DuplicatePair, ...]:
        """The pairs in split order (train/val, never val/train), those with a dropped image
        left out, sorted by parts, kind and indices."""
        pairs = []
        for i, j, d, (dy, dx), kind in zip(a.tolist(), b.tolist(), distance.tolist(),
                                           shift.tolist(), kinds.tolist(), strict=True):
            if self.part_of[i] < 0 or self.part_of[j] < 0:
                continue
            if self.part_of[i] > self.part_of[j]:
                i, j, dy, dx = j, i, -dy, -dx  # moving a onto b is the opposite shift
            pairs.append(DuplicatePair(
                kind=kind, part_a=self.names[self.part_of[i]],
                index_a=int(self.file_index[i]), part_b=self.names[self.part_of[j]],
                index_b=int(self.file_index[j]), distance=round(float(d), 6),
                shift=(int(dy), int(dx))))
        order = {name: i for i, name in enumerate(self.names)}
        pairs.sort(key=lambda p: (order[p.part_a], order[p.part_b], p.kind, p.index_a,
                                  p.index_b))
        return tuple(pairs)


def _closest(found: Sequence[DuplicatePair], candidates: Pairs, locate: _Locator
             ) -> tuple[DuplicatePair, ...]:
    if found:  # the flagged pairs; those that refuse a run first
        return tuple(sorted(found, key=lambda p: (not p.cross_split, p.distance))[:CLOSEST])
    located = locate(candidates.a, candidates.b, candidates.distance, candidates.shift,
                     np.full(len(candidates.a), "candidate"))
    return tuple(sorted(located, key=lambda p: p.distance))


def plan_drop(report: AuditReport, droppable: Collection[str]) -> np.ndarray:
    """Training-file indices whose removal leaves no cross-split pair.

    Each cross-split pair loses its member in a DROPPABLE part (the later part's when both
    are, as for two folds). A pair with no such member (validation and test) cannot be fixed
    by dropping training images: DataError.
    """
    drop: set[int] = set()
    stuck: list[DuplicatePair] = []
    for pair in report.cross_split():
        members = [(part, index) for part, index in ((pair.part_b, pair.index_b),
                                                     (pair.part_a, pair.index_a))
                   if part != TEST_PART]
        if any(index in drop for _, index in members):
            continue  # an earlier pair already removed one of these two images
        target = next((index for part, index in members if part in droppable), None)
        if target is None:
            stuck.append(pair)
        else:
            drop.add(target)
    if stuck:
        first = stuck[0]
        raise DataError(
            f"{len(stuck)} duplicate pairs lie between {first.part_a} and {first.part_b} "
            f"(e.g. {first.part_a}[{first.index_a}] ~ {first.part_b}[{first.index_b}]), which "
            f"dropping training images cannot fix; remove them from the data files")
    return np.array(sorted(drop), dtype=np.int64)


def refusal(report: AuditReport) -> str:
    """The one-line reason `run` refuses a split with cross-split duplicates."""
    cross = report.cross_split()
    by_parts = {k: v for k, v in report.pair_counts().items()
                if k.split("/")[0] != k.split("/")[1] and any(v.values())}
    where = ", ".join(f"{k}: {v['exact']} exact + {v['near']} near" for k, v in by_parts.items())
    first = cross[0]
    return (f"{len(cross)} duplicate image pairs cross the split ({where}; e.g. "
            f"{first.part_a}[{first.index_a}] ~ {first.part_b}[{first.index_b}]) and would "
            f"inflate validation or test scores; list them with `mnist-study audit`, then pass "
            f"--drop-duplicates to drop them from the training part, or fix the data")


def _md_split(r: AuditReport) -> list[str]:
    settings = ", ".join(f"{k} {v}" for k, v in r.split.items() if not k.endswith("fingerprint"))
    overlaps = ", ".join(f"{k}: {v}" for k, v in r.index_overlaps.items())
    verdict = "disjoint" if not any(r.index_overlaps.values()) else "**NOT disjoint**"
    lines = [f"Split: {settings}.", f"Data fingerprint `{r.split['data_fingerprint']}`, split "
             f"fingerprint `{r.split['split_fingerprint']}`.", "",
             f"Shared indices between parts ({overlaps}): {verdict}.", "", r.test_access, ""]
    if r.dropped:
        lines += [f"Dropped from training by --drop-duplicates: {len(r.dropped)} images "
                  f"({_listed([str(i) for i in r.dropped])}).", ""]
    return lines


def _listed(items: Sequence[str]) -> str:
    more = len(items) - _LISTED_PAIRS
    return ", ".join(items[:_LISTED_PAIRS]) + (f", and {more} more" if more > 0 else "")


def _md_balance(r: AuditReport) -> list[str]:
    head = "| part | images | " + " | ".join(str(c) for c in range(N_CLASSES)) + " | max dev. |"
    lines = ["## Classes", "", "Count (share) of each class; max dev. is the largest difference "
             "of a class share from the full training set's.", "", head,
             "|" + " --- |" * (N_CLASSES + 3)]
    for part in (r.reference, *r.parts):
        cells = " | ".join(f"{c} ({p:.2%})" for c, p in zip(part.class_counts,
                                                          part.class_proportions, strict=True))
        lines.append(f"| {part.name} | {part.size} | {cells} | {part.max_deviation:.4%} |")
    return [*lines, "", f"Largest deviation over the split's parts: {r.max_class_deviation:.4%}.",
            ""]


def _md_duplicates(r: AuditReport) -> list[str]:
    cross = r.cross_split()
    lines = ["## Duplicate images", "",
             "Exact: identical pixel bytes (BLAKE2b-128 content hash). Near: distance "
             f"<= {r.near_threshold} between the intensity-normalised images (background 0, ink "
             "255) at the best of the 9 shifts by up to one pixel, the distance being the share "
             f"of the pair's ink that differs by more than {DEAD_ZONE:.0%} of the ink level "
             f"({r.hash_candidates:,} candidate pairs verified).", "",
             "| parts | exact | near |", "| --- | --- | --- |"]
    lines += [f"| {k} | {v['exact']} | {v['near']} |" for k, v in r.pair_counts().items()]
    lines += ["", f"**{len(cross)} pairs cross the split**: `run` refuses unless "
              "--drop-duplicates." if cross else "No duplicate pair crosses the split.", ""]
    groups: dict[tuple[str, str, str], list[DuplicatePair]] = {}
    for pair in sorted(r.duplicates, key=lambda p: not p.cross_split):
        groups.setdefault((pair.part_a, pair.part_b, pair.kind), []).append(pair)
    for (a, b, kind), pairs in groups.items():
        shown = [f"{a}[{p.index_a}]~{b}[{p.index_b}]"
                 + (f" ({p.distance:.4f})" if kind == "near" else "") for p in pairs]
        lines += [f"- {kind} {a}/{b}: {_listed(shown)}"]
    if groups:
        lines.append("")
    return [*lines, *_md_closest(r)]


def _md_closest(r: AuditReport) -> list[str]:
    if not r.closest:
        return []
    which = ("The flagged pairs, those across the split first, closest first" if r.duplicates
             else "No pair is flagged: the closest candidate pairs, closest first")
    lines = ["### Closest pairs", "", f"{which}. `mnist-study audit --output DIR` draws them in "
             "this order in `closest_pairs.png` (left to right, then down; beside each pair, "
             "bright where the aligned, normalised images differ by more than the dead zone).",
             ""]
    for number, p in enumerate(r.closest, start=1):
        moved = "as they are" if p.shift == (0, 0) else f"{p.part_b} moved by {p.shift}"
        lines.append(f"{number}. {p.kind} {p.part_a}[{p.index_a}]~{p.part_b}[{p.index_b}]: "
                     f"distance {p.distance:.4f}, aligned {moved}")
    return [*lines, ""]


def _md_normalisation(r: AuditReport) -> list[str]:
    lines = ["## Normalisation", "", "| fitted on | images | mean | std |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {n['fitted_on']} | {n['images']} | {n['mean']:.6f} | {n['std']:.6f} |"
              for n in r.normalisation]
    return [*lines, "", "Validation and test are normalised with these statistics, unchanged."]
