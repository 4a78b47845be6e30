"""Ctrl-C during a study: raised in an epoch, held outside one, never inside a store call."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from study.config import StudyConfig
from study.run.interrupts import (
    SIGNALS,
    Terminated,
    deferred_interrupts,
    interruptibly,
    raise_pending_interrupt,
)
from study.run.runner import run_study
from study.tracking import MlflowTracker
from tests.helpers import STUDY_TRAIN_IMAGES
from tests.synthetic import write_synthetic_mnist


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # the handler runs before the next bytecode


def test_ctrl_c_outside_an_epoch_is_held_until_the_scope_ends() -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        _ctrl_c()
        reached.append("after")  # a store call here would finish undisturbed
    assert reached == ["after"]


def test_ctrl_c_inside_an_epoch_raises_at_once() -> None:
    computed = []

    def epochs() -> Iterator[int]:
        _ctrl_c()
        computed.append(1)  # never reached: the epoch is where an interrupt belongs
        yield 1

    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        list(interruptibly(epochs()))
    assert computed == []


def test_a_held_ctrl_c_is_raised_before_the_next_epoch_is_computed() -> None:
    computed: list[int] = []

    def epochs() -> Iterator[int]:
        for epoch in (1, 2):
            computed.append(epoch)
            yield epoch

    seen = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        for epoch in interruptibly(epochs()):
            _ctrl_c()  # between epochs: e.g. during trial.report
            seen.append(epoch)  # the loop body finishes
    assert seen == [1] and computed == [1]  # epoch 2 never started


def test_a_second_ctrl_c_raises_at_once() -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        _ctrl_c()
        reached.append("held")
        _ctrl_c()  # the user insists (e.g. a store call hangs)
        reached.append("never")
    assert reached == ["held"]


def test_raise_pending_interrupt_is_a_checkpoint_inside_the_scope() -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        raise_pending_interrupt()  # nothing held: a no-op
        reached.append("first")
        _ctrl_c()
        raise_pending_interrupt()
        reached.append("never")
    assert reached == ["first"]


def test_sigterm_is_held_like_ctrl_c_and_raised_as_terminated() -> None:
    reached = []
    with pytest.raises(Terminated) as stopped, deferred_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)  # `kill`, a scheduler, `docker stop`
        reached.append("after")  # not killed mid-write: the clean-up can still run
    assert reached == ["after"]
    assert stopped.value.signum == signal.SIGTERM  # the CLI exits 128 + 15


def test_the_previous_handlers_come_back_and_nothing_stays_held() -> None:
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        _ctrl_c()
    assert {sig: signal.getsignal(sig) for sig in SIGNALS} == before
    with deferred_interrupts():
        pass  # the interrupt of the last scope is not raised again here


def test_an_ignored_signal_stays_ignored() -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under `nohup`
    try:
        with deferred_interrupts():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN  # a closed terminal: go on
            os.kill(os.getpid(), signal.SIGHUP)  # and nothing is raised at the scope's end
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_outside_the_main_thread_ctrl_c_keeps_its_usual_meaning() -> None:
    handlers: list[Any] = []

    def worker() -> None:
        with deferred_interrupts():
            handlers.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert handlers == [signal.getsignal(signal.SIGINT)]  # no handler installed from there


class _CtrlCInStartTrial(MlflowTracker):
    """Ctrl-C arrives while trial 1's MLflow run is being created (the CI failure's moment)."""

    def start_trial(self, *, number: int, params: Any, tags: Any = None) -> str:
        if number == 1:
            _ctrl_c()
        return super().start_trial(number=number, params=params, tags=tags)


def test_ctrl_c_during_a_store_call_ends_every_run_truthfully(
    tmp_path: Path
) -> None:
    uri, storage = f"sqlite:///{tmp_path}/mlflow.db", f"sqlite:///{tmp_path}/optuna.db"
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    config = StudyConfig(study_name="ctrl-c", storage=storage, tracking_uri=uri,
                         data_dir=data, download=False, allow_noncanonical_data=True,
                         n_trials=4, max_epochs=2, hidden=16, pruner="none", device="cpu",
                         no_progress=True)
    with pytest.raises(KeyboardInterrupt):
        run_study(config, tracker=_CtrlCInStartTrial(uri))
    trials = optuna.load_study(study_name="ctrl-c", storage=storage).get_trials()
    # No trial 2 started: the warm start's third recipe still waits in the queue.
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL,
                                         TrialState.WAITING]
    interrupted = trials[1]
    # The run was created in full, then the trial stopped in its first epoch and said why.
    assert interrupted.user_attrs["fail_reason"] == "interrupted: KeyboardInterrupt"
    assert interrupted.user_attrs["epochs_trained"] == 0
    client = MlflowClient(uri)
    run = client.get_run(interrupted.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    experiment = client.get_experiment_by_name("ctrl-c")
    assert experiment is not None
    statuses = {r.data.tags["mnist_study.role"] + ":" + r.info.status
                for r in client.search_runs([experiment.experiment_id])}
    assert statuses == {"study:KILLED", "trial:FINISHED", "trial:FAILED"}  # none RUNNING
