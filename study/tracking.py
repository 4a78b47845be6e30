"""Experiment tracking behind one small interface, with explicit MLflow run ids.

Nothing here uses MLflow's fluent active-run stack: every call names its run, so trials in
threads or processes can never log into each other's runs.
"""

from __future__ import annotations

import fcntl
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
    def start_trial(self, *, number: int, params: Mapping[str, Any],
                    tags: Mapping[str, str] | None = None) -> str: ...
    def log_epoch(self, run_id: str, metrics: EpochMetrics) -> None: ...
    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int) -> None: ...
    def end_trial(self, run_id: str, *, state: TrialState, tags: Mapping[str, str]) -> None: ...
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
    def close_dead_runs(self, run_ids: Sequence[str]) -> None: ...


class NullTracker:
    """Tracking off: the loop never branches on 'is logging on'. Checkpoints stay in memory."""

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

    def log_study_artifacts(self, directory: Path) -> None:
        pass

    def log_study_model(self, model: torch.nn.Module, *, registered_name: str,
                        input_example: np.ndarray, params: Mapping[str, Any],
                        metadata: Mapping[str, Any], model_code: Path,
                        model_config: Mapping[str, Any], code_paths: Sequence[Path]) -> str:
        return ""  # nothing registered: there is no registry without tracking

    def end_study(self, *, status: str) -> None:
        pass

    def close_dead_runs(self, run_ids: Sequence[str]) -> None:
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
    """Runs MLflow writes in order on one daemon thread, off the training loop.

    A write that fails is raised (as a TrackingError) by the next submit() or flush(), so
    nothing is lost silently; flush() is the point where everything submitted is on disk.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], object]] = queue.Queue()
        self._error: BaseException | None = None
        threading.Thread(target=self._work, name="mlflow-writer", daemon=True).start()

    def submit(self, job: Callable[[], object]) -> None:
        self._raise_failure()
        self._jobs.put(job)

    def flush(self) -> None:
        self._jobs.join()
        self._raise_failure()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except BaseException as exc:  # handed over to the caller's thread, not swallowed
                self._error = self._error or exc
            finally:
                self._jobs.task_done()

    def _raise_failure(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise TrackingError(f"an MLflow write failed: {error}") from error


class MlflowTracker:
    """One experiment per study, one parent run per invocation, one child run per trial.

    Per-epoch metrics and trial params are written by a background thread (an SQLite commit
    costs ~20 ms, a GPU epoch not much more); end_trial and end_study wait for those writes, so
    a run's final status is only set once everything it logged is stored.
    """

    def __init__(self, tracking_uri: str) -> None:
        from mlflow import MlflowClient  # heavy import, only when tracking is on

        self.tracking_uri = tracking_uri
        _prepare_store(tracking_uri)
        with _store_lock(tracking_uri):  # one process at a time creates/migrates a new store
            self.client = MlflowClient(tracking_uri=tracking_uri)
            self.client.search_experiments(max_results=1)  # forces the schema now, under the lock
        self.experiment_id = ""
        self.parent_run_id = ""
        self._writer = _BackgroundWriter()

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
            raise TrackingError(f"MLflow tracking store {redact(self.tracking_uri)} refused: "
                                f"{exc.message.splitlines()[0]}") from exc
        if found.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment {name!r} is deleted in {redact(self.tracking_uri)}; restore "
                f"it (mlflow experiments restore --experiment-id {found.experiment_id}) or use "
                f"another --study-name"
            )
        return str(found.experiment_id)

    def start_trial(self, *, number: int, params: Mapping[str, Any],
                    tags: Mapping[str, str] | None = None) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number:04d}",
            tags={**(tags or {}), "mlflow.parentRunId": self.parent_run_id,
                  "optuna.trial_number": str(number), "optuna.state": "RUNNING",
                  "mnist_study.role": "trial"},
        )
        run_id, params = str(run.info.run_id), dict(params)
        self._writer.submit(lambda: self._log(run_id, params=params))
        return run_id

    def log_epoch(self, run_id: str, metrics: EpochMetrics) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # One batched write per epoch, never one per metric or per step, and not on this thread.
        batch = [Metric(key, value, now, metrics.epoch) for key, value in
                 metrics.as_dict().items()]
        self._writer.submit(lambda: self.client.log_batch(run_id, metrics=batch))

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int) -> None:
        """METRICS at STEP in one batched write (cross-validation's per-fold names)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[
            Metric(key, float(value), now, step) for key, value in metrics.items()])

    def flush(self) -> None:
        """Wait until every write submitted so far is stored (end_trial does it itself)."""
        self._writer.flush()

    def end_trial(self, run_id: str, *, state: TrialState, tags: Mapping[str, str]) -> None:
        self._writer.flush()  # the run's metrics are stored before its status says it ended
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
                                    f"{redact(self.tracking_uri)}: "
                                    f"{redact_text(str(exc))}") from exc
            return dict(torch.load(local, map_location="cpu", weights_only=True))

    def log_study_result(self, *, metrics: Mapping[str, float], params: Mapping[str, Any],
                         tags: Mapping[str, str]) -> None:
        self._log(self.parent_run_id, metrics=metrics, params=params, tags=tags)

    def log_study_artifacts(self, directory: Path) -> None:
        """DIRECTORY's files, sub-folders kept, at the root of the parent run's artifacts."""
        self.client.log_artifacts(self.parent_run_id, str(directory))

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
            self.client.set_terminated(self.parent_run_id, status=status)

    def close_dead_runs(self, run_ids: Sequence[str]) -> None:
        """Make the runs of trials Optuna failed say FAILED too.

        A worker killed mid-trial leaves its run RUNNING; one killed between ending its run and
        recording the result leaves it FINISHED while Optuna says FAIL.
        """
        for run_id in run_ids:
            if self.client.get_run(run_id).info.status == "FAILED":
                continue
            self._log(run_id, tags={"optuna.state": "FAIL", "optuna.fail_reason":
                                    "its worker stopped without a word (heartbeat went stale)"})
            self.client.set_terminated(run_id, status="FAILED")

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
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _prepare_store(tracking_uri: str) -> None:
    """Create the local store's folder, or check that a tracking server answers, quickly."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
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
