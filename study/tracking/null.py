"""Tracking off: a Tracker that stores nothing, so the loop never branches on 'is logging on'."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from optuna.trial import TrialState

from study.errors import TrackingError
from study.tracking.protocol import StateDict
from study.train.engine_types import EpochMetrics


class NullTracker:
    """Every call a no-op, except checkpoints: kept in memory so the best trial can be tested."""

    parent_run_id = ""
    outage = ""
    spool_dir: Path | None = None

    def __init__(self) -> None:
        self._checkpoints: dict[str, StateDict] = {}

    def start_study(self, *, study_name: str, params: Mapping[str, Any],
                    tags: Mapping[str, str]) -> None:
        pass

    def start_trial(self, *, number: int, params: Mapping[str, Any],
                    tags: Mapping[str, str] | None = None) -> str:
        return f"untracked-{number}"

    def log_epoch(self, run_id: str, metrics: EpochMetrics, *, prefix: str = "") -> None:
        pass

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int) -> None:
        pass

    def end_trial(self, run_id: str, *, number: int, state: TrialState,
                  attrs: Mapping[str, Any],
                  findings: Sequence[Mapping[str, Any]] = ()) -> None:
        pass

    def save_checkpoint(self, run_id: str, state: StateDict) -> None:
        self._checkpoints[run_id] = state

    def load_checkpoint(self, run_id: str) -> StateDict:
        if run_id not in self._checkpoints:
            raise TrackingError(f"no checkpoint for run {run_id}: tracking was off when that "
                                f"trial ran in another process; rerun with MLflow tracking")
        return self._checkpoints[run_id]

    def log_study_result(self, *, metrics: Mapping[str, float], params: Mapping[str, Any],
                         tags: Mapping[str, str]) -> None:
        pass

    def log_study_artifacts(self, directory: Path) -> None:
        pass

    def log_study_model(self, model: torch.nn.Module, *, registered_name: str,
                        input_example: np.ndarray, params: Mapping[str, Any],
                        metadata: Mapping[str, Any], model_code: Path,
                        model_config: Mapping[str, Any], code_paths: Sequence[Path]) -> str:
        return ""  # nothing registered: there is no registry without tracking

    def end_study(self, *, status: str) -> None:
        pass

    def close_dead_runs(self, run_ids: Sequence[str], *, tags: Mapping[str, str]) -> None:
        pass

    def backfill(self) -> dict[str, str]:
        return {}

    def remember_runs(self, runs: Mapping[str, str]) -> None:
        pass

    def reader(self) -> None:
        return None
