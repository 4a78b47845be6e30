"""Experiment tracking behind one small interface, with explicit MLflow run ids.

Nothing here uses MLflow's fluent active-run stack: every call names its run, so trials in
threads or processes can never log into each other's runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import queue
import re
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from optuna.trial import TrialState

from study.errors import TrackingError
from study.redaction import ambiguous_password, redact, redact_text
from study.spool import (
    SPOOL_KEY_TAG,
    Op,
    Spool,
    is_spooled,
    known_runs,
    pending,
    read_ops,
    replay,
    study_spool_dir,
)
from study.training import EpochMetrics

logger = logging.getLogger(__name__)

# The truth about a trial, in MLflow's words.
RUN_STATUS = {
    TrialState.COMPLETE: "FINISHED",
    TrialState.PRUNED: "KILLED",
    TrialState.FAIL: "FAILED",
}
CHECKPOINT_PATH = "checkpoint/model_state.pt"
# A trial's objective as run metrics (step 0), so the runs table and charts sort by it.
OBJECTIVE_METRICS = ("best_val_loss", "best_val_acc", "best_epoch")
# Experiments open in MLflow's classic ML view (runs table, charts), not its GenAI overview.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
StateDict = dict[str, torch.Tensor]


class Tracker(Protocol):
    parent_run_id: str  # "" until start_study; the invocation's MLflow run
    outage: str  # why the tracking server stopped answering mid-run; "" while it answers

    @property
    def spool_dir(self) -> Path | None: ...  # where this study's unsent operations are kept

    def start_study(self, *, study_name: str, params: Mapping[str, Any],
                    tags: Mapping[str, str]) -> None: ...
    def start_trial(self, *, number: int, params: Mapping[str, Any],
                    tags: Mapping[str, str] | None = None) -> str: ...
    def log_epoch(self, run_id: str, metrics: EpochMetrics) -> None: ...
    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int) -> None: ...
    def end_trial(self, run_id: str, *, number: int, state: TrialState,
                  attrs: Mapping[str, Any]) -> None: ...
    def save_checkpoint(self, run_id: str, state: StateDict) -> None: ...
    def load_checkpoint(self, run_id: str) -> StateDict: ...
    def log_study_result(self, *, metrics: Mapping[str, float], params: Mapping[str, Any],
                         tags: Mapping[str, str]) -> None: ...
    def log_study_artifacts(self, directory: Path) -> None: ...
    def log_study_model(self, model: torch.nn.Module, *, registered_name: str,
                        input_example: np.ndarray, params: Mapping[str, Any],
                        metadata: Mapping[str, Any], model_code: Path,
                        model_config: Mapping[str, Any], code_paths: Sequence[Path]) -> str: ...
    def end_study(self, *, status: str) -> None: ...
    def close_dead_runs(self, run_ids: Sequence[str], *, tags: Mapping[str, str]) -> None: ...
    def backfill(self) -> dict[str, str]: ...
    def remember_runs(self, runs: Mapping[str, str]) -> None: ...


class NullTracker:
    """Tracking off: the loop never branches on 'is logging on'. Checkpoints stay in memory."""

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

    def log_epoch(self, run_id: str, metrics: EpochMetrics) -> None:
        pass

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int) -> None:
        pass

    def end_trial(self, run_id: str, *, number: int, state: TrialState,
                  attrs: Mapping[str, Any]) -> None:
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


class _BackgroundWriter:
    """Runs tracker operations in order on one daemon thread, off the training loop.

    An operation that fails for a reason other than an outage (outages are spooled by RUN)
    is raised, as a TrackingError, by the next submit() or flush(): nothing is lost silently.
    flush() is the point where everything submitted has been stored or spooled.
    """

    def __init__(self, run: Callable[[Op], object]) -> None:
        self._jobs: queue.Queue[Op] = queue.Queue()
        self._run = run
        self._error: BaseException | None = None
        threading.Thread(target=self._work, name="mlflow-writer", daemon=True).start()

    def submit(self, op: Op) -> None:
        self._raise_failure()
        self._jobs.put(op)

    def flush(self) -> None:
        self._jobs.join()
        self._raise_failure()

    def _work(self) -> None:
        while True:
            op = self._jobs.get()
            try:
                self._run(op)
            except BaseException as exc:  # handed over to the caller's thread, not swallowed
                self._error = self._error or exc
            finally:
                self._jobs.task_done()

    def _raise_failure(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise TrackingError(f"an MLflow write failed: {redact_text(str(error))}") from error


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


def apply_op(client: Any, op: Op, runs: Mapping[str, str], *, spool_dir: Path | None) -> str | None:
    """Perform one tracker operation (see study.spool) on CLIENT; the run id it created.

    RUNS maps the keys of runs created from a spool to their MLflow ids. A spooled run is
    looked up by its key tag before it is created, so a replay cut short never makes it twice.
    """
    from mlflow.entities import Metric, Param, RunTag

    run = runs.get(op.get("run", ""), op.get("run", ""))
    kind = op["op"]
    if kind == "create_run":
        tags = {k: runs.get(v, v) for k, v in op["tags"].items()}
        if is_spooled(op["key"]):
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


def trial_run_name(number: int, state: TrialState, epochs: object = None) -> str:
    """'trial-0017 pruned@2' (after epoch 2), 'trial-0018 failed in epoch 1', 'trial-0019
    complete': the state readable in the runs table, where KILLED and FAILED look alike."""
    label = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
             TrialState.FAIL: "failed"}.get(state, state.name.lower())
    if state == TrialState.COMPLETE or not isinstance(epochs, int):
        return f"trial-{number:04d} {label}"
    if state == TrialState.FAIL:  # it stopped inside the epoch after the last one it finished
        return f"trial-{number:04d} failed in epoch {epochs + 1}"
    return f"trial-{number:04d} {label}@{epochs}"


def _batch(run_id: str, *, params: Mapping[str, Any] | None = None,
           metrics: Mapping[str, float] | None = None, step: int = 0,
           tags: Mapping[str, str] | None = None) -> Op:
    now = int(time.time() * 1000)
    return {"op": "log_batch", "run": run_id,
            "metrics": [[k, float(v), now, step] for k, v in (metrics or {}).items()],
            "params": {k: str(v) for k, v in (params or {}).items()},
            "tags": {k: str(v) for k, v in (tags or {}).items()}}


class MlflowTracker:
    """One experiment per study, one parent run per invocation, one child run per trial.

    Per-epoch metrics and trial params are written by a background thread (an SQLite commit
    costs ~20 ms, a GPU epoch not much more); end_trial and end_study wait for those writes, so
    a run's final status is only set once everything it logged is stored.

    When a tracking server stops answering mid-study, the tracker goes *offline* for the rest
    of the process: each call waits at most TRACKING_TIMEOUT seconds once, then this and every
    later operation is appended to the study's spool (study.spool) and training goes on.
    `backfill` replays spools into the store: `mnist-study sync-mlflow`, and every `run`.
    """

    def __init__(self, tracking_uri: str, *, spool_root: Path = Path("mlflow/spool"),
                 tracking_timeout: float = 30.0) -> None:
        from mlflow import MlflowClient  # heavy import, only when tracking is on

        self.tracking_uri = tracking_uri
        self.spool_root = spool_root
        bound_http_waits(tracking_timeout)
        _prepare_store(tracking_uri)
        with _store_lock(tracking_uri):  # one process at a time creates/migrates a new store
            self.client = MlflowClient(tracking_uri=tracking_uri)
            self.client.search_experiments(max_results=1)  # forces the schema now, under the lock
        self.experiment_id = ""
        self.parent_run_id = ""
        self.outage = ""  # why the server stopped answering; "" while it answers
        self._spool: Spool | None = None
        self._runs: dict[str, str] = {}  # spool key -> run id, from replays
        self._offline_lock = threading.Lock()
        self._writer = _BackgroundWriter(self._execute)

    @property
    def spool_dir(self) -> Path | None:
        return self._spool.directory if self._spool is not None else None

    def attach(self, study_name: str) -> None:
        """Use STUDY_NAME's experiment and spool without starting a run (for back-fills)."""
        self.experiment_id = self._experiment(study_name)
        self._spool = Spool(study_spool_dir(self.spool_root, study_name))

    def start_study(self, *, study_name: str, params: Mapping[str, Any],
                    tags: Mapping[str, str]) -> None:
        self.attach(study_name)
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{study_name}@{time.strftime('%Y%m%d-%H%M%S')}",
            tags={"optuna.study_name": study_name, "mnist_study.role": "study", **tags},
        )
        self.parent_run_id = run.info.run_id
        self._execute(_batch(self.parent_run_id, params=params))

    def backfill(self) -> dict[str, str]:
        """Replay this study's spools (earlier processes') into the store: key -> run id.

        Runs only while the server answers; a failure is one TrackingError line, and the next
        backfill goes on where this one stopped.
        """
        assert self._spool is not None, "attach or start_study first"
        directory = self._spool.directory
        if pending(directory):
            try:
                result = replay(directory, lambda op, runs: apply_op(
                    self.client, op, runs, spool_dir=directory))
            except Exception as exc:
                raise TrackingError(
                    f"cannot back-fill the MLflow spool {directory} into "
                    f"{redact(self.tracking_uri)}: {redact_text(str(exc)).splitlines()[0]}; "
                    f"nothing is lost: run `mnist-study sync-mlflow` again once it answers"
                ) from exc
            logger.info("back-filled %d spooled MLflow operations (%d runs) from %s",
                        result.operations, len(result.runs_created), directory)
        self._runs.update(known_runs(directory))
        return dict(self._runs)

    def remember_runs(self, runs: Mapping[str, str]) -> None:
        """Spool keys that a replay elsewhere turned into run ids (from the Optuna study)."""
        self._runs.update(runs)

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
        assert self._spool is not None, "start_study first"
        key = self._spool.new_key()
        run_id = self._execute({
            "op": "create_run", "key": key, "experiment_id": self.experiment_id,
            "run_name": f"trial-{number:04d}",
            "tags": {**(tags or {}), "mlflow.parentRunId": self.parent_run_id,
                     "optuna.trial_number": str(number), "optuna.state": "RUNNING",
                     "mnist_study.role": "trial"}}) or key
        self._writer.submit(_batch(run_id, params=params))
        return run_id

    def log_epoch(self, run_id: str, metrics: EpochMetrics) -> None:
        # One batched write per epoch, never one per metric or per step, and not on this thread.
        self._writer.submit(_batch(run_id, metrics=metrics.as_dict(), step=metrics.epoch))

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int) -> None:
        """METRICS at STEP in one batched write (cross-validation's per-fold names)."""
        self._execute(_batch(run_id, metrics=metrics, step=step))

    def flush(self) -> None:
        """Wait until every write submitted so far is stored (end_trial does it itself)."""
        self._writer.flush()

    def end_trial(self, run_id: str, *, number: int, state: TrialState,
                  attrs: Mapping[str, Any]) -> None:
        """End trial NUMBER's run: ATTRS (the trial's user attrs) as `optuna.*` tags, its
        objective as metrics the runs table sorts by, its state in its name and status."""
        self._writer.flush()  # the run's metrics are stored before its status says it ended
        self._execute(_batch(
            run_id, tags={"optuna.state": state.name,
                          **{f"optuna.{k}": str(v) for k, v in attrs.items()}},
            metrics={k: float(attrs[k]) for k in OBJECTIVE_METRICS if k in attrs}))
        self._execute({"op": "rename", "run": run_id,
                       "name": trial_run_name(number, state, attrs.get("epochs_trained"))})
        self._execute({"op": "terminate", "run": run_id,
                       "status": RUN_STATUS.get(state, "FAILED")})

    def save_checkpoint(self, run_id: str, state: StateDict) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(CHECKPOINT_PATH).name
            torch.save(state, path)
            self._execute({"op": "artifact", "run": run_id, "file": str(path),
                           "artifact_path": str(Path(CHECKPOINT_PATH).parent)})

    def load_checkpoint(self, run_id: str) -> StateDict:
        from mlflow.exceptions import MlflowException

        run_id = self._runs.get(run_id, run_id)
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
        self._execute(_batch(self.parent_run_id, metrics=metrics, params=params, tags=tags))

    def log_study_artifacts(self, directory: Path) -> None:
        """DIRECTORY's files, sub-folders kept, at the root of the parent run's artifacts."""
        for file in sorted(p for p in directory.rglob("*") if p.is_file()):
            folder = file.parent.relative_to(directory).as_posix()
            self._execute({"op": "artifact", "run": self.parent_run_id, "file": str(file),
                           "artifact_path": None if folder == "." else folder})

    def log_study_model(self, model: torch.nn.Module, *, registered_name: str,
                        input_example: np.ndarray, params: Mapping[str, Any],
                        metadata: Mapping[str, Any], model_code: Path,
                        model_config: Mapping[str, Any], code_paths: Sequence[Path]) -> str:
        """MODEL as an MLflow pyfunc model of the parent run, registered as a new version of
        REGISTERED_NAME; returns its models:/ URI. MODEL must be on the CPU in eval mode.

        Models-from-code, nothing pickled: MODEL_CODE (a file calling mlflow.models.set_model)
        rebuilds the network from MODEL_CONFIG with the CODE_PATHS shipped beside it, and reads
        MODEL's state dict, stored as the artifact 'weights', with torch.load(weights_only=True).
        """
        import mlflow.pyfunc
        import mlflow.pytorch
        from mlflow.models import Model, infer_signature

        with torch.inference_mode():
            output = model(torch.from_numpy(input_example)).numpy()
        # Created here, in the study's experiment: log_model alone would pick the fluent one.
        logged = self.client.create_logged_model(
            self.experiment_id, name="model", source_run_id=self.parent_run_id,
            params={k: str(v) for k, v in params.items()})
        with tempfile.TemporaryDirectory() as tmp, _global_tracking_uri(self.tracking_uri):
            weights = Path(tmp) / "weights.pt"
            torch.save(model.state_dict(), weights)
            # Model.log is what pyfunc.log_model calls, minus the fluent run: it takes run_id.
            # MLflow prints "Successfully registered model..." itself; the runner says it once.
            with contextlib.redirect_stderr(io.StringIO()):
                info = Model.log(
                    artifact_path=None, name="model", flavor=mlflow.pyfunc,
                    python_model=str(model_code), model_config=dict(model_config),
                    artifacts={"weights": str(weights)}, code_paths=[str(p) for p in code_paths],
                    model_id=logged.model_id, run_id=self.parent_run_id,
                    signature=infer_signature(input_example, output), input_example=input_example,
                    registered_model_name=registered_name, metadata=dict(metadata),
                    # Stated, not inferred: inference re-imports the model in a subprocess (slow).
                    pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
                )
        return f"models:/{registered_name}/{info.registered_model_version}"

    def end_study(self, *, status: str) -> None:
        self._writer.flush()
        if self.parent_run_id:
            self._execute({"op": "terminate", "run": self.parent_run_id, "status": status})

    def close_dead_runs(self, run_ids: Sequence[str], *, tags: Mapping[str, str]) -> None:
        """Make runs whose process is gone say FAILED, with TAGS saying why.

        A worker killed mid-trial leaves its trial's run (and its own parent run) RUNNING; one
        killed between ending its run and recording the result leaves it FINISHED while Optuna
        says FAIL. Runs only spooled on another machine are that machine's sync to close.
        """
        if self.outage:
            return  # the next run, or sync-mlflow, closes them once the server answers
        for run_id in (self._runs.get(r, r) for r in run_ids):
            if is_spooled(run_id) or self.client.get_run(run_id).info.status == "FAILED":
                continue
            self._execute(_batch(run_id, tags=tags))
            self._execute({"op": "terminate", "run": run_id, "status": "FAILED"})

    def _execute(self, op: Op) -> str | None:
        """Apply OP to the store, or spool it when the server does not answer (from then on).

        Returns the run id a `create_run` made; None when it was spooled (its key stands in).
        """
        if not self.outage:
            try:
                return apply_op(self.client, op, self._runs, spool_dir=None)
            except Exception as exc:
                if not self._is_outage(exc):
                    raise
                self._go_offline(exc)
        assert self._spool is not None, "start_study first"
        if op["op"] == "artifact":  # the file is a temporary one: the spool keeps a copy
            op = {**op, "file": self._spool.keep_file(Path(op["file"]))}
        self._spool.append(op)
        return None

    def _is_outage(self, exc: BaseException) -> bool:
        """A server that did not answer, as opposed to one that answered with an error."""
        from mlflow.exceptions import MlflowException, RestException

        if not self.tracking_uri.startswith(("http://", "https://")):
            return False  # a local store that fails is a real error, not an outage
        if isinstance(exc, RestException):
            return False
        # MLflow wraps transport failures (refused, reset, timed out) in MlflowException;
        # requests' own exceptions are OSErrors.
        return isinstance(exc, (MlflowException, OSError))

    def _go_offline(self, exc: BaseException) -> None:
        with self._offline_lock:
            if self.outage:
                return
            self.outage = redact_text(str(exc)).splitlines()[0][:300]
        logger.warning("MLflow tracking server %s stopped answering; training goes on and its "
                       "logs are kept in %s for `mnist-study sync-mlflow`",
                       redact(self.tracking_uri), self.spool_dir)


@contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-global tracking URI at URI for one call, then restore it.

    mlflow's Model.log and the registration it does read only the global URI. This runs
    once per study, after the search, when no trial is logging from another thread.
    """
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        # MLflow mirrors the global into the environment and unsets it on the way out.
        if previous_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


@contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
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


def _prepare_store(tracking_uri: str) -> None:
    """Check the tracking URI, then create the local store's folder."""
    check_tracking_uri(tracking_uri)
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def check_tracking_uri(tracking_uri: str) -> None:
    """Refuse a URI MLflow cannot use, creating nothing; a tracking server must answer, quickly."""
    from study.store_checks import INSTALL_POSTGRES, check_store_path, missing_postgres_driver

    if tracking_uri.startswith("sqlite:///"):
        check_store_path(Path(tracking_uri.removeprefix("sqlite:///")), flag="--tracking-uri",
                         scheme="sqlite:///", example="mlflow.db")
        return
    if ambiguous_password(tracking_uri):
        raise TrackingError(f"the password in --tracking-uri {redact(tracking_uri)} holds an "
                            f"unencoded '@' or '/': percent-encode it (%40, %2F)")
    if tracking_uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=10):
                return
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(f"MLflow tracking server {redact(tracking_uri)} does not answer "
                                f"({redact_text(str(exc))}); start it or pass another "
                                f"--tracking-uri") from exc
    if tracking_uri.startswith("file:") or "://" not in tracking_uri:
        raise TrackingError(
            f"tracking URI {redact(tracking_uri)!r} is a file store, which MLflow 3 no longer "
            f"accepts; use sqlite:///path/mlflow.db or an http:// tracking server"
        )
    if missing_postgres_driver(tracking_uri):
        raise TrackingError(f"--tracking-uri {redact(tracking_uri)} needs a PostgreSQL driver, "
                            f"and none is installed: {INSTALL_POSTGRES}")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    try:  # looks the scheme up; builds no store
        _tracking_store_registry.get_store_builder(tracking_uri)
    except MlflowException as exc:
        raise TrackingError(f"tracking URI {redact(tracking_uri)!r} has a scheme MLflow has no "
                            f"store for; use sqlite:///path/mlflow.db or an http:// tracking "
                            f"server") from exc
