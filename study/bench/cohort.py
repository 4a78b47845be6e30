"""Trial-epochs per second: K trials trained as one stacked model against the one-trial loop.

Needs torch alone (no Optuna, MLflow or scikit-learn), so the GPU machine runs it bare:

    python -m study.bench.cohort --data-dir ../shared/data [--device cuda] [--out docs]

For each network, batch size and K, in interleaved repetitions: one epoch of today's loop
(study/training.py train(), one trial) and one epoch of a cohort of K (study/cohort/), on the
same slice of the training images, with the same threads. Members alternate SGD with momentum
and Adam (both optimizer families run), lr/weight decay differ per member, dropout 0.2.
Throughput is in trial-epochs per second, scaled to a 54,000-image epoch (the default holdout
split) from the slice actually timed. Writes OUT/cohort_benchmarks.json and prints a table.
"""

from __future__ import annotations

import argparse
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
from study.cohort.engine import Cohort, Member
from study.search_space import Hyperparams
from study.training import TrainOptions, set_cpu_threads, train

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
    """Seconds of one epoch of one trial through today's loop (after one untimed epoch)."""
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
                options: TrainOptions) -> tuple[float, int]:
    """Seconds of one epoch of a cohort of K (after one untimed epoch), and peak bytes."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cohort = Cohort([_member(i, case, device) for i in range(k)], fold, max_epochs=2,
                    options=options)
    cohort.run_epoch()  # warm-up
    _sync(device)
    started = time.perf_counter()
    cohort.run_epoch()
    _sync(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return seconds, peak


def run(cases: Sequence[Case], *, data_dir: Path, device: torch.device, reps: int,
        options: TrainOptions = TrainOptions(), verify: bool = True) -> dict[str, Any]:
    rows = []
    for case in cases:
        fold = load_fold(data_dir, case.images, device, verify=verify)
        scale = FULL_EPOCH_IMAGES / case.images
        solo: list[float] = []
        cohort: dict[int, list[float]] = {k: [] for k in case.ks}
        peaks: dict[int, int] = {}
        for rep in range(reps):  # interleaved: the machine's noise falls on both alike
            for k in case.ks:
                solo.append(time_solo(fold, case, device, options))
                seconds, peaks[k] = time_cohort(fold, case, k, device, options)
                cohort[k].append(seconds)
                logger.info("%s batch %d rep %d: K=%d %.2f s/epoch, one trial %.2f s",
                            case.model, case.batch_size, rep, k, seconds, solo[-1])
        solo_rate = 1 / (statistics.median(solo) * scale)
        for k in case.ks:
            rate = k / (statistics.median(cohort[k]) * scale)
            rows.append({"model": case.model, "batch_size": case.batch_size, "k": k,
                         "images_timed": case.images, "cohort_s": cohort[k], "solo_s": solo,
                         "trial_epochs_per_s": rate, "solo_trial_epochs_per_s": solo_rate,
                         "speedup": rate / solo_rate, "peak_bytes": peaks[k]})
    return {"rows": rows, "device": str(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "amp": options.amp, "reps": reps,
            "machine": platform.processor() or platform.machine(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def table(result: dict[str, Any]) -> str:
    lines = [f"device {result['device']} ({result['gpu'] or result['machine']}), torch "
             f"{result['torch']}, {result['threads']} threads, amp {result['amp']}, median of "
             f"{result['reps']} interleaved repetitions", "",
             "| model | batch | K | trial-epochs/s | one trial | speedup | peak MiB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['k']} | "
                     f"{r['trial_epochs_per_s']:.3g} | {r['solo_trial_epochs_per_s']:.3g} | "
                     f"{r['speedup']:.2f}x | {r['peak_bytes'] / 2**20:.0f} |")
    return "\n".join(lines)


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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.bench.cohort", description=__doc__)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--cpu-threads", type=int, default=1)
    p.add_argument("--amp", choices=("none", "bf16"), default="none")
    p.add_argument("--quick", action="store_true", help="a smoke test in seconds")
    p.add_argument("--allow-noncanonical-data", action="store_true")
    p.add_argument("--out", type=Path, help="write OUT/cohort_benchmarks.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    set_cpu_threads(args.cpu_threads)
    device = torch.device(args.device)
    result = run(cases(device, quick=args.quick), data_dir=args.data_dir, device=device,
                 reps=args.reps, options=TrainOptions(amp=args.amp),
                 verify=not args.allow_noncanonical_data)
    result["command"] = "python -m study.bench.cohort " + " ".join(sys.argv[1:] if argv is None
                                                                   else argv)
    print(table(result))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"cohort_benchmarks_{device.type}_{torch.get_num_threads()}t.json"
        path.write_text(json.dumps(result, indent=1))
        print(f"wrote {path}")
    return 0 if all(math.isfinite(r["speedup"]) for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
