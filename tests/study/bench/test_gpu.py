"""The prepared GPU check runs end to end on a CPU (--quick); that it imports torch alone is
tested beside the cohort benchmark (test_cohort.py)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from study.bench import gpu
from tests.helpers import STUDY_TRAIN_IMAGES
from tests.synthetic import write_synthetic_mnist


@pytest.mark.slow
def test_the_quick_gpu_check_writes_every_case_as_it_goes(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    out = tmp_path / "out"
    assert gpu.main(["--data-dir", str(data), "--quick", "--device", "cpu", "--out", str(out),
                     "--allow-noncanonical-data"]) == 0
    result = json.loads((out / gpu.JSON_NAME).read_text())
    names = [c["case"] for c in result["cases"]]
    assert names == [f"mlp batch {b} K={k} graph off" for b in (64, 256) for k in (1, 2)] + [
        "mlp batch 64 K=2 bf16 graph off", "mlp batch 64 K=2 tf32",
        "study 2 x 1 MLP, cohort 1"]
    engine = [c for c in result["cases"] if "speedup" in c]
    assert len(engine) == 6 and all(math.isfinite(c["speedup"]) and c["speedup"] > 0
                                    for c in engine)
    assert {c["matmul_precision"] for c in engine} == {"highest", "high"}
    (study,) = [c for c in result["cases"] if c["case"].startswith("study")]
    assert study["exit_code"] == 0 and study["wall_s"] > 0, study
    assert not (out / "gpu_benchmarks.tmp").exists()  # each write replaced the file whole


def test_a_case_past_the_budget_is_recorded_as_skipped(tmp_path: Path) -> None:
    recorder = gpu.Recorder(tmp_path / gpu.JSON_NAME, {"device": "cpu"}, budget=0.0)
    row = recorder.case("anything", lambda: pytest.fail("a case past the budget ran"))
    assert row["skipped"].startswith("past the 0 s budget")
    assert json.loads((tmp_path / gpu.JSON_NAME).read_text())["cases"] == [row]


def test_a_case_that_fails_is_recorded_and_the_next_runs(tmp_path: Path) -> None:
    recorder = gpu.Recorder(tmp_path / gpu.JSON_NAME, {}, budget=60.0)

    def out_of_memory() -> dict[str, float]:
        raise RuntimeError("CUDA error: out of memory")

    assert "out of memory" in recorder.case("big", out_of_memory)["error"]
    assert recorder.case("small", lambda: {"speedup": 2.0})["speedup"] == 2.0
    assert [c["case"] for c in json.loads((tmp_path / gpu.JSON_NAME).read_text())["cases"]] == [
        "big", "small"]


def test_the_documented_command_parses() -> None:
    # The command the module's doc and README give for a lent GPU machine.
    doc = gpu.__doc__ or ""
    line = next(line.strip() for line in doc.splitlines()
                if line.strip().startswith("python -m study.bench.gpu"))
    args = re.sub(r"\[[^]]*\]", "", line).split()[3:]  # the optional parts left out
    parsed = gpu.build_parser().parse_args(
        [a.replace("DATA", "/data").replace('"$OUT"', "/out") for a in args])
    assert (str(parsed.data_dir), str(parsed.out), parsed.budget, parsed.quick) == (
        "/data", "/out", 420.0, False)
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    assert 'python -m study.bench.gpu\n--data-dir DATA --out "$OUT"' in readme \
        or 'python -m study.bench.gpu --data-dir DATA --out "$OUT"' in readme
