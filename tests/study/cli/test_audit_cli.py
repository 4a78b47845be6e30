"""`mnist-study audit`, and `run` refusing or cleaning a split with duplicates across it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from PIL import Image

from data_pipeline import find_mnist
from study.cli import main
from tests.helpers import STUDY_TRAIN_IMAGES, run_cli
from tests.planted import Planted, write_planted_mnist

SPLIT = ["--val-fraction", "0.25", "--seed", "0", "--allow-noncanonical-data"]


@pytest.fixture
def planted(tmp_path: Path) -> Planted:
    return write_planted_mnist(tmp_path / "planted")


def _pairs(report: dict) -> set[tuple[str, str, int, str, int]]:
    return {(p["kind"], p["part_a"], p["index_a"], p["part_b"], p["index_b"])
            for p in report["duplicates"]}


def test_audit_lists_every_planted_duplicate_and_exits_1(planted: Planted,
                                                         tmp_path: Path) -> None:
    result = run_cli(tmp_path, "audit", "--data-dir", str(planted.directory), *SPLIT,
                     "--format", "json", "--output", str(tmp_path / "out"))
    assert result.returncode == 1, result.stderr  # `run` would refuse this split
    report = json.loads(result.stdout)
    assert _pairs(report) == planted.cross | planted.within  # all plants, and nothing else
    assert report["split"]["val_fraction"] == 0.25 and report["split"]["seed"] == 0  # flags
    assert report["index_overlaps"] == {"train&val": 0}  # train and val are disjoint
    assert json.loads((tmp_path / "out" / "audit.json").read_text()) == report  # same report
    markdown = (tmp_path / "out" / "audit.md").read_text()
    assert "**4 pairs cross the split**" in markdown and "## Normalisation" in markdown


def test_audit_output_draws_the_closest_pairs(planted: Planted, tmp_path: Path) -> None:
    run_cli(tmp_path, "audit", "--data-dir", str(planted.directory), *SPLIT, "--output",
            str(tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "audit.json").read_text())
    closest = report["closest"]
    assert len(closest) == 6  # the flagged pairs: 4 across the split, 2 inside a part
    assert [p["part_a"] != p["part_b"] for p in closest] == [True] * 4 + [False] * 2  # cross 1st
    with Image.open(tmp_path / "out" / "closest_pairs.png") as png:
        assert png.format == "PNG" and png.mode == "L"  # a real greyscale PNG
        assert png.size == (1072, 244)  # 4 pairs a row, 2 rows: 8 + 4 * (258 + 8), 8 + 2 * 118
        picture = np.asarray(png)
    files = find_mnist(planted.directory, verify=False)
    assert files is not None  # the planted IDX files are found
    first = closest[0]
    image = files.load("test" if first["part_a"] == "test" else "train").images[first["index_a"]]
    drawn = picture[8 + 26:8 + 26 + 84, 8:8 + 84]  # the first tile's left image, 3x zoomed
    assert (drawn == np.kron(image, np.ones((3, 3), np.uint8))).all()  # the pair named first
    markdown = (tmp_path / "out" / "audit.md").read_text()
    assert (f"1. {first['kind']} {first['part_a']}[{first['index_a']}]~"
            f"{first['part_b']}[{first['index_b']}]") in markdown  # numbered as drawn


def test_audit_with_drop_duplicates_previews_the_clean_split(planted: Planted,
                                                             tmp_path: Path) -> None:
    result = run_cli(tmp_path, "audit", "--data-dir", str(planted.directory), *SPLIT,
                     "--drop-duplicates")
    assert result.returncode == 0, result.stderr  # nothing crosses the split any more
    assert "No duplicate pair crosses the split." in result.stdout  # the cleaned split
    dropped = ", ".join(str(i) for i in sorted(k[2] for k in planted.cross))
    # Exactly the training member of each planted cross-split pair would go.
    assert f"Dropped from training by --drop-duplicates: 4 images ({dropped})" in result.stdout


def test_run_refuses_a_split_with_duplicates_across_it(planted: Planted,
                                                       tmp_path: Path) -> None:
    result = run_cli(tmp_path, "run", "--data-dir", str(planted.directory), *SPLIT,
                     "--n-trials", "1", "--max-epochs", "1", "--no-progress")
    assert result.returncode == 2, result.stderr  # a user error: exit 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1  # one line says it all
    assert "4 duplicate image pairs cross the split" in errors[0]  # says why
    assert "--drop-duplicates" in errors[0]  # and names the way out
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/optuna.db")
    assert storage.get_all_studies() == []  # refused before a study or trial existed


@pytest.mark.slow
def test_run_with_drop_duplicates_logs_the_audit_and_tags_every_trial(tmp_path: Path) -> None:
    planted = write_planted_mnist(tmp_path / "planted", n_train=STUDY_TRAIN_IMAGES)
    result = run_cli(tmp_path, "run", "--data-dir", str(planted.directory), *SPLIT,
                     "--drop-duplicates", "--n-trials", "2", "--max-epochs", "1", "--hidden", "16",
                     "--no-progress")
    assert result.returncode == 0, result.stderr  # the cleaned split runs
    study = optuna.load_study(study_name="mnist", storage=f"sqlite:///{tmp_path}/optuna.db")
    attrs = study.user_attrs
    assert attrs["audit"]["dropped_from_train"] == 4  # the compact summary, in the study
    assert attrs["audit"]["sizes"] == {"train": 1571, "val": 525, "test": 100}  # train only
    assert {"code_version", "data_fingerprint", "package_versions"} <= set(attrs)  # provenance
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    for trial in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)):
        tags = client.get_run(trial.user_attrs["mlflow_run_id"]).data.tags
        assert tags["split_fingerprint"] == attrs["split_fingerprint"]  # one split for all
    parent = client.get_run(client.get_run(study.trials[0].user_attrs["mlflow_run_id"])
                            .data.tags["mlflow.parentRunId"])
    params = parent.data.params  # the resolved config, flattened, under its own prefix
    assert params["config.seed"] == "0" and params["config.drop_duplicates"] == "True"
    assert "version.torch" in parent.data.tags and "code_version" in parent.data.tags  # versions
    local = client.download_artifacts(parent.info.run_id, "audit", str(tmp_path / "dl"))
    report = json.loads((Path(local) / "audit.json").read_text())
    assert report["dropped"] == sorted(k[2] for k in planted.cross)  # what was removed
    assert (Path(local) / "audit.md").read_text().startswith("# Leakage audit")


@pytest.mark.parametrize("command", ["run", "audit"])
def test_help_documents_the_leakage_flags(command: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    for flag in ("--cv-folds", "--near-duplicate-threshold", "--drop-duplicates"):
        assert flag in out  # the same flags on both commands
    assert "default 0.01" in out  # the near-duplicate threshold's default is shown


@pytest.mark.slow
def test_real_mnist_has_no_duplicates_at_the_default_threshold(tmp_path: Path,
                                                               real_mnist_dir: Path) -> None:
    clean = run_cli(tmp_path, "audit", "--data-dir", str(real_mnist_dir), "--format", "json")
    assert clean.returncode == 0, clean.stderr  # the README's `run` is not refused
    report = json.loads(clean.stdout)
    assert report["duplicates"] == []  # no exact and no near pair anywhere in 70k images
    assert report["max_class_deviation"] < 1e-4  # stratified: every class within 0.01%
    first = report["closest"][0]  # the README's closest pair: two writers' slanted "1"s
    assert (first["index_a"], first["index_b"], first["distance"]) == (28350, 37674, 0.011727)
    loose = run_cli(tmp_path, "audit", "--data-dir", str(real_mnist_dir), "--format", "json",
                    "--near-duplicate-threshold", "0.02")
    counts = {k: v for k, v in json.loads(loose.stdout)["pair_counts"].items() if any(v.values())}
    assert counts == {  # the look-alike "1"s the README reports, pinned
        "train/train": {"exact": 0, "near": 18}, "train/val": {"exact": 0, "near": 1},
        "train/test": {"exact": 0, "near": 10}, "test/test": {"exact": 0, "near": 1}}
