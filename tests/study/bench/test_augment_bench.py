"""The augmentation benchmark runs end to end on synthetic data, with torch alone."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from study.bench import augment
from tests.helpers import STUDY_TRAIN_IMAGES
from tests.synthetic import write_synthetic_mnist


def test_the_augmentation_benchmark_times_every_kind_side_by_side(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    threads = torch.get_num_threads()
    try:
        augment.main(["--data-dir", str(data), "--reps", "2", "--allow-noncanonical-data",
                      "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    result = json.loads((tmp_path / "augment_benchmarks_cpu.json").read_text())
    assert [row["augment"] for row in result["rows"]] == ["none", "rotate", "affine"]
    for row in result["rows"]:
        assert len(row["seconds"]) == 2 and all(s > 0 for s in row["seconds"])
    assert result["rows"][0]["ratio"] == 1.0
    assert result["torch"] == torch.__version__  # the version the figures belong to
