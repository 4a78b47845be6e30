from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from study.errors import ConfigError, StorageError
from study.storage import count_finished, open_storage, open_study

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


def test_unreachable_postgres_is_one_clear_error_and_fast() -> None:
    started = time.perf_counter()
    with pytest.raises(StorageError, match=r"cannot open Optuna storage postgresql://u:\*\*\*@"):
        open_storage("postgresql://u:secret@127.0.0.1:9/db")  # nothing listens on port 9
    assert time.perf_counter() - started < 10


def test_not_a_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sqlite:///optuna.db"):
        open_storage("optuna.db")

