"""The study-level cohort benchmark runs end to end: each seed one trial at a time and in
cohorts, in fresh processes, into a table of docs/benchmarks.md."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from study.bench import cohort_study
from tests.helpers import STUDY_TRAIN_IMAGES
from tests.synthetic import write_synthetic_mnist

# Each test here runs a study in a process, a server or a benchmark: seconds to minutes.
pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_the_study_benchmark_compares_each_seed_with_and_without_cohorts(
    tmp_path: Path,
) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    out = tmp_path / "docs"
    out.mkdir()
    shutil.copy(DOCS / "benchmarks.json", out)
    code = cohort_study.main(["--data-dir", str(data), "--n-trials", "3", "--max-epochs", "1",
                              "--seeds", "0", "--cohort-size", "3", "--cpu-threads", "1",
                              "--allow-noncanonical-data", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "cohort_study_benchmarks.json").read_text())
    assert [(r["seed"], r["cohort_size"]) for r in result["rows"]] == [(0, 1), (0, 3)]
    for row in result["rows"]:
        assert row["trials"] == 3 and row["search_s"] > 0
        assert sum(row["epochs_by_batch_size"].values()) == row["trial_epochs"]
    # three trials, all the sampler's random start-up: each draws its own batch size
    assert len(result["rows"][1]["epochs_by_batch_size"]) > 1
    assert "## Cohorts: the reference study" in (out / "benchmarks.md").read_text()
