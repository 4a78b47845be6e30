"""The signals benchmark runs end to end on synthetic data, with torch alone."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from study.bench import signals
from tests.helpers import STUDY_TRAIN_IMAGES
from tests.synthetic import write_synthetic_mnist


def test_the_signals_benchmark_times_off_and_on_side_by_side(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    threads = torch.get_num_threads()
    try:
        signals.main(["--data-dir", str(data), "--reps", "2", "--allow-noncanonical-data",
                      "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "signals_benchmarks_cpu.json").read_text())
    assert [(row["model"], row["variant"]) for row in result["rows"]] == [
        ("mlp", "off"), ("mlp", "on"), ("cnn", "off"), ("cnn", "on")]  # side by side, per model
    for row in result["rows"]:
        assert len(row["seconds"]) == 2 and all(s > 0 for s in row["seconds"])
    assert result["rows"][0]["ratio"] == 1.0 and result["rows"][2]["ratio"] == 1.0
    assert result["torch"] == torch.__version__
