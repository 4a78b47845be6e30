"""study.bench.timing: the tracker wrapper that clocks a study's phases from the outside."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from study.bench.timing import StudyClock, TimedTracker
from study.tracking import NullTracker
from study.train.engine_types import EpochMetrics


def _epoch(epoch: int, val_acc: float) -> EpochMetrics:
    return EpochMetrics(epoch=epoch, train_loss=0.5, train_acc=0.5, val_loss=0.4,
                        val_acc=val_acc, lr=0.1, seconds=0.25)


def test_timed_tracker_clocks_phases_and_the_target() -> None:
    clock = StudyClock(origin=0.0)
    tracker = TimedTracker(NullTracker(), clock=clock, target_acc=0.9)
    tracker.start_study(study_name="s", params={}, tags={})
    run_id = tracker.start_trial(number=7, params={})
    tracker.log_epoch(run_id, _epoch(1, 0.5))
    tracker.log_epoch(run_id, _epoch(2, 0.95))
    tracker.log_epoch(run_id, _epoch(3, 0.97))
    tracker.end_trial(run_id, number=7, state=TrialState.COMPLETE, attrs={})
    tracker.save_checkpoint(run_id, {})  # not clocked by name: passes through, still counted
    tracker.end_study(status="FINISHED")
    trial = clock.trials[run_id]
    assert (trial.number, trial.epochs) == (7, 3)
    assert trial.epoch_seconds == pytest.approx(0.75)  # the loop's own epoch times, summed
    assert clock.target is not None and (clock.target.trial, clock.target.epoch) == (7, 2)
    assert clock.calls["log_epoch"][0] == 3 and clock.calls["save_checkpoint"][0] == 1
    assert clock.search_started is not None and clock.study_ended is not None
    assert clock.search_started <= (clock.search_ended or 0) <= clock.study_ended
