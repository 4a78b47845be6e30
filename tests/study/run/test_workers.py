"""Workers never repeat each other: every process draws its own parameters.

Real CLI workers started together on one study (journal file, SQLite, PostgreSQL), and a
study resumed after it finished: no two trials may share a parameter set, except a trial and
the deliberate retry of it that Optuna's heartbeat callback enqueues.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from study.bench.workers import repeated_parameter_sets
from study.search.seeded_sampler import sampler_seed
from study.search.strategy import make_sampler
from study.store.storage import open_storage
from study.tracking import MlflowTracker
from tests.helpers import STUDY_TRAIN_IMAGES, assert_evaluated_once, cli_env
from tests.synthetic import write_synthetic_mnist

SMALL_STUDY = ["run", "--allow-noncanonical-data", "--no-progress", "--max-epochs", "1",
               "--hidden", "16", "--val-fraction", "0.25", "--pruner", "none"]


def _run_workers(cwd: Path, n_workers: int, args: list[str]) -> list[str]:
    """N_WORKERS `mnist-study run` processes started at once; each must end well. Their
    outputs."""
    command = [sys.executable, "-m", "study", *SMALL_STUDY, *args]
    procs = [subprocess.Popen(command, cwd=cwd, env=cli_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(n_workers)]
    try:
        outputs = [proc.communicate(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, out + err
    return [out + err for out, err in outputs]


def _storage_url(kind: str, tmp_path: Path, postgres: str | None) -> str:
    if kind == "journal":
        return f"journal:{tmp_path}/optuna.log"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/optuna.db"
    assert postgres is not None
    return postgres


def _load(url: str, name: str) -> optuna.Study:
    if url.startswith("journal:"):
        storage: optuna.storages.BaseStorage = JournalStorage(
            JournalFileBackend(url.removeprefix("journal:")))
    else:
        storage = open_storage(url)
    return optuna.load_study(study_name=name, storage=storage)


# Three workers, whose races hold every race of two and one of three (with four, each case
# took 41-44 s of the suite on two cores): two workers on a journal file and on PostgreSQL are
# also test_postgres.py's shared-study tests, which check the same. The storages for several
# processes (README, Storage); SQLite is one process's store. On the journal file the workers
# train cohorts of 3: each counts the room left, the others' running trials too, before each
# ask, so that racing for the last places they overrun the budget by W - 1 trials at most
# (README: N to N + W - 1 trials), and a cohort's members and the workers never repeat.
@pytest.mark.parametrize(("kind", "cohort_size"), [
    ("journal", 3), pytest.param("postgres", 1, marks=pytest.mark.postgres)])
@pytest.mark.slow
def test_workers_started_together_never_repeat_parameters(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, cohort_size: int,
) -> None:
    n_workers, n_trials = 3, 7
    postgres = request.getfixturevalue("postgres_url") if kind == "postgres" else None
    url = _storage_url(kind, tmp_path, postgres)
    name = f"w{n_workers}-{kind}-{os.getpid()}-{tmp_path.name}"[:60]
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES, n_test=50)
    MlflowTracker(f"sqlite:///{tmp_path}/mlflow/mlflow.db")  # the store exists, as after a run
    outputs = _run_workers(tmp_path, n_workers, ["--storage", url, "--study-name", name,
                                                 "--n-trials", str(n_trials), "--data-dir",
                                                 str(data), "--cohort-size", str(cohort_size)])
    study = _load(url, name)
    trials = study.get_trials(deepcopy=False)
    assert n_trials <= len(trials) <= n_trials + n_workers - 1  # the budget, overrun at most so
    assert all(t.state == TrialState.COMPLETE for t in trials)  # and all ran
    assert repeated_parameter_sets(trials) == []  # nobody replayed another's suggestion
    assert_evaluated_once(outputs, study=study,
                          tracking_uri=f"sqlite:///{tmp_path}/mlflow/mlflow.db")


def test_a_fresh_single_process_study_is_still_reproducible() -> None:
    # The seed's promise stands: the same seed gives the same stream for the same trial...
    assert sampler_seed(0, 5) == sampler_seed(0, 5)
    # ...and distinct trials (and seeds) get distinct streams.
    assert len({sampler_seed(s, n) for s in range(3) for n in range(100)}) == 300


def test_two_samplers_with_one_seed_suggest_differently_for_different_trials() -> None:
    # What two workers' samplers do in one storage: each trial has its own number, so its own
    # stream, even though both processes were built from the same study seed.
    study = optuna.create_study(sampler=make_sampler("tpe", seed=0, n_trials=20))
    other = optuna.load_study(study_name=study.study_name, storage=study._storage,
                              sampler=make_sampler("tpe", seed=0, n_trials=20))
    first, second = study.ask(), other.ask()
    lrs = [t.suggest_float("lr", 1e-5, 1.0, log=True) for t in (first, second)]
    assert lrs[0] != lrs[1]


def test_the_duplicate_finder_tells_a_retry_from_a_repeat() -> None:
    study = optuna.create_study()
    for _ in range(2):
        study.enqueue_trial({"x": 1.0})
    for _ in range(2):
        study.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=1)
    trials = study.get_trials()
    assert repeated_parameter_sets(trials) == [(0, 1)]  # a plain repeat is caught
    retried = optuna.create_study()
    retried.add_trial(trials[0])
    retried.add_trial(optuna.trial.create_trial(  # what the heartbeat callback enqueues
        params={"x": 1.0}, distributions=trials[0].distributions, value=1.0,
        system_attrs={"failed_trial": trials[0].number}))
    assert repeated_parameter_sets(retried.get_trials()) == []  # a retry is allowed
