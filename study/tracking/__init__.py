"""Experiment tracking behind one small interface, with explicit MLflow run ids."""

from __future__ import annotations

from study.tracking.mlflow_tracker import (
    CHECKPOINT_PATH,
    EXPERIMENT_KIND,
    OBJECTIVE_METRICS,
    RUN_STATUS,
    MlflowTracker,
    NullTracker,
    StateDict,
    Tracker,
    apply_op,
    artifact_root_for,
    bound_http_waits,
    check_tracking_uri,
    experiment_artifact_location,
    trial_run_name,
)

__all__ = [
    "CHECKPOINT_PATH",
    "EXPERIMENT_KIND",
    "OBJECTIVE_METRICS",
    "RUN_STATUS",
    "MlflowTracker",
    "NullTracker",
    "StateDict",
    "Tracker",
    "apply_op",
    "artifact_root_for",
    "bound_http_waits",
    "check_tracking_uri",
    "experiment_artifact_location",
    "trial_run_name",
]
