"""Experiment tracking behind one small interface, with explicit MLflow run ids.

Nothing here uses MLflow's fluent active-run stack: every call names its run, so trials in
threads or processes can never log into each other's runs.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from optuna.trial import TrialState

from study.errors import TrackingError
from study.training import EpochMetrics

logger = logging.getLogger(__name__)

# The truth about a trial, in MLflow's words.
RUN_STATUS = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAIL: "FAILED",
}
CHECKPOINT_PATH = "checkpoint/model_state.pt"
StateDict = dict[str, torch.Tensor]


class Tracker(Protocol):
    def start_study(self, *, study_name: str, params: Mapping[str, Any],
                    tags: Mapping[str, str]) -> None: ...
    def start_trial(self, *, number: int, params: Mapping[str, Any]) -> str: ...
    def log_epoch(self, run_id: str, metrics: EpochMetrics) -> None: ...
    def end_trial(self, run_id: str, *, state: TrialState, tags: Mapping[str, str]) -> None: ...
    def save_checkpoint(self, run_id: str, state: StateDict) -> None: ...
    def load_checkpoint(self, run_id: str) -> StateDict: ...
    def log_study_result(self, *, metrics: Mapping[str, float], params: Mapping[str, Any],
                         tags: Mapping[str, str]) -> None: ...
    def end_study(self, *, status: str) -> None: ...


class NullTracker:
    """Tracking off: the loop never branches on 'is logging on'. Checkpoints stay in memory."""

    def __init__(self) -> None:
        self._checkpoints: dict[str, StateDict] = {}

    def start_study(self, *, study_name: str, params: Mapping[str, Any],
                    tags: Mapping[str, str]) -> None:
        pass

    def start_trial(self, *, number: int, params: Mapping[str, Any]) -> str:
        return f"untracked-{number}"

    def log_epoch(self, run_id: str, metrics: EpochMetrics) -> None:
        pass

    def end_trial(self, run_id: str, *, state: TrialState, tags: Mapping[str, str]) -> None:
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

    def end_study(self, *, status: str) -> None:
        pass


def artifact_root_for(tracking_uri: str) -> Path | None:
    """Local stores keep artifacts beside the database; servers decide for themselves."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
    return None


def experiment_artifact_location(tracking_uri: str, experiment_name: str) -> str | None:
    root = artifact_root_for(tracking_uri)
    if root is None:
        return None
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment_name)
    return (root / safe).resolve().as_uri()


class MlflowTracker:
    """One experiment per study, one parent run per invocation, one child run per trial."""

    def __init__(self, tracking_uri: str) -> None:
        from mlflow import MlflowClient  # heavy import, only when tracking is on

        self.tracking_uri = tracking_uri
        _prepare_store(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = ""
        self.parent_run_id = ""

    def start_study(self, *, study_name: str, params: Mapping[str, Any],
                    tags: Mapping[str, str]) -> None:
        self.experiment_id = self._experiment(study_name)
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{study_name}@{time.strftime('%Y%m%d-%H%M%S')}",
            tags={"optuna.study_name": study_name, "mnist_study.role": "study", **tags},
        )
        self.parent_run_id = run.info.run_id
        self._log(self.parent_run_id, params=params)

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                location = experiment_artifact_location(self.tracking_uri, name)
                try:
                    return self.client.create_experiment(name, artifact_location=location)
                except MlflowException:
                    # Another worker created it between our look-up and create: use theirs.
                    found = self.client.get_experiment_by_name(name)
                    if found is None:
                        raise
        except MlflowException as exc:
            raise TrackingError(f"MLflow tracking store {self.tracking_uri} refused: "
                                f"{exc.message.splitlines()[0]}") from exc
        if found.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment {name!r} is deleted in {self.tracking_uri}; restore it "
                f"(mlflow experiments restore --experiment-id {found.experiment_id}) or use "
                f"another --study-name"
            )
        return str(found.experiment_id)

    def start_trial(self, *, number: int, params: Mapping[str, Any]) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number:04d}",
            tags={"mlflow.parentRunId": self.parent_run_id, "optuna.trial_number": str(number),
                  "optuna.state": "RUNNING", "mnist_study.role": "trial"},
        )
        self._log(run.info.run_id, params=params)
        return str(run.info.run_id)

    def log_epoch(self, run_id: str, metrics: EpochMetrics) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # One batched write per epoch, never one per metric or per step.
        self.client.log_batch(run_id, metrics=[
            Metric(key, value, now, metrics.epoch) for key, value in metrics.as_dict().items()
        ])

    def end_trial(self, run_id: str, *, state: TrialState, tags: Mapping[str, str]) -> None:
        self._log(run_id, tags={"optuna.state": state.name, **tags})
        self.client.set_terminated(run_id, status=RUN_STATUS.get(state, "FAILED"))

    def save_checkpoint(self, run_id: str, state: StateDict) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(CHECKPOINT_PATH).name
            torch.save(state, path)
            self.client.log_artifact(run_id, str(path),
                                     artifact_path=str(Path(CHECKPOINT_PATH).parent))

    def load_checkpoint(self, run_id: str) -> StateDict:
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(run_id, CHECKPOINT_PATH, tmp)
            except (MlflowException, OSError) as exc:
                raise TrackingError(f"cannot load the checkpoint of MLflow run {run_id} from "
                                    f"{self.tracking_uri}: {exc}") from exc
            return dict(torch.load(local, map_location="cpu", weights_only=True))

    def log_study_result(self, *, metrics: Mapping[str, float], params: Mapping[str, Any],
                         tags: Mapping[str, str]) -> None:
        self._log(self.parent_run_id, metrics=metrics, params=params, tags=tags)

    def end_study(self, *, status: str) -> None:
        if self.parent_run_id:
            self.client.set_terminated(self.parent_run_id, status=status)

    def _log(self, run_id: str, *, params: Mapping[str, Any] | None = None,
             metrics: Mapping[str, float] | None = None,
             tags: Mapping[str, str] | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
            params=[Param(k, str(v)) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )


def _prepare_store(tracking_uri: str) -> None:
    """Create the local store's folder, or check that a tracking server answers, quickly."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return
    if tracking_uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=10):
                return
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(f"MLflow tracking server {tracking_uri} does not answer "
                                f"({exc}); start it or pass another --tracking-uri") from exc
    if tracking_uri.startswith("file:") or "://" not in tracking_uri:
        raise TrackingError(
            f"tracking URI {tracking_uri!r} is a file store, which MLflow 3 no longer accepts; "
            f"use sqlite:///path/mlflow.db or an http:// tracking server"
        )
