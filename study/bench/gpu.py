"""The prepared GPU check: every GPU measurement this project needs, in one command.

    python -m study.bench.gpu --data-dir DATA --out "$OUT" [--budget 420]

It runs on a bare GPU machine with torch alone (the engine cases); the whole-study case also
needs Optuna and MLflow, installed from wheels carried along, the project with --no-deps
(README, Performance). In order, each case's result written to OUT/gpu_benchmarks.json as
soon as it is measured, so that a run cut short keeps what it measured:

1. a lone trial's epoch (train(), a cohort of one, eager), and a cohort of K = 1 .. 256, at batch 64
   and 256, eager and with the CUDA graph (--cuda-graph): trial-epochs per second on a full
   54,000-image epoch, peak memory, and the graphed members' losses against the eager ones;
2. at K = 64: bf16 autocast, and TF32 (--matmul-precision high);
3. one whole study, 100 trials of up to 8 epochs of the MLP, Optuna and MLflow included,
   through `mnist-study run` in a process of its own: its wall time from the command's start.

Cases past --budget seconds are recorded as skipped, not run. --quick is the smoke test the
suite runs on a CPU (tiny slices, K of 1 and 2, a study of 2 trials of 1 epoch).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from data_pipeline.tensors import Fold
from study.bench.cohort import FULL_EPOCH_IMAGES, Case, load_fold, time_cohort, time_solo
from study.train.engine_types import TrainOptions
from study.train.training import set_cpu_threads

logger = logging.getLogger("study.bench.gpu")

JSON_NAME = "gpu_benchmarks.json"
REPO = Path(__file__).resolve().parents[2]
FULL_KS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
STUDY_TRIALS, STUDY_EPOCHS = 100, 8


class Recorder:
    """The results so far, rewritten to PATH after every case (a cut-short run keeps them)."""

    def __init__(self, path: Path | None, header: dict[str, Any], budget: float) -> None:
        self.path, self.budget, self.started = path, budget, time.perf_counter()
        self.result: dict[str, Any] = {**header, "cases": []}

    def case(self, name: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """MEASURE as case NAME, or its error, or a skip past the budget; written at once."""
        elapsed = time.perf_counter() - self.started
        if elapsed > self.budget:
            row: dict[str, Any] = {"case": name, "skipped": f"past the {self.budget:.0f} s budget"}
        else:
            try:
                row = {"case": name, **measure()}
            except (RuntimeError, torch.OutOfMemoryError, OSError) as exc:
                row = {"case": name, "error": f"{type(exc).__name__}: {exc}"[:400]}
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        row["at_s"] = round(time.perf_counter() - self.started, 1)
        self.result["cases"].append(row)
        logger.info("%s", json.dumps(row))
        if self.path is not None:
            partial = self.path.with_suffix(".tmp")
            partial.write_text(json.dumps(self.result, indent=1))
            partial.replace(self.path)
        return row


def engine_case(fold_of: Callable[[], Fold], case: Case, k: int, device: torch.device,
                options: TrainOptions, *, precision: str = "highest") -> dict[str, Any]:
    """One epoch of one trial and one of a cohort of K, side by side, at PRECISION."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        fold = fold_of()
        scale = FULL_EPOCH_IMAGES / case.images
        solo = time_solo(fold, case, device, TrainOptions(amp=options.amp))
        seconds, peak, losses = time_cohort(fold, case, k, device, options)
    finally:
        torch.set_float32_matmul_precision(before)
    rate, solo_rate = k / (seconds * scale), 1 / (solo * scale)
    return {"model": case.model, "batch_size": case.batch_size, "k": k, "amp": options.amp,
            "cuda_graph": options.cuda_graph, "matmul_precision": precision,
            "images_timed": case.images, "solo_epoch_s": solo * scale,
            "cohort_epoch_s": seconds * scale, "trial_epochs_per_s": rate,
            "solo_trial_epochs_per_s": solo_rate, "speedup": rate / solo_rate,
            "peak_bytes": peak, "val_losses": losses}


def study_case(data_dir: Path, device: torch.device, *, trials: int, epochs: int,
               cohort_size: int, cuda_graph: bool, noncanonical: bool) -> dict[str, Any]:
    """A whole `mnist-study run` in a process of its own: wall time from its start."""
    missing = [m for m in ("optuna", "mlflow", "sklearn") if importlib.util.find_spec(m) is None]
    if missing:
        return {"skipped": f"not installed here: {', '.join(missing)} (carry their wheels and "
                           f"install the project with --no-deps: README, Performance)"}
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "study", "run", "--n-trials", str(trials),
                   "--max-epochs", str(epochs), "--model", "mlp", "--device", str(device),
                   "--cohort-size", str(cohort_size), "--data-dir", str(data_dir),
                   "--no-download", "--no-progress", "--storage", f"sqlite:///{tmp}/optuna.db",
                   "--tracking-uri", f"sqlite:///{tmp}/mlflow.db",
                   "--mlflow-spool", f"{tmp}/spool",
                   *(["--cuda-graph"] if cuda_graph else []),
                   *(["--allow-noncanonical-data"] if noncanonical else [])]
        started = time.perf_counter()
        # The checkout on the path: the project may be installed (--no-deps) or not at all.
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": path})
        wall = time.perf_counter() - started
    return {"trials": trials, "max_epochs": epochs, "cohort_size": cohort_size,
            "cuda_graph": cuda_graph, "wall_s": wall, "exit_code": done.returncode,
            "summary": done.stdout.strip().splitlines()[-12:],
            "stderr_tail": done.stderr.strip().splitlines()[-5:]}


def run(*, data_dir: Path, device: torch.device, out: Path | None, budget: float,
        quick: bool, noncanonical: bool = False) -> dict[str, Any]:
    header = {"command": "python -m study.bench.gpu", "device": str(device),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "torch": torch.__version__, "python": platform.python_version(),
              "threads": torch.get_num_threads(), "quick": quick}
    recorder = Recorder(None if out is None else out / JSON_NAME, header, budget)
    cuda = device.type == "cuda"
    images = 640 if quick else FULL_EPOCH_IMAGES
    fold_of = functools.cache(lambda: load_fold(data_dir, images, device,
                                                verify=not noncanonical))
    ks = (1, 2) if quick else FULL_KS
    graphs = (False, True) if cuda else (False,)
    for batch_size in (64, 256):
        for graph in graphs:
            for k in ks:
                recorder.case(f"mlp batch {batch_size} K={k} graph {'on' if graph else 'off'}",
                              functools.partial(engine_case, fold_of,
                                                Case("mlp", batch_size, (k,), images), k,
                                                device, TrainOptions(cuda_graph=graph)))
    k = 2 if quick else 64
    case = Case("mlp", 64, (k,), images)
    for graph in graphs:
        recorder.case(f"mlp batch 64 K={k} bf16 graph {'on' if graph else 'off'}",
                      functools.partial(engine_case, fold_of, case, k, device,
                                        TrainOptions(amp="bf16", cuda_graph=graph)))
    recorder.case(f"mlp batch 64 K={k} tf32", functools.partial(
        engine_case, fold_of, case, k, device, TrainOptions(cuda_graph=cuda),
        precision="high"))
    trials, epochs = (2, 1) if quick else (STUDY_TRIALS, STUDY_EPOCHS)
    for cohort_size in ((1,) if quick else (1, 64)):
        recorder.case(f"study {trials} x {epochs} MLP, cohort {cohort_size}", functools.partial(
            study_case, data_dir, device, trials=trials, epochs=epochs, cohort_size=cohort_size,
            cuda_graph=cuda and cohort_size > 1, noncanonical=noncanonical))
    return recorder.result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m study.bench.gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, help=f"write OUT/{JSON_NAME} after every case")
    p.add_argument("--budget", type=float, default=420.0,
                   help="seconds after which the remaining cases are skipped (default 420)")
    p.add_argument("--cpu-threads", type=int, default=0, help="0: torch's default")
    p.add_argument("--quick", action="store_true", help="the suite's smoke test, on a CPU")
    p.add_argument("--allow-noncanonical-data", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    set_cpu_threads(args.cpu_threads)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    result = run(data_dir=args.data_dir, device=torch.device(args.device), out=args.out,
                 budget=args.budget, quick=args.quick,
                 noncanonical=args.allow_noncanonical_data)
    failed = [c["case"] for c in result["cases"]
              if "error" in c or c.get("exit_code", 0) != 0
              or not math.isfinite(c.get("speedup", 1.0))]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
