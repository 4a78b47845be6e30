"""The one interface every caller tracks through, and the types it speaks.

Callers (the objective, cross-validation, the runner, publishing, the benchmarks) hold a
`Tracker` and use nothing else of it: whatever they need is declared here, so a fake in a test
or a wrapper in a benchmark is checked by mypy against the same contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from optuna.trial import TrialState

from study.train.engine_types import EpochMetrics

StateDict = dict[str, torch.Tensor]


class Tracker(Protocol):
    """One study per invocation (a parent run), one run per trial, ids always explicit."""

    @property
    def parent_run_id(self) -> str:
        """This invocation's run: "" until start_study; also names the worker in Optuna."""
        ...

    @property
    def outage(self) -> str:
        """Why the tracking server stopped answering mid-run (one line); "" while it answers."""
        ...

    @property
    def spool_dir(self) -> Path | None:
        """Where this study's unsent operations are kept; None before start_study or untracked."""
        ...

    def start_study(self, *, study_name: str, params: Mapping[str, Any],
                    tags: Mapping[str, str]) -> None:
        """Open STUDY_NAME's experiment and start this invocation's parent run with PARAMS."""
        ...

    def start_trial(self, *, number: int, params: Mapping[str, Any],
                    tags: Mapping[str, str] | None = None) -> str:
        """Start trial NUMBER's run under the parent; its id, for every later call about it."""
        ...

    def log_epoch(self, run_id: str, metrics: EpochMetrics, *, prefix: str = "") -> None:
        """One epoch's metrics at step EPOCH, each name after PREFIX ('fold2/'); may be written
        later, but before end_trial ends the run."""
        ...

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int) -> None:
        """METRICS at STEP in one write (cross-validation's per-fold names)."""
        ...

    def end_trial(self, run_id: str, *, number: int, state: TrialState,
                  attrs: Mapping[str, Any],
                  findings: Sequence[Mapping[str, Any]] = ()) -> None:
        """End the run once all it logged is stored: STATE as its status, ATTRS as tags,
        FINDINGS (each with its evidence) as the run's findings.json and one tag per kind."""
        ...

    def save_checkpoint(self, run_id: str, state: StateDict) -> None:
        """Keep STATE as the run's checkpoint, for load_checkpoint in this or a later process."""
        ...

    def load_checkpoint(self, run_id: str) -> StateDict:
        """The state saved for RUN_ID on the CPU; TrackingError saying why when there is none."""
        ...

    def log_study_result(self, *, metrics: Mapping[str, float], params: Mapping[str, Any],
                         tags: Mapping[str, str]) -> None:
        """The study's outcome on the parent run."""
        ...

    def log_study_artifacts(self, directory: Path) -> None:
        """DIRECTORY's files, sub-folders kept, as the parent run's artifacts."""
        ...

    def log_study_model(self, model: torch.nn.Module, *, registered_name: str,
                        input_example: np.ndarray, params: Mapping[str, Any],
                        metadata: Mapping[str, Any], model_code: Path,
                        model_config: Mapping[str, Any], code_paths: Sequence[Path]) -> str:
        """Register MODEL (CPU, eval mode) as a version of REGISTERED_NAME: its models:/ URI,
        or "" when nothing is registered."""
        ...

    def end_study(self, *, status: str) -> None:
        """Wait for every pending write, then end the parent run with STATUS."""
        ...

    def close_dead_runs(self, run_ids: Sequence[str], *, tags: Mapping[str, str]) -> None:
        """Mark runs whose process is gone FAILED, with TAGS saying why; a no-op offline."""
        ...

    def backfill(self) -> dict[str, str]:
        """Replay earlier processes' spools into the store: spool key -> run id, all known."""
        ...

    def remember_runs(self, runs: Mapping[str, str]) -> None:
        """Spool keys that a replay elsewhere turned into run ids (kept in the Optuna study)."""
        ...

    def reader(self) -> Any:
        """An MlflowClient that reads back what was logged (the study report's curves and
        audit), or None where nothing is logged."""
        ...
