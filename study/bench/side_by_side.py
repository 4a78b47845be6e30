"""Epoch times of a few variants of one training run, interleaved: the loop behind the small
cost benchmarks (augmentation, signals). Torch alone, so it runs on a bare GPU machine."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from data_pipeline.mnist import find_mnist
from data_pipeline.prepare import prepare_search_data
from data_pipeline.tensors import Fold

# A variant: one epoch of a fresh model on the fold, its batch order from the generator.
Variant = Callable[[Fold, torch.Generator], None]


def load_fold(data_dir: Path, device: str, *, allow_noncanonical_data: bool = False) -> Fold:
    files = find_mnist(data_dir, verify=not allow_noncanonical_data)
    if files is None:
        raise SystemExit(f"no MNIST IDX files in {data_dir}")
    return prepare_search_data(files, val_fraction=0.1, seed=0,
                               device=torch.device(device)).fold(0)


def time_interleaved(variants: Mapping[str, Variant], fold: Fold, *, reps: int,
                     device: str) -> list[dict[str, Any]]:
    """Each variant's epoch REPS times, in rounds (a, b, c, then again) so that load from other
    processes hits every variant alike; a first round warms up and is not counted. Rows of
    median seconds and the ratio to the first variant."""
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(reps + 1):
        for name, epoch in variants.items():
            torch.manual_seed(0)
            started = time.perf_counter()
            epoch(fold, torch.Generator().manual_seed(rep))
            if device == "cuda":
                torch.cuda.synchronize()
            if rep:
                seconds[name].append(time.perf_counter() - started)
    base = statistics.median(next(iter(seconds.values())))
    return [{"variant": name, "median_s": statistics.median(times), "seconds": times,
             "ratio": statistics.median(times) / base} for name, times in seconds.items()]


def parser(description: str) -> argparse.ArgumentParser:
    """The flags every side-by-side benchmark takes; a benchmark adds its own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cpu-threads", type=int, default=1)
    p.add_argument("--allow-noncanonical-data", action="store_true")
    p.add_argument("--out", type=Path, help="write NAME_benchmarks_DEVICE.json here")
    return p


def publish(result: dict[str, Any], table: str, *, name: str,
            args: argparse.Namespace) -> None:
    """Print TABLE; with --out, write RESULT (and the command that made it) as JSON."""
    result["command"] = (f"python -m study.bench.{name} --data-dir DATA --device {args.device} "
                         f"--reps {args.reps} --cpu-threads {args.cpu_threads}")
    print(table)
    if args.out is not None:
        path = args.out / f"{name}_benchmarks_{args.device}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
