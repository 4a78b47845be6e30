"""The MLflow store a URI names: checked before use, created under a lock, waits bounded."""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from study.errors import TrackingError
from study.store.store_checks import check_tracking_uri


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


def bound_http_waits(total_seconds: float) -> None:
    """Cap how long one MLflow HTTP call may wait for a server that is gone.

    MLflow's defaults (7 retries, exponential backoff, 120 s per request) add up to minutes per
    call. Three attempts with 1 s and 2 s backoffs, each with a timeout of a third of what is
    left, keep a call under TOTAL_SECONDS even when the server hangs instead of refusing.
    """
    per_request = max(1, int((total_seconds - 4) / 3))
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                       "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                       "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
                       "MLFLOW_HTTP_REQUEST_TIMEOUT": str(per_request)})


@contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive lock beside a local SQLite store, held while MLflow creates its schema."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(tracking_uri.removeprefix("sqlite:///") + ".lock")
    try:
        lock = lock_path.open("a")
    except OSError as exc:
        raise TrackingError(f"cannot create the lock file {lock_path} beside the MLflow store "
                            f"({exc.strerror or exc}); pass another --tracking-uri") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def prepare_store(tracking_uri: str) -> None:
    """Check the tracking URI, then create the local store's folder."""
    check_tracking_uri(tracking_uri)
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


