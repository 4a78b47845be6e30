"""Trial-epochs per second: K trials trained as one stacked model against a lone trial.

Needs torch alone (no Optuna, MLflow or scikit-learn), so the GPU machine runs it bare:

    python -m study.bench.cohort --data-dir ../shared/data [--device cuda] [--out docs]

For each network, batch size and K, in interleaved repetitions: one epoch of a lone trial
(study/train/trial.py train(), a cohort of one) and one epoch of a cohort of K
(study/train/cohort/), on the same slice of the training images, with the same threads.
Members alternate SGD with momentum and Adam (both optimizer families run), lr/weight decay
differ per member, dropout 0.2.
Throughput is in trial-epochs per second, scaled to a 54,000-image epoch (the default holdout
split) from the slice actually timed. Prints a table; with --out, writes
OUT/cohort_benchmarks_DEVICE_Nt.json and re-renders OUT/benchmarks.md with it.

The GPU section, one command (a GPU machine with torch alone; MNIST's four IDX files in
DATA; about 5 minutes on an H100/H200 by our estimate, not yet measured):

    python -m study.bench.cohort --data-dir DATA --device cuda --reps 2 --amp both \
        --cuda-graph both --out "$OUT"

(OUT then holds cohort_benchmarks_cuda_1t.json: copied into docs/, the next re-render of
docs/benchmarks.md shows it; a test parses this command, so it cannot rot again.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import models
from data_pipeline.mnist import find_mnist
from data_pipeline.tensors import Fold, Normalizer, to_tensor_set
from study.bench.report import rerender
from study.bench.report_cohort import engine_table
from study.train.cohort.engine import Cohort, Member
from study.train.engine_types import EpochMetrics, Hyperparams, TrainOptions
from study.train.training import set_cpu_threads
from study.train.trial import train

logger = logging.getLogger("study.bench.cohort")

FULL_EPOCH_IMAGES = 54_000  # the default split's train part: what "an epoch" means here


@dataclass(frozen=True)
class Case:
    model: str
    batch_size: int
    ks: tuple[int, ...]
    images: int  # the slice of training images an epoch is timed on


def _hp(k: int, batch_size: int) -> Hyperparams:
    if k % 2 == 0:
        return Hyperparams(lr=0.01 * (1 + k % 5), optimizer="sgd", batch_size=batch_size,
                           dropout=0.2, weight_decay=1e-5, scheduler="none", momentum=0.9)
    return Hyperparams(lr=1e-3 * (1 + k % 3), optimizer="adam", batch_size=batch_size,
                       dropout=0.2, weight_decay=1e-5, scheduler="cosine")


def load_fold(data_dir: Path, images: int, device: torch.device, *,
              verify: bool = True) -> Fold:
    """IMAGES training images as a fold (a seeded permutation: timing needs no stratifying)."""
    files = find_mnist(data_dir, verify=verify)
    if files is None:
        raise SystemExit(f"no MNIST IDX files in {data_dir}: pass --data-dir")
    full = files.load("train")
    order = np.random.default_rng(0).permutation(len(full.labels))
    train, val = order[:images], order[images:images + 2_000]
    z = Normalizer.fit(full.images[train])
    return Fold(train=to_tensor_set(full.images[train], full.labels[train], z, device),
                val=to_tensor_set(full.images[val], full.labels[val], z, device), normalizer=z)


def _member(k: int, case: Case, device: torch.device) -> Member:
    hp = _hp(k, case.batch_size)
    torch.manual_seed(k)
    model = models.build(case.model, dropout=hp.dropout).to(device)
    return Member(key=k, hp=hp, model=model, generator=torch.Generator().manual_seed(k))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_solo(fold: Fold, case: Case, device: torch.device, options: TrainOptions) -> float:
    """Seconds of one epoch of a lone trial, train() (after one untimed epoch)."""
    member = _member(0, case, device)
    epochs = train(member.model, member.hp, fold, max_epochs=2, generator=member.generator,
                   options=options)
    next(epochs)  # warm-up: allocator, kernels
    _sync(device)
    started = time.perf_counter()
    next(epochs)
    _sync(device)
    return time.perf_counter() - started


def time_cohort(fold: Fold, case: Case, k: int, device: torch.device,
                options: TrainOptions) -> tuple[float, int, list[float]]:
    """Seconds of one epoch of a cohort of K (after one untimed epoch, which also captures
    the CUDA graph where OPTIONS ask for one), peak bytes, and the members' validation losses
    after the two epochs (the same members each time: a check that graphs change nothing)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cohort = Cohort([_member(i, case, device) for i in range(k)], fold, max_epochs=2,
                    options=options)
    cohort.run_epoch()  # warm-up
    _sync(device)
    started = time.perf_counter()
    results = cohort.run_epoch()
    _sync(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    losses = [r.val_loss if isinstance(r, EpochMetrics) else math.nan
              for r in results.values()]
    return seconds, peak, losses


def run(cases: Sequence[Case], *, data_dir: Path, device: torch.device, reps: int,
        amps: Sequence[str] = ("none",), graphs: Sequence[bool] = (False,),
        verify: bool = True) -> dict[str, Any]:
    """Every case, K, amp and graph setting, REPS times, interleaved with a lone trial
    (at the same amp): the machine's drift falls on both alike. A setting that fails (out of
    memory, a capture error) is recorded with its error and the run goes on."""
    rows = []
    for case in cases:
        fold = load_fold(data_dir, case.images, device, verify=verify)
        scale = FULL_EPOCH_IMAGES / case.images
        solo: dict[str, list[float]] = {amp: [] for amp in amps}
        cohort: dict[tuple[int, str, bool], list[float]] = {}
        peaks: dict[tuple[int, str, bool], int] = {}
        errors: dict[tuple[int, str, bool], str] = {}
        losses: dict[tuple[int, str, bool], list[float]] = {}
        for rep in range(reps):
            for amp in amps:
                for k in case.ks:
                    solo[amp].append(time_solo(fold, case, device, TrainOptions(amp=amp)))
                    for graph in graphs:
                        key = (k, amp, graph)
                        if key in errors:
                            continue
                        try:
                            seconds, peaks[key], losses[key] = time_cohort(
                                fold, case, k, device, TrainOptions(amp=amp, cuda_graph=graph))
                        except (RuntimeError, torch.OutOfMemoryError) as exc:
                            errors[key] = f"{type(exc).__name__}: {exc}"[:300]
                            logger.warning("%s batch %d K=%d amp %s graph %s: %s", case.model,
                                           case.batch_size, k, amp, graph, errors[key])
                            if device.type == "cuda":
                                torch.cuda.empty_cache()
                            continue
                        cohort.setdefault(key, []).append(seconds)
                        logger.info("%s batch %d rep %d amp %s graph %s: K=%d %.2f s/epoch, "
                                    "one trial %.2f s", case.model, case.batch_size, rep, amp,
                                    graph, k, seconds, solo[amp][-1])
        for amp in amps:
            solo_rate = 1 / (statistics.median(solo[amp]) * scale)
            for k in case.ks:
                for graph in graphs:
                    key = (k, amp, graph)
                    times = cohort.get(key, [])
                    rate = k / (statistics.median(times) * scale) if times else math.nan
                    rows.append({"model": case.model, "batch_size": case.batch_size, "k": k,
                                 "amp": amp, "cuda_graph": graph, "images_timed": case.images,
                                 "cohort_s": times, "solo_s": solo[amp],
                                 "trial_epochs_per_s": rate, "solo_trial_epochs_per_s": solo_rate,
                                 "speedup": rate / solo_rate, "peak_bytes": peaks.get(key, 0),
                                 "error": errors.get(key),
                                 # graph against eager: the same members' validation losses
                                 "max_rel_diff_vs_eager": _max_rel_diff(
                                     losses.get(key), losses.get((k, amp, False)))
                                 if graph else None})
    return {"rows": rows, "device": str(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "reps": reps,
            "machine": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def _max_rel_diff(got: list[float] | None, want: list[float] | None) -> float | None:
    if not got or not want:
        return None
    return max(abs(a - b) / abs(b) for a, b in zip(got, want, strict=True))


def cases(device: torch.device, *, quick: bool) -> list[Case]:
    if quick:
        return [Case("mlp", 64, (1, 2), 640), Case("cnn", 64, (2,), 256)]
    if device.type == "cuda":
        ks = (1, 8, 16, 32, 64, 128)
        return [Case("mlp", 64, ks, 54_000), Case("mlp", 256, ks, 54_000),
                Case("cnn", 64, (1, 8, 16, 32), 54_000)]
    ks = (1, 4, 8, 16, 32, 64)
    return [Case("mlp", 64, ks, 6_400), Case("mlp", 256, ks, 12_800),
            Case("cnn", 64, (1, 4, 8), 1_280)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m study.bench.cohort", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--cpu-threads", type=int, default=1)
    p.add_argument("--amp", choices=("none", "bf16", "both"), default="none")
    p.add_argument("--cuda-graph", choices=("off", "on", "both"), default="off",
                   help="capture the cohort's step as a CUDA graph (CUDA only)")
    p.add_argument("--quick", action="store_true", help="a smoke test in seconds")
    p.add_argument("--ks", help="cohort sizes to time, e.g. 1,16 (default: each case's)")
    p.add_argument("--models", default="mlp,cnn", help="networks to time (default mlp,cnn)")
    p.add_argument("--allow-noncanonical-data", action="store_true")
    p.add_argument("--out", type=Path, help="write OUT/cohort_benchmarks_DEVICE_Nt.json and "
                   "re-render OUT/benchmarks.md (docs: the project's)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    set_cpu_threads(args.cpu_threads)
    device = torch.device(args.device)
    amps = ("none", "bf16") if args.amp == "both" else (args.amp,)
    graphs = {"off": (False,), "on": (True,), "both": (False, True)}[args.cuda_graph]
    if device.type != "cuda" and any(graphs):
        p.error("--cuda-graph needs --device cuda")
    chosen = [dataclasses.replace(case, ks=tuple(int(k) for k in args.ks.split(","))
                                  if args.ks else case.ks)
              for case in cases(device, quick=args.quick)
              if case.model in args.models.split(",")]
    result = run(chosen, data_dir=args.data_dir, device=device,
                 reps=args.reps, amps=amps, graphs=graphs,
                 verify=not args.allow_noncanonical_data)
    result["command"] = "python -m study.bench.cohort " + " ".join(sys.argv[1:] if argv is None
                                                                   else argv)
    print(engine_table(result))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"cohort_benchmarks_{device.type}_{torch.get_num_threads()}t.json"
        path.write_text(json.dumps(result, indent=1))
        print(f"wrote {path}")
        if (markdown := rerender(args.out)) is not None:
            print(f"re-rendered {markdown}")
    failed = [r for r in result["rows"] if r["error"] is not None]
    return 1 if failed or not all(math.isfinite(r["speedup"]) for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
