"""MlflowTracker: the Tracker that writes to an MLflow store.

Nothing here uses MLflow's fluent active-run stack: every call names its run, so trials in
threads or processes can never log into each other's runs.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from optuna.trial import TrialState

from study.errors import TrackingError
from study.store.record import FINDINGS_ARTIFACT
from study.store.redaction import redact, redact_text
from study.tracking.layout import (
    BASELINE_NUMBER,
    CHECKPOINT_PATH,
    EXPERIMENT_KIND,
    OBJECTIVE_METRICS,
    RUN_STATUS,
    finding_tags,
    run_name,
    trial_run_name,
)
from study.tracking.ops import batch_op
from study.tracking.outbox import Outbox
from study.tracking.protocol import StateDict
from study.tracking.registration import register_model
from study.tracking.spool import Spool, is_spooled, read_ops, study_spool_dir
from study.tracking.store import (
    bound_http_waits,
    experiment_artifact_location,
    prepare_store,
    store_lock,
)
from study.tracking.writer import BackgroundWriter
from study.train.engine_types import EpochMetrics

if TYPE_CHECKING:
    from mlflow import MlflowClient


class MlflowTracker:
    """One experiment per study, one parent run per invocation, one child run per trial.

    Per-epoch metrics and trial params are written by a background thread (an SQLite commit
    costs about what a GPU epoch does: docs/benchmarks.md); end_trial and end_study wait for
    those writes, so a run's final status is only set once everything it logged is stored.

    When a tracking server stops answering mid-study, the tracker goes *offline* for the rest
    of the process: each call waits at most TRACKING_TIMEOUT seconds once, then this and every
    later operation is appended to the study's spool (outbox.py) and training goes on.
    `backfill` replays spools into the store: `mnist-study sync-mlflow`, and every `run`.
    """

    def __init__(self, tracking_uri: str, *, spool_root: Path = Path("mlflow/spool"),
                 tracking_timeout: float = 30.0) -> None:
        from mlflow import MlflowClient  # heavy import, only when tracking is on

        self.tracking_uri = tracking_uri
        self.spool_root = spool_root
        bound_http_waits(tracking_timeout)
        prepare_store(tracking_uri)
        with store_lock(tracking_uri):  # one process at a time creates/migrates a new store
            self.client = MlflowClient(tracking_uri=tracking_uri)
            self.client.search_experiments(max_results=1)  # forces the schema now, under the lock
        self.experiment_id = ""
        self.parent_run_id = ""
        self._outbox = Outbox(self.client, tracking_uri)
        self._writer = BackgroundWriter(self._outbox.send)

    @property
    def outage(self) -> str:
        return self._outbox.outage

    @property
    def spool_dir(self) -> Path | None:
        spool = self._outbox.spool
        return spool.directory if spool is not None else None

    def attach(self, study_name: str) -> None:
        """Use STUDY_NAME's experiment and spool without starting a run (for back-fills)."""
        self.experiment_id = self._experiment(study_name)
        self._outbox.spool = Spool(study_spool_dir(self.spool_root, study_name))

    def start_study(self, *, study_name: str, params: Mapping[str, Any],
                    tags: Mapping[str, str]) -> None:
        self.attach(study_name)
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{study_name}@{time.strftime('%Y%m%d-%H%M%S')}",
            tags={"optuna.study_name": study_name, "mnist_study.role": "study", **tags},
        )
        self.parent_run_id = run.info.run_id
        self._outbox.send(batch_op(self.parent_run_id, params=params))

    def backfill(self) -> dict[str, str]:
        """Replay this study's spools (earlier processes') into the store: key -> run id."""
        return self._outbox.backfill()

    def remember_runs(self, runs: Mapping[str, str]) -> None:
        """Spool keys that a replay elsewhere turned into run ids (from the Optuna study)."""
        self._outbox.remember_runs(runs)

    def reader(self) -> MlflowClient:
        self._writer.flush()  # every epoch submitted so far is readable
        return self.client

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.get_experiment_by_name(name)
            if found is None:
                location = experiment_artifact_location(self.tracking_uri, name)
                try:
                    return self.client.create_experiment(name, artifact_location=location,
                                                         tags=EXPERIMENT_KIND)
                except MlflowException:
                    # Another worker created it between our look-up and create: use theirs.
                    found = self.client.get_experiment_by_name(name)
                    if found is None:
                        raise
        except MlflowException as exc:
            raise TrackingError(f"MLflow tracking store {redact(self.tracking_uri)} refused: "
                                f"{exc.message.splitlines()[0]}") from exc
        if found.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment {name!r} is deleted in {redact(self.tracking_uri)}; restore "
                f"it (mlflow experiments restore --experiment-id {found.experiment_id}) or use "
                f"another --study-name"
            )
        if found.tags.get("mlflow.experimentKind") is None:  # made before the tag existed
            for key, value in EXPERIMENT_KIND.items():
                self.client.set_experiment_tag(found.experiment_id, key, value)
        return str(found.experiment_id)

    def start_trial(self, *, number: int, params: Mapping[str, Any],
                    tags: Mapping[str, str] | None = None) -> str:
        spool = self._outbox.spool
        assert spool is not None, "start_study first"
        key = spool.new_key()
        run_id = self._outbox.send({
            "op": "create_run", "key": key, "experiment_id": self.experiment_id,
            "run_name": run_name(number),
            "tags": {**(tags or {}), "mlflow.parentRunId": self.parent_run_id,
                     "optuna.trial_number": str(number), "optuna.state": "RUNNING",
                     "mnist_study.role": "baseline" if number == BASELINE_NUMBER
                     else "trial"}}) or key
        self._writer.submit(batch_op(run_id, params=params))
        return run_id

    def log_epoch(self, run_id: str, metrics: EpochMetrics, *, prefix: str = "") -> None:
        # One batched write per epoch, never one per metric or per step, and not on this thread.
        named = {f"{prefix}{name}": value for name, value in metrics.as_dict().items()}
        self._writer.submit(batch_op(run_id, metrics=named, step=metrics.epoch))

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int) -> None:
        """METRICS at STEP in one batched write (cross-validation's per-fold names)."""
        self._outbox.send(batch_op(run_id, metrics=metrics, step=step))

    def flush(self) -> None:
        """Wait until every write submitted so far is stored (end_trial does it itself)."""
        self._writer.flush()

    def end_trial(self, run_id: str, *, number: int, state: TrialState,
                  attrs: Mapping[str, Any],
                  findings: Sequence[Mapping[str, Any]] = ()) -> None:
        """End trial NUMBER's run: ATTRS (the trial's user attrs) as `optuna.*` tags, its
        objective as metrics the runs table sorts by, its state in its name and status, and
        FINDINGS as findings.json (with one `optuna.finding.<kind>` tag each kind)."""
        self._writer.flush()  # the run's metrics are stored before its status says it ended
        if findings:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / FINDINGS_ARTIFACT
                path.write_text(json.dumps(list(findings), indent=1, default=float))
                self._outbox.send({"op": "artifact", "run": run_id, "file": str(path),
                                   "artifact_path": None})
        self._outbox.send(batch_op(
            run_id, tags={"optuna.state": state.name,
                          **{f"optuna.{k}": str(v) for k, v in attrs.items()},
                          **finding_tags(findings)},
            metrics={k: float(attrs[k]) for k in OBJECTIVE_METRICS if k in attrs}))
        self._outbox.send({"op": "rename", "run": run_id,
                           "name": trial_run_name(number, state, attrs.get("epochs_trained"),
                                                  attrs.get("stopped_epoch"))})
        self._outbox.send({"op": "terminate", "run": run_id,
                           "status": RUN_STATUS.get(state, "FAILED")})

    def save_checkpoint(self, run_id: str, state: StateDict) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(CHECKPOINT_PATH).name
            torch.save(state, path)
            self._outbox.send({"op": "artifact", "run": run_id, "file": str(path),
                               "artifact_path": str(Path(CHECKPOINT_PATH).parent)})

    def load_checkpoint(self, run_id: str) -> StateDict:
        from mlflow.exceptions import MlflowException

        run_id = self._outbox.run_id(run_id)
        if is_spooled(run_id):  # never reached the store: it is in a spool on this machine
            return self._spooled_checkpoint(run_id)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(run_id, CHECKPOINT_PATH, tmp)
            except (MlflowException, OSError) as exc:
                raise TrackingError(f"cannot load the checkpoint of MLflow run {run_id} from "
                                    f"{redact(self.tracking_uri)}: "
                                    f"{redact_text(str(exc)).splitlines()[0]}") from exc
            return dict(torch.load(local, map_location="cpu", weights_only=True))

    def _spooled_checkpoint(self, key: str) -> StateDict:
        directory = self.spool_dir
        for path in sorted(directory.glob("*.jsonl")) if directory is not None else []:
            for op in read_ops(path):
                if op["op"] == "artifact" and op["run"] == key:
                    return dict(torch.load(directory / op["file"], map_location="cpu",
                                           weights_only=True))
        raise TrackingError(f"the checkpoint of trial run {key} was spooled by a worker on "
                            f"another machine; run `mnist-study sync-mlflow` there first")

    def log_study_result(self, *, metrics: Mapping[str, float], params: Mapping[str, Any],
                         tags: Mapping[str, str]) -> None:
        self._outbox.send(batch_op(self.parent_run_id, metrics=metrics, params=params, tags=tags))

    def log_study_artifacts(self, directory: Path) -> None:
        """DIRECTORY's files, sub-folders kept, at the root of the parent run's artifacts."""
        for file in sorted(p for p in directory.rglob("*") if p.is_file()):
            folder = file.parent.relative_to(directory).as_posix()
            self._outbox.send({"op": "artifact", "run": self.parent_run_id, "file": str(file),
                               "artifact_path": None if folder == "." else folder})

    def log_study_model(self, model: torch.nn.Module, *, registered_name: str,
                        input_example: np.ndarray, params: Mapping[str, Any],
                        metadata: Mapping[str, Any], model_code: Path,
                        model_config: Mapping[str, Any], code_paths: Sequence[Path]) -> str:
        """MODEL registered as a new version of REGISTERED_NAME, logged in the parent run
        (registration.py); returns its models:/ URI."""
        return register_model(
            self.client, model, tracking_uri=self.tracking_uri, experiment_id=self.experiment_id,
            run_id=self.parent_run_id, registered_name=registered_name,
            input_example=input_example, params=params, metadata=metadata, model_code=model_code,
            model_config=model_config, code_paths=code_paths)

    def end_study(self, *, status: str) -> None:
        self._writer.flush()
        if self.parent_run_id:
            self._outbox.send({"op": "terminate", "run": self.parent_run_id, "status": status})

    def close_dead_runs(self, run_ids: Sequence[str], *, tags: Mapping[str, str]) -> None:
        """Make runs whose process is gone say FAILED, with TAGS saying why.

        A worker killed mid-trial leaves its trial's run (and its own parent run) RUNNING; one
        killed between ending its run and recording the result leaves it FINISHED while Optuna
        says FAIL. Runs only spooled on another machine are that machine's sync to close.
        """
        if self.outage:
            return  # the next run, or sync-mlflow, closes them once the server answers
        for run_id in (self._outbox.run_id(r) for r in run_ids):
            if is_spooled(run_id) or self.client.get_run(run_id).info.status == "FAILED":
                continue
            self._outbox.send(batch_op(run_id, tags=tags))
            self._outbox.send({"op": "terminate", "run": run_id, "status": "FAILED"})
