"""Section 1: seconds per epoch of the seed MLP, project data path vs the DataLoader path.

Same model (784-128-10, dropout), same optimizer (SGD with momentum, fused as the project
builds it), same split, same epochs; an epoch is the training pass plus the validation pass.
Repetitions are interleaved (conventional, project, ... for every batch size, then again) so
that load from other processes on a shared machine hits both paths alike. On the CPU, both
paths also run at torch's default thread count, idle and beside one CPU-bound process of ours:
the evidence for the project's default of one intra-op thread.
"""

from __future__ import annotations

import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import models
from data_pipeline import SearchData, find_mnist, prepare_search_data
from study.bench import conventional
from study.bench.settings import BenchSettings
from study.config import StudyConfig
from study.train.engine_types import Hyperparams, TrainOptions
from study.train.training import build_optimizer
from study.train.trial import train

logger = logging.getLogger(__name__)

SEED_LR, SEED_MOMENTUM, SEED_DROPOUT = 0.01, 0.9, 0.2  # the seed script's SGD


@dataclass(frozen=True)
class Variant:
    name: str
    path: str  # "conventional" or "project"
    threads: int
    options: TrainOptions = TrainOptions()
    first_rep_only: bool = False  # slow variants that only show an effect
    busy: int = 0  # CPU-bound processes running beside: a machine shared with other jobs


def variants(settings: BenchSettings, default_threads: int) -> list[Variant]:
    threads = settings.cpu_threads or default_threads
    out = [Variant("conventional DataLoader", "conventional", threads),
           Variant("project", "project", threads)]
    if settings.device == "cuda":
        out += [Variant("project bf16", "project", threads, TrainOptions(amp="bf16")),
                Variant("project bf16 + compile", "project", threads,
                        TrainOptions(amp="bf16", compile_mode="default"))]
        return out
    if not settings.quick:  # compiling takes longer than the whole quick run
        # torch.compile on the CPU, to show whether it pays (compiled once, reused by all reps).
        out.append(Variant("project + torch.compile", "project", threads,
                           TrainOptions(compile_mode="default")))
    if threads != default_threads:
        # The thread setting is part of the fast path: show both paths at torch's default.
        out += [Variant(f"conventional, {default_threads} threads", "conventional",
                        default_threads, first_rep_only=True),
                Variant(f"project, {default_threads} threads", "project", default_threads,
                        first_rep_only=True)]
        out += [Variant(f"{path}, {n} thread{'s' * (n > 1)}, 1 busy process", path, n,
                        first_rep_only=True, busy=1)
                for path in ("conventional", "project") for n in (threads, default_threads)]
    return out


@contextmanager
def _busy_processes(n: int) -> Iterator[None]:
    """N processes spinning on a core each for the duration: reproducible contention."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def seed_hyperparams(batch_size: int) -> Hyperparams:
    return Hyperparams(lr=SEED_LR, optimizer="sgd", batch_size=batch_size, dropout=SEED_DROPOUT,
                       weight_decay=0.0, scheduler="none", momentum=SEED_MOMENTUM)


def run(settings: BenchSettings, *, torchvision_root: Path, default_threads: int) -> dict[str,
                                                                                          Any]:
    device = torch.device(settings.device)
    defaults = StudyConfig()
    files = find_mnist(settings.data_dir, verify=not settings.allow_noncanonical_data)
    assert files is not None, f"no MNIST in {settings.data_dir}"
    started = time.perf_counter()
    data = prepare_search_data(files, val_fraction=defaults.val_fraction, seed=settings.seed,
                               device=device)
    project_prep_s = time.perf_counter() - started
    started = time.perf_counter()
    conventional.mnist_dataset(torchvision_root)
    conventional_prep_s = time.perf_counter() - started
    measure = _Measure(settings, data, torchvision_root, device)
    chosen = variants(settings, default_threads)
    times: dict[tuple[str, int], list[float]] = {}
    for rep in range(settings.epoch_reps):
        for batch_size in settings.epoch_batch_sizes:
            for variant in chosen:
                if variant.first_rep_only and rep > 0:
                    continue
                with _busy_processes(variant.busy):
                    seconds = _with_threads(variant.threads,
                                            lambda: measure(variant, batch_size))
                times.setdefault((variant.name, batch_size), []).extend(seconds)
                logger.info("%s, batch %d: %s s/epoch", variant.name, batch_size,
                            [round(s, 2) for s in seconds])
    return _table(chosen, times, settings.epoch_batch_sizes,
                  {"project_s": project_prep_s, "conventional_s": conventional_prep_s},
                  train_images=len(data.fold(0).train),
                  val_images=len(data.fold(0).val))


@dataclass
class _Measure:
    settings: BenchSettings
    data: SearchData
    root: Path
    device: torch.device

    def __call__(self, variant: Variant, batch_size: int) -> list[float]:
        torch.manual_seed(self.settings.seed)
        hp = seed_hyperparams(batch_size)
        model = models.build("mlp", hidden=StudyConfig().hidden, dropout=hp.dropout)
        model = model.to(self.device)
        epochs = self.settings.epochs_per_rep
        if variant.path == "project":
            generator = torch.Generator().manual_seed(self.settings.seed)
            return [m.seconds for m in train(model, hp, self.data.fold(0), max_epochs=epochs,
                                             generator=generator, options=variant.options)]
        loaders = conventional.loaders(self.root, self.data.partition, batch_size)
        optimizer = build_optimizer(model, hp)
        return [conventional.timed_epoch(model, optimizer, loaders, self.device)
                for _ in range(epochs)]


def _with_threads(threads: int, measure: Callable[[], list[float]]) -> list[float]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return measure()
    finally:
        torch.set_num_threads(before)


def _table(chosen: list[Variant], times: dict[tuple[str, int], list[float]],
           batch_sizes: tuple[int, ...], prep: dict[str, float], *, train_images: int,
           val_images: int) -> dict[str, Any]:
    rows = [{"variant": v.name, "path": v.path, "threads": v.threads, "busy": v.busy,
             "amp": v.options.amp, "compile": v.options.compile_mode, "batch_size": bs,
             "seconds": times[(v.name, bs)], "median_s": statistics.median(times[(v.name, bs)])}
            for bs in batch_sizes for v in chosen if (v.name, bs) in times]
    project, baseline = chosen[1].name, chosen[0].name
    ratios = {str(bs): statistics.median(times[(baseline, bs)])
              / statistics.median(times[(project, bs)]) for bs in batch_sizes}
    return {"rows": rows, "speedup_vs_conventional": ratios, "data_prep": prep,
            "train_images": train_images, "val_images": val_images,
            "hyperparams": {"optimizer": "sgd", "lr": SEED_LR, "momentum": SEED_MOMENTUM,
                            "dropout": SEED_DROPOUT}}
