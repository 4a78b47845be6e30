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

import importlib
from typing import TYPE_CHECKING, Any

from study.tracking.layout import (
    CHECKPOINT_PATH,
    EXPERIMENT_KIND,
    OBJECTIVE_METRICS,
    RUN_STATUS,
    trial_run_name,
)
from study.tracking.ops import apply_op
from study.tracking.store import (
    artifact_root_for,
    bound_http_waits,
    experiment_artifact_location,
)

if TYPE_CHECKING:
    from study.tracking.mlflow_tracker import MlflowTracker
    from study.tracking.null import NullTracker
    from study.tracking.protocol import StateDict, Tracker

# The trackers hold tensors: imported on first use, so that a reader of a study's layout (the
# report, `mnist-study report`) loads no torch.
_LAZY = {"MlflowTracker": "mlflow_tracker", "NullTracker": "null", "StateDict": "protocol",
         "Tracker": "protocol"}

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


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value
