"""What the benchmark runs: the full preset (about 35 minutes on 2 CPU cores) and --quick."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.search.search_space import OPTIMIZERS, SCHEDULERS, SearchSpace

# The reference study's space, the default before the budget plan (2026-12-02): one lr range
# for every optimizer, all six schedulers and batch sizes, no BatchNorm or augmentation. The
# sections that compare paths or pruners keep it (with no warm start and no early stopping),
# so their tables stay comparable with earlier runs; the budget section compares the default.
REFERENCE_SPACE = SearchSpace(lr=(1e-4, 3e-2), dropout=(0.0, 0.5), momentum=(0.8, 0.99),
                              batch_sizes=(32, 64, 128, 256, 512, 1024), optimizers=OPTIMIZERS,
                              schedulers=tuple(SCHEDULERS), norms=("none",), augments=("none",))


@dataclass(frozen=True)
class BenchSettings:
    data_dir: Path
    out_dir: Path
    workdir: Path  # stores, torchvision copy, study specs and results
    device: str  # "cpu" or "cuda", resolved
    cpu_threads: int  # the project's setting, used by both paths (0: torch's default)
    allow_noncanonical_data: bool
    quick: bool
    in_process: bool  # run studies in this process (tests); RSS then covers them all
    # 1. epoch time of the seed MLP
    epoch_batch_sizes: tuple[int, ...]
    epoch_reps: int  # interleaved repetitions: conventional, project, ... per batch size
    epochs_per_rep: int
    # 2-4. the reference study, shared by throughput, tracking and pruning
    n_trials: int
    max_epochs: int
    seed: int
    conventional_budget_s: float  # wall-time cap of the conventional study
    tracking_reps: int  # on/off pairs, run in the order on, off, off, on (drift cancels)
    # 5. time to target
    target_acc: float
    target_max_epochs: int
    target_trials: int
    target_budget_s: float
    # 6. profile of one trial
    profile_epochs: int
    profile_batch_size: int

    def to_json(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v
                for k, v in dataclasses.asdict(self).items()}


def preset(*, quick: bool, device: str, **paths_and_flags: Any) -> BenchSettings:
    """Full: the numbers in docs/benchmarks.md. Quick: seconds on synthetic data (CI smoke)."""
    gpu = device == "cuda"
    if quick:
        return BenchSettings(
            device=device, quick=True, epoch_batch_sizes=(64,), epoch_reps=1, epochs_per_rep=1,
            n_trials=3, max_epochs=2, seed=0, conventional_budget_s=60.0, tracking_reps=1,
            target_acc=0.5, target_max_epochs=2, target_trials=2, target_budget_s=60.0,
            profile_epochs=1, profile_batch_size=64, **paths_and_flags)
    return BenchSettings(
        device=device, quick=False,
        epoch_batch_sizes=(64, 256, 1024) if gpu else (64, 256), epoch_reps=5, epochs_per_rep=1,
        n_trials=20, max_epochs=8, seed=0,
        # A safety cap, not a cut: the conventional study runs all its trials (~11 min on 2
        # CPU cores), so both paths are judged on the same number of trials.
        conventional_budget_s=1800.0, tracking_reps=2,
        target_acc=0.98, target_max_epochs=15, target_trials=30, target_budget_s=300.0,
        profile_epochs=2, profile_batch_size=64, **paths_and_flags)
