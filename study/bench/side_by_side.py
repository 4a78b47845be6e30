"""Epoch times of a few variants of one training run, interleaved: the loop behind the small
cost benchmarks (augmentation, signals). Torch alone, so it runs on a bare GPU machine."""

from __future__ import annotations

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
