from __future__ import annotations

import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow import MlflowClient
from optuna.trial import TrialState

from study.errors import TrackingError
from study.store.store_checks import HEALTH_TIMEOUT
from study.tracking import MlflowTracker, NullTracker
from study.tracking.spool import SPOOL_KEY_TAG, Op
from study.tracking.writer import BackgroundWriter
from study.train.engine_types import EpochMetrics


def _metrics(epoch: int, val_loss: float) -> EpochMetrics:
    return EpochMetrics(epoch=epoch, train_loss=val_loss + 0.1, train_acc=0.5, val_loss=val_loss,
                        val_acc=0.6, lr=0.01, seconds=0.1)


@pytest.fixture
def tracker(tmp_path: Path) -> MlflowTracker:
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    tracker.start_study(study_name="s", params={"seed": 0}, tags={"code_version": "abc"})
    return tracker


@pytest.mark.parametrize(("state", "status"), [(TrialState.COMPLETE, "FINISHED"),
                                                (TrialState.PRUNED, "KILLED"),
                                                (TrialState.FAIL, "FAILED")])
def test_trial_state_maps_to_a_truthful_run_status(
    tracker: MlflowTracker, state: TrialState, status: str
) -> None:
    run_id = tracker.start_trial(number=3, params={"lr": 0.1, "optimizer": "adam"})
    tracker.log_epoch(run_id, _metrics(1, 0.5))
    tracker.end_trial(run_id, number=3, state=state,
                      attrs={"best_epoch": 1, "best_val_loss": 0.5, "epochs_trained": 1})
    run = tracker.client.get_run(run_id)
    assert run.info.status == status  # pruned reads KILLED, failed FAILED, complete FINISHED
    assert run.data.tags["optuna.state"] == state.name  # Optuna's own word is kept too
    assert run.data.tags["optuna.trial_number"] == "3"
    assert run.data.tags["mlflow.parentRunId"] == tracker.parent_run_id  # nested under study
    assert run.data.params == {"lr": "0.1", "optimizer": "adam"}
    assert SPOOL_KEY_TAG not in run.data.tags  # written directly: it was never spooled
    assert run.data.metrics["best_val_loss"] == 0.5  # the objective, sortable in the table
    assert run.data.metrics["best_epoch"] == 1
    assert run.info.run_name == {"FINISHED": "trial-0003 complete", "KILLED": "trial-0003 pruned@1",
                                 "FAILED": "trial-0003 failed in epoch 2"}[status]  # at a glance


def test_epoch_metrics_are_a_history_over_step(tracker: MlflowTracker) -> None:
    run_id = tracker.start_trial(number=0, params={})
    for epoch, loss in enumerate([0.9, 0.5, 0.4], start=1):
        tracker.log_epoch(run_id, _metrics(epoch, loss))
    tracker.flush()  # epoch metrics are written in the background; end_trial would flush too
    history = tracker.client.get_metric_history(run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.9), (2, 0.5), (3, 0.4)]  # one per epoch
    keys = set(tracker.client.get_run(run_id).data.metrics)
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr_now", "epoch_seconds"} <= keys


def test_epoch_metrics_under_a_prefix_keep_folds_apart(tracker: MlflowTracker) -> None:
    run_id = tracker.start_trial(number=0, params={})
    tracker.log_epoch(run_id, _metrics(1, 0.9), prefix="fold1/")
    tracker.log_epoch(run_id, _metrics(1, 0.7), prefix="fold2/")
    tracker.flush()
    metrics = tracker.client.get_run(run_id).data.metrics
    assert (metrics["fold1/val_loss"], metrics["fold2/val_loss"]) == (0.9, 0.7)  # one per fold
    assert "val_loss" not in metrics  # the unprefixed name is left for the trial's own value


def test_one_experiment_per_study_and_parent_run_per_invocation(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first, second = MlflowTracker(uri), MlflowTracker(uri)
    for t in (first, second):
        t.start_study(study_name="same", params={}, tags={})
        t.end_study(status="FINISHED")
    assert first.experiment_id == second.experiment_id  # the study's experiment is reused
    assert first.parent_run_id != second.parent_run_id  # each invocation gets its own parent
    runs = MlflowClient(uri).search_runs([first.experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_artifacts_of_the_local_store_live_beside_the_database(tracker: MlflowTracker,
                                                               tmp_path: Path) -> None:
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.artifact_location.startswith((tmp_path / "mlflow" / "artifacts").as_uri())


def test_checkpoint_round_trip(tracker: MlflowTracker) -> None:
    run_id = tracker.start_trial(number=0, params={})
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    tracker.save_checkpoint(run_id, state)
    restored = tracker.load_checkpoint(run_id)
    assert torch.equal(restored["w"], state["w"])  # weights come back bit for bit


def test_missing_checkpoint_is_a_clear_error(tracker: MlflowTracker) -> None:
    run_id = tracker.start_trial(number=0, params={})
    with pytest.raises(TrackingError, match="cannot load the checkpoint"):
        tracker.load_checkpoint(run_id)


def test_deleted_experiment_is_refused_with_the_fix(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(TrackingError, match="restore it"):
        MlflowTracker(uri).start_study(study_name="gone", params={}, tags={})


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "./mlruns"])
def test_file_store_uri_is_refused(uri: str) -> None:
    with pytest.raises(TrackingError, match="sqlite:///"):
        MlflowTracker(uri)


def test_unreachable_tracking_server_is_refused_after_one_bounded_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requests: list[tuple[str, object]] = []
    real_urlopen = urllib.request.urlopen

    def recording_urlopen(url: str, *args: Any, **kwargs: Any) -> Any:
        requests.append((url, kwargs.get("timeout")))
        return real_urlopen(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", recording_urlopen)
    with pytest.raises(TrackingError, match="does not answer"):
        MlflowTracker("http://127.0.0.1:9")  # nothing listens on the discard port
    # One health check with a timeout, then the error: never MLflow's minutes of retries.
    assert requests == [("http://127.0.0.1:9/health", HEALTH_TIMEOUT)]


def test_null_tracker_keeps_checkpoints_in_memory() -> None:
    tracker = NullTracker()
    run_id = tracker.start_trial(number=1, params={})
    tracker.save_checkpoint(run_id, {"w": torch.ones(1)})
    assert torch.equal(tracker.load_checkpoint(run_id)["w"], torch.ones(1))
    with pytest.raises(TrackingError):
        tracker.load_checkpoint("untracked-99")


def test_epoch_writes_are_stored_before_the_run_ends(tracker: MlflowTracker) -> None:
    run_id = tracker.start_trial(number=0, params={"lr": 0.1})
    for epoch in range(1, 6):
        tracker.log_epoch(run_id, _metrics(epoch, 1.0 / epoch))  # queued, not yet written
    tracker.end_trial(run_id, number=0, state=TrialState.COMPLETE, attrs={})  # caller: no flush
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    # Every epoch written by the background thread, in order, and the params too.
    assert [m.step for m in tracker.client.get_metric_history(run_id, "val_loss")] == [1, 2, 3,
                                                                                       4, 5]
    assert run.data.params == {"lr": "0.1"}


def test_a_failed_background_write_is_raised(tracker: MlflowTracker) -> None:
    tracker.log_epoch("no-such-run", _metrics(1, 0.5))  # fails on the writer thread
    with pytest.raises(TrackingError, match="an MLflow write failed"):
        tracker.flush()  # ...and surfaces on the caller's, never swallowed
    tracker.flush()  # reported once: the tracker goes on working
    run_id = tracker.start_trial(number=1, params={})
    tracker.end_trial(run_id, number=1, state=TrialState.PRUNED, attrs={})
    assert tracker.client.get_run(run_id).info.status == "KILLED"


def test_the_background_writer_never_blocks_the_caller() -> None:
    release = threading.Event()
    written: list[Op] = []

    def held_write(op: Op) -> None:
        release.wait(timeout=60)  # a safety net only: the test releases it itself
        written.append(op)

    writer = BackgroundWriter(held_write)
    writer.submit({"op": "first"})
    writer.submit({"op": "second"})  # returns while the first write is still held
    assert written == []  # the caller went on before any write was done
    release.set()
    writer.flush()  # ...and flush is where it waits for them
    assert written == [{"op": "first"}, {"op": "second"}]  # all of them, in order
