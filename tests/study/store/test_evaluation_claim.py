"""One evaluation however many workers: who still searches, and the claim only one can hold."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage

from study.store.liveness import (
    EVALUATION_CLAIM,
    Worker,
    evaluation_claim,
    still_searching,
)
from study.store.record import WORKER_PREFIX

GRACE = 120.0


@pytest.fixture(params=["sqlite", "journal"])
def study(request: pytest.FixtureRequest, tmp_path: Path) -> optuna.Study:
    storage: str | optuna.storages.BaseStorage = f"sqlite:///{tmp_path}/o.db"
    if request.param == "journal":
        storage = JournalStorage(JournalFileBackend(str(tmp_path / "o.log")))
    return optuna.create_study(study_name="s", storage=storage)


def _gone_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _other(study: optuna.Study, run_id: str, **record: object) -> None:
    """Another worker's record, as its process writes it."""
    study.set_user_attr(f"{WORKER_PREFIX}{run_id}", {
        "host": socket.gethostname(), "pid": 1, "started": time.time(), "beat": time.time(),
        **record})


def test_a_live_worker_still_searching_is_waited_for_and_the_others_are_not(
        study: optuna.Study) -> None:
    me = Worker(study, "me")
    me.write()
    _other(study, "searching")  # pid 1 runs: alive
    _other(study, "done", searched=time.time())
    _other(study, "stopped", ended=True)
    _other(study, "dead", pid=_gone_pid())  # killed mid-search: nobody waits for it
    assert still_searching(study, me, grace_seconds=GRACE) == [
        f"pid 1 on {socket.gethostname()}"]
    _other(study, "searching", searched=time.time())
    assert still_searching(study, me, grace_seconds=GRACE) == []


def test_one_worker_holds_the_claim_and_the_next_sees_who(study: optuna.Study) -> None:
    first, second = Worker(study, "first"), Worker(study, "second")
    first.write()
    second.write()
    with evaluation_claim(study, first, grace_seconds=GRACE) as holder:
        assert holder is None  # claimed: this worker evaluates
        with evaluation_claim(study, second, grace_seconds=GRACE) as other:
            assert other is not None and other.startswith("pid ")  # the holder, by its pid
        assert EVALUATION_CLAIM.format("s") in optuna.get_all_study_names(study._storage)
    # Released once the block ends: the storage holds the study alone again.
    assert optuna.get_all_study_names(study._storage) == ["s"]
    with evaluation_claim(study, second, grace_seconds=GRACE) as holder:
        assert holder is None


def test_a_claim_whose_worker_died_is_taken_over(study: optuna.Study) -> None:
    dead, me = Worker(study, "dead"), Worker(study, "me")
    me.write()
    _other(study, "dead", pid=_gone_pid())
    storage = study._storage
    claim = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE],
                                     EVALUATION_CLAIM.format("s"))
    storage.set_study_user_attr(claim, "worker", dead.parent_run_id)  # killed while evaluating
    with evaluation_claim(study, me, grace_seconds=GRACE) as holder:
        assert holder is None  # the next run evaluates
    assert optuna.get_all_study_names(storage) == ["s"]


def test_a_failed_evaluation_releases_the_claim_for_the_next_run(study: optuna.Study) -> None:
    me = Worker(study, "me")
    me.write()
    with pytest.raises(RuntimeError), evaluation_claim(study, me, grace_seconds=GRACE):
        raise RuntimeError("the evaluation failed")
    assert optuna.get_all_study_names(study._storage) == ["s"]
