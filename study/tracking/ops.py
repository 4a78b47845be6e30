"""Tracker operations (the spool's op model, see study.tracking.spool): built here, applied
to MLflow.

Every write the tracker makes is one of these plain dicts, whether it reaches the store at
once or waits in a spool: one format, so a replay performs exactly what the run would have.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from study.errors import TrackingError
from study.tracking.spool import SPOOL_KEY_TAG, Op


def batch_op(run_id: str, *, params: Mapping[str, Any] | None = None,
             metrics: Mapping[str, float] | None = None, step: int = 0,
             tags: Mapping[str, str] | None = None) -> Op:
    """One `log_batch` operation: PARAMS, METRICS at STEP (timestamped now) and TAGS."""
    now = int(time.time() * 1000)
    return {"op": "log_batch", "run": run_id,
            "metrics": [[k, float(v), now, step] for k, v in (metrics or {}).items()],
            "params": {k: str(v) for k, v in (params or {}).items()},
            "tags": {k: str(v) for k, v in (tags or {}).items()}}


def apply_op(client: Any, op: Op, runs: Mapping[str, str], *, spool_dir: Path | None) -> str | None:
    """Perform one tracker operation (see study.tracking.spool) on CLIENT; the run id it created.

    RUNS maps the keys of runs created from a spool to their MLflow ids. SPOOL_DIR is set when
    OP is replayed from a spool: such a run is looked up by its key tag before it is created,
    so a replay cut short never makes it twice; a run created directly carries no such tag.
    """
    from mlflow.entities import Metric, Param, RunTag

    run = runs.get(op.get("run", ""), op.get("run", ""))
    kind = op["op"]
    if kind == "create_run":
        tags = {k: runs.get(v, v) for k, v in op["tags"].items()}
        if spool_dir is not None:  # a replay: the run may exist from one that was cut short
            found = client.search_runs([op["experiment_id"]], max_results=1,
                                       filter_string=f"tags.`{SPOOL_KEY_TAG}` = '{op['key']}'")
            if found:
                return str(found[0].info.run_id)
            tags[SPOOL_KEY_TAG] = op["key"]
        created = client.create_run(op["experiment_id"], run_name=op["run_name"], tags=tags)
        return str(created.info.run_id)
    if kind == "log_batch":
        client.log_batch(run, metrics=[Metric(k, float(v), int(t), int(s))
                                       for k, v, t, s in op.get("metrics", [])],
                         params=[Param(k, str(v)) for k, v in op.get("params", {}).items()],
                         tags=[RunTag(k, str(v)) for k, v in op.get("tags", {}).items()])
    elif kind == "terminate":
        client.set_terminated(run, status=op["status"])
    elif kind == "rename":
        client.update_run(run, name=op["name"])
    elif kind == "artifact":
        file = Path(op["file"]) if spool_dir is None else spool_dir / op["file"]
        client.log_artifact(run, str(file), artifact_path=op["artifact_path"])
    else:
        raise TrackingError(f"unknown tracker operation {kind!r} in the spool")
    return None
