"""The cohort benchmark runs end to end on synthetic data, and needs torch alone."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from study.bench import cohort
from tests.helpers import STUDY_TRAIN_IMAGES
from tests.synthetic import write_synthetic_mnist

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_the_quick_cohort_benchmark_writes_its_table(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    code = cohort.main(["--data-dir", str(data), "--quick", "--reps", "1",
                        "--allow-noncanonical-data", "--device", "cpu", "--out",
                        str(tmp_path / "out")])
    assert code == 0
    (written,) = (tmp_path / "out").glob("cohort_benchmarks_cpu_*t.json")
    result = json.loads(written.read_text())
    assert {(r["model"], r["k"]) for r in result["rows"]} == {("mlp", 1), ("mlp", 2), ("cnn", 2)}
    for row in result["rows"]:
        assert math.isfinite(row["speedup"]) and row["speedup"] > 0
        assert len(row["cohort_s"]) == 1  # one timed epoch per repetition


def test_the_cohort_benchmark_imports_torch_alone() -> None:
    # The GPU machine has torch and no Optuna, MLflow or scikit-learn.
    code = ("import sys, study.bench.cohort; "
            "print(sorted(m for m in ('optuna', 'mlflow', 'sklearn', 'scipy', 'pandas') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
    assert done.stdout.strip() == "[]"


def test_the_cohort_tables_join_the_benchmark_report(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    out = tmp_path / "docs"
    out.mkdir()
    shutil.copy(DOCS / "benchmarks.json", out)  # python -m study.bench's sections
    args = ["--data-dir", str(data), "--quick", "--reps", "1", "--allow-noncanonical-data",
            "--device", "cpu", "--amp", "both", "--out", str(out)]
    assert cohort.main(args) == 0
    assert cohort.main(args) == 0  # a second run replaces its section, not appends one
    text = (out / "benchmarks.md").read_text()
    assert text.count("## Cohorts: cpu, 1 threads") == 1
    assert "| mlp | 64 | 2 | bf16 | off |" in text  # both amp settings, each its row
    assert "## 1. Epoch time of the seed MLP" in text  # the other sections are kept


def test_a_cuda_graph_needs_a_gpu(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        cohort.main(["--data-dir", str(tmp_path), "--device", "cpu", "--cuda-graph", "on"])
