"""One quick benchmark run, shared by the tests of its report (`__main__` and `report`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from study.bench.__main__ import main
from tests.helpers import STUDY_TRAIN_IMAGES
from tests.synthetic import write_synthetic_mnist


# Package scope: the run takes the longest of these tests, so it happens once for all of them.
@pytest.fixture(scope="package")
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
