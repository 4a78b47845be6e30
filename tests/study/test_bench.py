"""The benchmark, smoke-tested: --quick on synthetic IDX data, every section, sane numbers.

Only the shape and the sanity of the numbers are checked, never their values: timings are the
benchmark's business, not the tests'.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

from data_pipeline import find_mnist
from study.bench import SECTIONS
from study.bench.__main__ import main
from study.bench.conventional import torchvision_root
from study.bench.report import merge, render
from study.bench.timing import StudyClock, TimedTracker
from study.bench.worker import StudyResult, StudySpec
from study.bench.worker import main as worker_main
from study.tracking import NullTracker
from study.training import EpochMetrics
from tests.helpers import STUDY_TRAIN_IMAGES
from tests.synthetic import write_synthetic_mnist


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    root = tmp_path_factory.mktemp("bench")
    data = write_synthetic_mnist(root / "mnist", n_train=STUDY_TRAIN_IMAGES, n_test=100)
    out = root / "docs"
    threads = torch.get_num_threads()
    # In-process: one process instead of one per study keeps the smoke test fast.
    try:
        assert main(["--quick", "--in-process", "--data-dir", str(data), "--out", str(out),
                     "--allow-noncanonical-data", "--device", "cpu"]) == 0
    finally:
        torch.set_num_threads(threads)  # the bench sets the process's threads, as `run` does
    return json.loads((out / "benchmarks.json").read_text()), (out / "benchmarks.md").read_text()


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


def test_a_partial_run_keeps_the_other_sections(
    quick_report: tuple[dict[str, Any], str], tmp_path: Path
) -> None:
    report, _ = quick_report
    (tmp_path / "benchmarks.json").write_text(json.dumps(report))
    fresh = {"epochs": report["sections"]["epochs"]}
    merged = merge(tmp_path, report["machine"], fresh)
    assert list(merged["sections"]) == list(SECTIONS)  # --only epochs replaced one section
    other_machine = {**report["machine"], "cpu": "another CPU"}
    assert list(merge(tmp_path, other_machine, fresh)["sections"]) == ["epochs"]
    assert "## 1. Epoch time" in render(merged)


def _epoch(epoch: int, val_acc: float) -> EpochMetrics:
    return EpochMetrics(epoch=epoch, train_loss=0.5, train_acc=0.5, val_loss=0.4,
                        val_acc=val_acc, lr=0.1, seconds=0.25)


def test_timed_tracker_clocks_phases_and_the_target() -> None:
    clock = StudyClock(origin=0.0)
    tracker = TimedTracker(NullTracker(), clock=clock, target_acc=0.9)
    tracker.start_study(study_name="s", params={}, tags={})
    run_id = tracker.start_trial(number=7, params={})
    tracker.log_epoch(run_id, _epoch(1, 0.5))
    tracker.log_epoch(run_id, _epoch(2, 0.95))
    tracker.log_epoch(run_id, _epoch(3, 0.97))
    tracker.end_trial(run_id, number=7, state=TrialState.COMPLETE, attrs={})
    tracker.save_checkpoint(run_id, {})  # not clocked by name: passes through, still counted
    tracker.end_study(status="FINISHED")
    trial = clock.trials[run_id]
    assert (trial.number, trial.epochs) == (7, 3)
    assert trial.epoch_seconds == pytest.approx(0.75)  # the loop's own epoch times, summed
    assert clock.target is not None and (clock.target.trial, clock.target.epoch) == (7, 2)
    assert clock.calls["log_epoch"][0] == 3 and clock.calls["save_checkpoint"][0] == 1
    assert clock.search_started is not None and clock.study_ended is not None
    assert clock.search_started <= (clock.search_ended or 0) <= clock.study_ended


def test_worker_round_trips_a_spec_through_json(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "mnist", n_train=300, n_test=50)
    files = find_mnist(data, verify=False)
    assert files is not None
    root = torchvision_root(files, tmp_path / "torchvision")
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(files.paths)
    spec = StudySpec(label="conventional-smoke", kind="conventional", n_trials=2, max_epochs=1,
                     pruner="none", seed=0, tracking=False, data_dir=str(data),
                     torchvision_root=str(root), workdir=str(tmp_path), tracking_uri="",
                     device="cpu", cpu_threads=0, allow_noncanonical_data=True)
    spec_path, result_path = tmp_path / "spec.json", tmp_path / "result.json"
    spec_path.write_text(json.dumps(dataclasses.asdict(spec)))
    verbosity = optuna.logging.get_verbosity()
    try:  # what `python -m study.bench.worker SPEC RESULT` does in its own process
        assert worker_main([str(spec_path), str(result_path)]) == 0
    finally:
        optuna.logging.set_verbosity(verbosity)
    result = StudyResult.from_json(json.loads(result_path.read_text()))
    assert result.spec == spec  # the result names exactly what was run
    assert [t.state for t in result.trials] == ["COMPLETE", "COMPLETE"]
    assert all(t.epochs == 1 and 0 < t.end_s <= result.search_s for t in result.trials)
    assert result.peak_rss_mb > 0
