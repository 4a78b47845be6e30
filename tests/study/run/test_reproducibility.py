"""One seed drives split, sampler and torch; and the search never touches the test set."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

import study.run.runner as runner
from data_pipeline import IdxContent
from data_pipeline import mnist as mnist_module
from study.config import StudyConfig
from study.tracking import NullTracker
from tests.helpers import STUDY_TRAIN_IMAGES, cli_env, evaluated_here, small_run_args
from tests.synthetic import write_synthetic_mnist


def _trials(directory: Path) -> tuple[optuna.Study, list[optuna.trial.FrozenTrial]]:
    study = optuna.load_study(study_name="mnist", storage=f"sqlite:///{directory}/optuna.db")
    return study, study.get_trials(deepcopy=False)


@pytest.mark.parametrize("cohort_size", ["1", "3"], ids=["one-at-a-time", "cohorts-of-3"])
@pytest.mark.slow
def test_same_seed_in_fresh_storages_gives_the_same_study_to_the_last_bit(
    tmp_path: Path, cohort_size: str,
) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    args = small_run_args("--data-dir", str(data), "--n-trials", "6", "--seed", "3",
                          "--sampler", "tpe", "--device", "cpu", "--cohort-size", cohort_size)
    runs = []
    for name in ("first", "second"):  # two processes side by side: nothing shared but the seed
        (tmp_path / name).mkdir()
        runs.append(subprocess.Popen([sys.executable, "-m", "study", *args], cwd=tmp_path / name,
                                     env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True))
    for proc in runs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr  # both runs finished
    (study_a, a), (study_b, b) = _trials(tmp_path / "first"), _trials(tmp_path / "second")
    assert len(a) == len(b) == 6  # the whole budget, in each
    assert [t.params for t in a] == [t.params for t in b]  # sampler: the same suggestions
    # Training: the same per-epoch validation losses, compared as floats with ==, not approx.
    assert [t.intermediate_values for t in a] == [t.intermediate_values for t in b]
    assert [t.state for t in a] == [t.state for t in b]  # the pruner decided alike
    assert all(t.intermediate_values for t in a)  # there was something to compare
    fingerprints = {s.user_attrs["split_fingerprint"] for s in (study_a, study_b)}
    assert len(fingerprints) == 1  # and the split was the same one


Hook = Callable[..., Any]


@pytest.mark.parametrize("cv_folds", [None, 2], ids=["holdout", "cv"])
def test_the_search_never_reads_the_test_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             cv_folds: int | None) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    test_files = sorted(data.glob("t10k-*"))
    phase = ["setup"]
    reads: list[tuple[str, str]] = []  # (phase, file name) of every IDX file read
    real_read = mnist_module.read_idx

    def recording_read(path: Path) -> IdxContent:
        reads.append((phase[0], path.name))
        return real_read(path)

    monkeypatch.setattr(mnist_module, "read_idx", recording_read)
    monkeypatch.setattr(runner, "_search", _search_without(test_files, runner._search, phase))
    monkeypatch.setattr(runner, "evaluate_best",
                        _in_phase("final", runner.evaluate_best, phase))
    config = StudyConfig(
        data_dir=data, allow_noncanonical_data=True, storage=f"sqlite:///{tmp_path}/o.db",
        n_trials=2, max_epochs=1, hidden=16, val_fraction=0.25, cv_folds=cv_folds,
        device="cpu", no_progress=True)
    summary = evaluated_here(config, tracker=NullTracker())
    assert summary.state_counts.get("COMPLETE") == 2  # the search ran with the test set gone
    test_reads = [(p, name) for p, name in reads if name.startswith("t10k")]
    assert not [r for r in test_reads if r[0] == "search"]  # no trial even tried to read it
    assert ("setup", "t10k-images-idx3-ubyte.gz") in test_reads  # the audit's hashes, before
    final = [name for p, name in test_reads if p == "final"]
    assert final == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]  # read once


def _search_without(files: list[Path], optimize: Hook, phase: list[str]) -> Hook:
    """The study's search with the test files moved away: touching them would raise."""
    def hidden(*args: Any, **kwargs: Any) -> Any:
        phase[0] = "search"
        for path in files:
            path.rename(path.with_name(path.name + ".hidden"))
        try:
            return optimize(*args, **kwargs)
        finally:
            for path in files:
                path.with_name(path.name + ".hidden").rename(path)
            phase[0] = "after search"
    return hidden


def _in_phase(name: str, function: Hook, phase: list[str]) -> Hook:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        phase[0] = name
        try:
            return function(*args, **kwargs)
        finally:
            phase[0] = f"after {name}"
    return wrapped
