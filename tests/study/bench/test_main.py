"""`python -m study.bench --quick` on synthetic IDX data: every section, sane numbers.

Only the shape and the sanity of the numbers are checked, never their values: timings are the
benchmark's business, not the tests'. The run itself is the `quick_report` fixture (conftest).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from study.bench import SECTIONS

# Each test here runs a study in a process, a server or a benchmark: seconds to minutes.
pytestmark = pytest.mark.slow


def _finite_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def test_every_section_is_reported(quick_report: tuple[dict[str, Any], str]) -> None:
    report, markdown = quick_report
    assert list(report["sections"]) == list(SECTIONS)  # all six, in order
    for section in report["sections"].values():
        assert section["command"].startswith("python -m study.bench")  # how to reproduce it
        assert section["seconds"] > 0 and len(section["load_1min"]) == 2
    for title in ("## Machine", "## Targets", "## 1. Epoch time", "## 2. Study throughput",
                  "## 3. Tracking overhead", "## 4. Pruning saving", "## 5. Time to target",
                  "## 6. Profile of one trial"):
        assert title in markdown  # one markdown section per measurement
    assert report["machine"]["device"] == "cpu"
    assert "no GPU" in markdown  # the report says when the GPU part was not measured


def test_epoch_times_are_side_by_side(quick_report: tuple[dict[str, Any], str]) -> None:
    epochs = quick_report[0]["sections"]["epochs"]["result"]
    paths = {row["path"] for row in epochs["rows"]}
    assert paths == {"conventional", "project"}  # both paths measured in the same run
    assert all(_finite_positive(s) for row in epochs["rows"] for s in row["seconds"])
    assert all(_finite_positive(r) for r in epochs["speedup_vs_conventional"].values())


def test_studies_are_compared_over_the_same_trials(
    quick_report: tuple[dict[str, Any], str]
) -> None:
    sections = quick_report[0]["sections"]
    throughput = sections["throughput"]["result"]
    n = throughput["compared_trials"]
    assert n > 0
    for row in throughput["rows"].values():
        assert row["trials"] == n  # equal trial counts on both sides
        assert _finite_positive(row["trials_per_min"]) and row["peak_rss_mb"] > 0
        assert row["best_val_acc"] is None or 0.0 <= row["best_val_acc"] <= 1.0
    tracking = sections["tracking"]["result"]
    assert tracking["same_trials"]  # on and off trained identical trials
    assert tracking["calls"]["log_epoch"]["count"] == tracking["on"][0]["epochs_trained"]


def test_pruning_and_target_numbers_are_consistent(
    quick_report: tuple[dict[str, Any], str]
) -> None:
    sections = quick_report[0]["sections"]
    rows = sections["pruning"]["result"]["rows"]
    none = rows["none"]
    assert none["pruned"] == 0  # no pruner, nothing pruned: every trial runs every epoch
    assert none["epochs_trained"] == none["finished"] * none["max_epochs"]
    for name in ("median", "hyperband"):
        assert rows[name]["epochs_trained"] <= none["epochs_trained"]  # pruning never adds
    target = sections["target"]["result"]
    hit = target["hit"]
    assert hit is None or hit["val_acc"] >= target["target_acc"]  # stops at the first hit
    profile = sections["profile"]["result"]
    assert profile["top_ops"] and profile["top_functions"]  # both profilers found costs
    trial = profile["trial"]
    assert math.isclose(trial["epochs_s"] + trial["tracking_s"] + trial["other_s"],
                        trial["total_s"])  # the breakdown adds up
