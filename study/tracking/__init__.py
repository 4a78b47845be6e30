"""Experiment tracking behind one small interface, with explicit MLflow run ids.

    protocol.py        Tracker, the interface every caller holds, and StateDict
    null.py            NullTracker: tracking off, checkpoints in memory
    mlflow_tracker.py  MlflowTracker: experiments, runs, metrics, checkpoints
    layout.py          what a study looks like in MLflow: run names, statuses, tags
    store.py           a tracking URI checked, its local store created under a lock
    writer.py          the background thread that writes epochs off the training loop
    ops.py             tracker operations (the spool's format) and applying one to MLflow
    outbox.py          send an operation to the store, or spool it while the server is gone
    registration.py    the best model logged as a pyfunc model and registered
"""

from __future__ import annotations

from study.tracking.layout import (
    CHECKPOINT_PATH,
    EXPERIMENT_KIND,
    OBJECTIVE_METRICS,
    RUN_STATUS,
    trial_run_name,
)
from study.tracking.mlflow_tracker import MlflowTracker
from study.tracking.null import NullTracker
from study.tracking.ops import apply_op
from study.tracking.protocol import StateDict, Tracker
from study.tracking.store import (
    artifact_root_for,
    bound_http_waits,
    experiment_artifact_location,
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
    "experiment_artifact_location",
    "trial_run_name",
]
