"""The side-by-side cost benchmarks run end to end on synthetic data, with torch alone."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from study.bench import augment, signals
from tests.helpers import STUDY_TRAIN_IMAGES
from tests.synthetic import write_synthetic_mnist

# Each test here runs a study in a process, a server or a benchmark: seconds to minutes.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("bench", "rows"), [
    (augment, [("augment", "none"), ("augment", "rotate"), ("augment", "affine")]),
    (signals, [("model", "mlp"), ("model", "mlp"), ("model", "cnn"), ("model", "cnn")]),
], ids=["augment", "signals"])
def test_a_cost_benchmark_times_its_variants_side_by_side(
    tmp_path: Path, bench: ModuleType, rows: list[tuple[str, str]],
) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    threads = torch.get_num_threads()
    try:
        bench.main(["--data-dir", str(data), "--reps", "2", "--allow-noncanonical-data",
                    "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    name = bench.__name__.rsplit(".", 1)[1]
    result = json.loads((tmp_path / f"{name}_benchmarks_cpu.json").read_text())
    assert [(key, row[key]) for (key, _), row in zip(rows, result["rows"], strict=True)] == rows
    for row in result["rows"]:
        assert len(row["seconds"]) == 2 and all(s > 0 for s in row["seconds"])
    assert result["rows"][0]["ratio"] == 1.0  # against the first variant (per model)
    if bench is signals:  # off, then on, for each model
        assert [row["variant"] for row in result["rows"]] == ["off", "on"] * 2
        assert result["rows"][2]["ratio"] == 1.0
    assert result["torch"] == torch.__version__  # the version the figures belong to
    assert result["command"].startswith(f"python -m study.bench.{name} ")
