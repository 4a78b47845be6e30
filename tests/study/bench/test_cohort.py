"""The cohort benchmark runs end to end on synthetic data, and needs torch alone."""

from __future__ import annotations

import json
import math
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from study.bench import cohort
from tests.helpers import STUDY_TRAIN_IMAGES
from tests.synthetic import write_synthetic_mnist

DOCS = Path(__file__).resolve().parents[3] / "docs"


@pytest.mark.parametrize("module", ["study.bench.cohort", "study.bench.gpu"])
def test_the_gpu_machine_s_benchmarks_import_torch_alone(module: str) -> None:
    # The lent GPU machine has torch and no Optuna, MLflow or scikit-learn.
    code = (f"import sys, {module}; "
            "print(sorted(m for m in ('optuna', 'mlflow', 'sklearn', 'scipy', 'pandas') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)
    assert done.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_quick_cohort_benchmark_writes_its_table_into_the_report(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    out = tmp_path / "docs"
    out.mkdir()
    shutil.copy(DOCS / "benchmarks.json", out)  # python -m study.bench's sections
    args = ["--data-dir", str(data), "--quick", "--reps", "1", "--allow-noncanonical-data",
            "--device", "cpu", "--out", str(out)]
    assert cohort.main([*args, "--amp", "both"]) == 0
    (written,) = out.glob("cohort_benchmarks_cpu_*t.json")
    rows = json.loads(written.read_text())["rows"]
    assert {(r["model"], r["k"], r["amp"]) for r in rows} == {
        (model, k, amp) for model, k in (("mlp", 1), ("mlp", 2), ("cnn", 2))
        for amp in ("none", "bf16")}  # every case, each amp setting its own row
    for row in rows:
        assert math.isfinite(row["speedup"]) and row["speedup"] > 0
        assert len(row["cohort_s"]) == 1  # one timed epoch per repetition
    text = (out / "benchmarks.md").read_text()
    assert "| mlp | 64 | 2 | bf16 | off |" in text  # the table joined the report
    assert "## 1. Epoch time of the seed MLP" in text  # the other sections are kept
    assert cohort.main([*args, "--models", "mlp"]) == 0  # again, without bf16 (and the CNN)
    text = (out / "benchmarks.md").read_text()
    assert text.count("## Cohorts: cpu, 1 threads") == 1  # its section replaced, not appended
    assert "| bf16 |" not in text and "## 1. Epoch time of the seed MLP" in text


def test_a_cuda_graph_needs_a_gpu(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        cohort.main(["--data-dir", str(tmp_path), "--device", "cpu", "--cuda-graph", "on"])


def test_the_prepared_gpu_command_parses() -> None:
    # The one command a lent GPU runs, as its docstring gives it: it once passed a flag the
    # parser did not define, and failed before measuring anything.
    from study.bench import cohort

    doc = cohort.__doc__ or ""
    start = doc.index("    python -m study.bench.cohort --data-dir DATA --device cuda")
    command = doc[start:doc.index("\n\n", start)].replace("\\\n", " ")
    args = shlex.split(command)[3:]  # past "python -m study.bench.cohort"
    parsed = cohort.build_parser().parse_args(
        [a.replace("DATA", "/data").replace("$OUT", "/out") for a in args])
    assert (parsed.device, parsed.amp, parsed.cuda_graph, str(parsed.out)) == (
        "cuda", "both", "both", "/out")


def test_the_before_and_after_bench_times_two_checkouts_side_by_side(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from study.bench import checkouts

    data = write_synthetic_mnist(tmp_path / "mnist", n_train=1200, n_test=50)
    here = Path(__file__).resolve().parents[3]  # this checkout, on both sides
    assert checkouts.main(["--before", str(here), "--after", str(here), "--data-dir", str(data),
                           "--reps", "1", "--images", "256", "--allow-noncanonical-data"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["K = 1, batch 64", "K = 1, batch 256"]
    seen = json.loads(lines[-1])
    assert all(len(seen[side][batch]) == 1 and seen[side][batch][0] > 0
               for side in ("before", "after") for batch in ("64", "256"))
