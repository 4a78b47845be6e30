from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from study.errors import ConfigError, StorageError
from study.store.record import (
    IDENTITY_SYSTEM_ATTR,
    RECORD_VERSION,
    RECORD_VERSION_ATTR,
    with_recorded_since,
)
from study.store.storage import (
    check_tracking_store,
    count_finished,
    open_storage,
    open_study,
    stored_identity,
)

IDENTITY: dict[str, Any] = {"seed": 0, "val_fraction": 0.1, "search_space": {"lr": [1e-4, 1e-1]}}


def _open(url: str, identity: dict[str, Any] = IDENTITY) -> optuna.Study:
    return open_study(name="s", storage=open_storage(url), storage_url=url,
                      sampler=optuna.samplers.RandomSampler(seed=0),
                      pruner=optuna.pruners.NopPruner(), identity=identity)


def test_reopening_resumes_the_same_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/optuna.db"
    first = _open(url)
    first.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    again = _open(url)
    assert count_finished(again) == 3  # trials of the earlier run are there, not a new study
    assert again.metric_names == ["val_loss"]  # the objective is named for the dashboard


@pytest.mark.parametrize(("key", "value"), [("seed", 1), ("val_fraction", 0.2),
                                            ("search_space", {"lr": [1e-3, 1e-1]})])
def test_resume_with_other_settings_is_refused(tmp_path: Path, key: str, value: Any) -> None:
    url = f"sqlite:///{tmp_path}/optuna.db"
    _open(url)
    with pytest.raises(StorageError, match=f"{key}: stored .* now") as info:
        _open(url, {**IDENTITY, key: value})
    assert "new --study-name" in str(info.value)  # the message says what to do


def test_the_identity_is_one_short_attr_per_setting(tmp_path: Path) -> None:
    # optuna-dashboard shows each study user attr on a card: one JSON blob overflowed it.
    study = _open(f"sqlite:///{tmp_path}/optuna.db")
    assert "identity" not in study.user_attrs
    assert study.user_attrs["identity.seed"] == 0
    assert study.user_attrs["identity.search_space.lr"] == [1e-4, 1e-1]
    assert stored_identity(study) == IDENTITY  # and reads back whole


# Every setting recorded since version 1, at the value a study made then had.
V1_GAPS: dict[str, Any] = {"early_stopping": [0, 0.0], "prune_diagnosed": False,
                           "warm_start": False}
SPACE_V1 = {"lr": [1e-4, 1e-1]}
SPACE_V2 = {**SPACE_V1, "norms": ["none"], "augments": ["none"]}


def _v1_study(url: str, identity: dict[str, Any], *, as_user_attr: bool = False) -> None:
    """A study as a version-1 mnist-study left it: no record version; its identity in a system
    attr, or (earlier still) in the user attr `identity`."""
    study = optuna.create_study(storage=url, study_name="s")
    if as_user_attr:
        study.set_user_attr("identity", identity)
    else:
        study._storage.set_study_system_attr(study._study_id, IDENTITY_SYSTEM_ATTR, identity)


def _system_attrs(url: str) -> dict[str, Any]:
    storage = open_storage(url)
    return storage.get_study_system_attrs(storage.get_study_id_from_name("s"))


@pytest.mark.parametrize("as_user_attr", [False, True])
def test_a_version_1_study_resumes_and_its_record_is_migrated(tmp_path: Path,
                                                              as_user_attr: bool) -> None:
    url = f"sqlite:///{tmp_path}/optuna.db"
    _v1_study(url, {**IDENTITY, "search_space": SPACE_V1}, as_user_attr=as_user_attr)
    today = {**IDENTITY, **V1_GAPS, "search_space": SPACE_V2}
    assert count_finished(_open(url, today)) == 0  # what it was made with: resumed
    system = _system_attrs(url)
    assert system[RECORD_VERSION_ATTR] == RECORD_VERSION == 2
    assert system[IDENTITY_SYSTEM_ATTR] == today  # the gaps filled in, once, in the store
    for key, value in [("seed", 1), ("early_stopping", [3, 0.0]), ("warm_start", True),
                       ("search_space", {**SPACE_V2, "norms": ["batch"]})]:
        with pytest.raises(StorageError, match=f"{key}: stored .*, now "):
            _open(url, {**today, key: value})


def test_a_record_newer_than_this_mnist_study_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = _open(url)
    study._storage.set_study_system_attr(study._study_id, RECORD_VERSION_ATTR, RECORD_VERSION + 1)
    with pytest.raises(StorageError, match=f"version {RECORD_VERSION + 1}, written by a newer "
                                           f"mnist-study .* upgrade mnist-study"):
        _open(url)
    assert _system_attrs(url)[IDENTITY_SYSTEM_ATTR] == IDENTITY  # nothing recorded was touched


def test_a_new_study_records_the_version() -> None:
    study = _open("sqlite:///:memory:")
    system = study._storage.get_study_system_attrs(study._study_id)
    assert system[RECORD_VERSION_ATTR] == RECORD_VERSION


def test_recorded_since_reaches_inside_the_search_space() -> None:
    stored = {"seed": 0, "search_space": {"lr": [1e-4, 1e-1]}}
    since = {"search_space": {"norms": ["none"]}, "early_stopping": [0, 0.0]}
    assert with_recorded_since(stored, since) == {
        "seed": 0, "search_space": {"lr": [1e-4, 1e-1], "norms": ["none"]},
        "early_stopping": [0, 0.0]}
    recorded = {"search_space": {"norms": ["batch"]}}
    assert with_recorded_since(recorded, since)["search_space"] == {"norms": ["batch"]}


def test_a_maximising_study_of_another_tool_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/optuna.db"
    optuna.create_study(storage=url, study_name="s", direction="maximize")
    with pytest.raises(StorageError, match="maximises"):
        _open(url)


def test_journal_storage_for_several_processes(tmp_path: Path) -> None:
    url = f"journal:{tmp_path}/journal/optuna.log"
    _open(url).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert count_finished(_open(url)) == 2  # the journal file persists the study
    assert (tmp_path / "journal" / "optuna.log").stat().st_size > 0


def test_unreachable_postgres_is_one_clear_error_without_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # records a backoff instead of waiting
    with pytest.raises(StorageError, match=r"cannot open Optuna storage postgresql://u:\*\*\*@"):
        open_storage("postgresql://u:secret@127.0.0.1:9/db")  # nothing listens on port 9
    assert slept == []  # no backoff: retries are for workers racing to create the schema


def test_not_a_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sqlite:///optuna.db"):
        open_storage("optuna.db")



@pytest.mark.parametrize(("url", "fragment"), [
    ("journal:/tmp", "/tmp is a directory; name a file in it, e.g. --storage journal:/tmp/"),
    ("sqlite:////tmp", "/tmp is a directory"),
    # Places even root cannot write (chmod would not stop root): sysfs and procfs.
    ("journal:/sys/optuna.log", "cannot write in /sys"),
    ("sqlite:////sys/optuna.db", "cannot write in /sys"),
    ("sqlite:////proc/x/y.db", "cannot write in /proc"),
])
def test_an_unusable_local_path_is_a_config_error(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        open_storage(url)


@pytest.mark.parametrize("scheme", ["sqlite:///", "journal:"])
def test_a_path_under_a_file_is_refused_and_nothing_is_created(tmp_path: Path,
                                                               scheme: str) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(ConfigError, match="notes.txt is a file, not a directory"):
        open_storage(f"{scheme}{tmp_path}/notes.txt/deeper/optuna.db")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]  # the check made nothing


def test_a_missing_postgres_driver_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for driver in ("psycopg", "psycopg2"):
        monkeypatch.setitem(sys.modules, driver, None)  # as if not installed: imports fail
    with pytest.raises(StorageError, match=r'pip install -e "\.\[postgres\]"'):
        open_storage("postgresql://u@127.0.0.1:9/db")


def test_the_tracking_store_is_recorded_and_a_resume_elsewhere_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    study = _open(f"sqlite:///{tmp_path}/optuna.db")
    check_tracking_store(study, "sqlite:///mlflow/mlflow.db")  # the first run records it
    own = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert study.user_attrs["tracking_uri"] == own  # absolute: the same from any directory
    check_tracking_store(study, own)  # the same store by another name is no change
    with pytest.raises(StorageError, match=f"keeps its MLflow runs and checkpoints in {own}, "
                                           f"not in http://u:\\*\\*\\*@mlflow: pass "
                                           f"--tracking-uri {own}"):
        check_tracking_store(study, "http://u:secret@mlflow/")


def test_optuna_s_private_api_is_reached_from_one_module_alone() -> None:
    # One owner for what may break with an Optuna release: the storage behind a study, its id,
    # a trial's id, the heartbeat and RDB internals. Elsewhere the product uses the public API.
    private = re.compile(r"\._storage\b|\._study_id\b|\._trial_id\b|\._backend\b|"
                         r"optuna\.storages\._|\._n_warmup_steps\b")
    study_dir = Path(__file__).resolve().parents[3] / "study"
    owner = study_dir / "store" / "optuna_private.py"
    found = sorted(
        f"{path.relative_to(study_dir)}:{n}"
        for path in study_dir.rglob("*.py") if path != owner
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if private.search(line))
    assert found == []
    assert private.search(owner.read_text())  # the pattern does find its uses
    assert private.search("storage = study._storage")  # the pattern does find a use
