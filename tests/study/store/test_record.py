"""A study's identity: what it was made to search, kept when today's defaults change."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import optuna
import pytest

from study.config import StudyConfig, resolve_config
from study.errors import StorageError
from study.run.runner import run_study
from study.search.search_space import SearchSpace
from study.store import record
from study.store.record import (
    IDENTITY_BEFORE_RECORDED,
    RECORD_VERSION,
    adopt_stored_settings,
    read_identity,
    settings_identity,
)
from study.store.result import StudySummary
from tests.helpers import CLASSIC_SPACE, STUDY_TRAIN_IMAGES, FinishedStudy
from tests.synthetic import write_synthetic_mnist

# Today's default space with one more scheduler: what a later release might ship.
WIDER = dataclasses.replace(CLASSIC_SPACE, schedulers=(*CLASSIC_SPACE.schedulers, "exponential"))
EVERY_SETTING = frozenset(f.name for f in dataclasses.fields(StudyConfig))


def test_the_command_line_and_the_file_are_given_the_defaults_are_not(tmp_path: Path) -> None:
    toml = tmp_path / "study.toml"
    toml.write_text("max_epochs = 5\n[search_space]\nbatch_sizes = [64]\n")
    config = resolve_config({"seed": 3, "hidden": None}, config_path=toml,
                            env={"MNIST_STUDY_DATA_DIR": "/data"})
    assert config.given == {"seed", "max_epochs", "search_space", "data_dir"}


def test_a_default_that_changed_is_replaced_by_what_the_study_was_made_with() -> None:
    made = StudyConfig(search_space=CLASSIC_SPACE, max_epochs=8)
    today = dataclasses.replace(made, search_space=WIDER, max_epochs=40,
                                given=frozenset({"n_trials"}))
    config, adopted = adopt_stored_settings(today, settings_identity(made))
    assert adopted == ["max_epochs", "search_space"]  # both were today's defaults
    assert settings_identity(config) == settings_identity(made)  # the study resumes as made
    assert config.n_trials == today.n_trials  # what is no identity stays today's
    # A setting the user gave is the user's: compared (and refused) by open_study, not taken.
    given = dataclasses.replace(today, given=frozenset({"search_space"}))
    config, adopted = adopt_stored_settings(given, settings_identity(made))
    assert adopted == ["max_epochs"] and config.search_space == WIDER
    # A config built in code says what it means: nothing is adopted.
    assert adopt_stored_settings(dataclasses.replace(today, given=None),
                                 settings_identity(made)) == (dataclasses.replace(
                                     today, given=None), [])


def test_a_study_made_before_a_default_changed_resumes_and_searches_what_it_searched(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    made = StudyConfig(study_name="old", storage=storage,
                       tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", data_dir=data,
                       download=False, allow_noncanonical_data=True, n_trials=2, max_epochs=1,
                       hidden=16, val_fraction=0.25, device="cpu", no_progress=True,
                       warm_start=False, search_space=CLASSIC_SPACE,
                       given=EVERY_SETTING)
    run_study(made)
    # The same command after an upgrade whose default space has another scheduler.
    upgraded = dataclasses.replace(made, n_trials=4, search_space=WIDER,
                                   given=EVERY_SETTING - {"search_space"})
    with caplog.at_level(logging.INFO, logger="study.run.runner"):
        summary = run_study(upgraded)
    assert "keeps the settings it was made with: search_space" in caplog.text  # said, once
    assert isinstance(summary, StudySummary)  # evaluated here, the one worker
    assert sum(summary.state_counts.values()) == 4  # resumed: two more trials, none refused
    trials = optuna.load_study(study_name="old", storage=storage).trials
    for trial in trials[2:]:  # the later trials search the stored space, not today's
        choices = trial.distributions["scheduler"].choices  # type: ignore[attr-defined]
        assert tuple(choices) == CLASSIC_SPACE.schedulers
    # Given on the command line (or in a file), the wider space is refused as before.
    with pytest.raises(StorageError, match="was made with other settings"):
        run_study(dataclasses.replace(upgraded, n_trials=5, given=EVERY_SETTING))


def test_a_stored_space_rebuilds_as_it_was_stored() -> None:
    # as_dict and from_mapping are each other's inverse on any space, the default included.
    for space in (SearchSpace(), CLASSIC_SPACE, WIDER):
        rebuilt = SearchSpace.from_mapping(space.as_dict(), source="test")
        assert rebuilt.as_dict() == space.as_dict()


# The shape of a version-2 identity, frozen when version 2 was written. A setting added to the
# identity or to the search space changes the shape: the change must come with a new
# RECORD_VERSION and a step in record.migrate that gives older records the value they had.
V2_SHAPE = {
    "cv_folds": None, "early_stopping": None, "hidden": None, "max_epochs": None,
    "model": None, "prune_diagnosed": None, "seed": None, "val_fraction": None,
    "warm_start": None, "search_space": {
        "augments", "batch_sizes", "dropout", "lr_adam", "lr_adamw", "lr_sgd", "momentum",
        "norms", "optimizers", "schedulers", "weight_decay"},
}


def test_today_s_identity_has_the_shape_of_the_record_version_it_writes() -> None:
    identity = settings_identity(StudyConfig())
    shape = {key: set(value) if isinstance(value, dict) else None
             for key, value in identity.items()}
    assert RECORD_VERSION == 2, "a new version: freeze its shape here, beside V2_SHAPE"
    assert shape == V2_SHAPE


def test_a_version_1_identity_is_migrated_to_today_s_shape() -> None:
    today = settings_identity(StudyConfig())
    v1 = {key: value for key, value in today.items() if key not in IDENTITY_BEFORE_RECORDED}
    v1["search_space"] = {k: v for k, v in today["search_space"].items()
                          if k not in ("norms", "augments")}
    migrated = read_identity({}, {"identity": v1})
    assert migrated is not None and set(migrated) == set(today)
    assert set(migrated["search_space"]) == set(today["search_space"])
    assert migrated["search_space"]["norms"] == ["none"]  # what version 1 searched
    assert read_identity({}, {}) is None  # a study with no identity yet


@pytest.mark.slow
def test_every_attribute_a_study_keeps_is_one_the_record_declares(
    finished_study: FinishedStudy,
) -> None:
    declared = {value for name, value in vars(record).items()
                if name.endswith(("_ATTR", "_PREFIX")) and isinstance(value, str)}

    def known(key: str) -> bool:
        return key in declared or any(key.startswith(p) for p in
                                      (record.IDENTITY_PREFIX, record.WORKER_PREFIX))

    study = optuna.load_study(study_name="mnist",
                              storage=f"sqlite:///{finished_study.root}/optuna.db")
    assert [key for key in study.user_attrs if not known(key)] == []
    keys = {key for trial in study.trials for key in trial.user_attrs}
    assert record.BEST_VAL_ACC_ATTR in keys and record.WARM_START_ATTR in keys
    assert sorted(key for key in keys if not known(key)) == []
    system = study._storage.get_study_system_attrs(study._study_id)
    assert system[record.RECORD_VERSION_ATTR] == RECORD_VERSION
