"""The time-budget benchmark: its sides run for equal wall time and land in the report."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from study.bench import budget, report_budget
from study.config import resolve_config
from study.search.strategy import SAMPLERS
from tests.helpers import STUDY_TRAIN_IMAGES
from tests.synthetic import write_synthetic_mnist

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_the_previous_default_is_a_config_the_run_accepts(tmp_path: Path) -> None:
    path = tmp_path / "previous.toml"
    path.write_text(budget.previous_default())
    config = resolve_config({}, config_path=path, env={})
    assert (config.max_epochs, config.pruner, config.warm_start) == (8, "median", False)
    assert config.early_stopping_patience == 0
    assert config.search_space.norms == ("none",) and config.search_space.lr == (1e-4, 3e-2)


def test_the_table_gives_every_row_and_each_side_s_mean() -> None:
    rows = [{"side": side, "seed": seed, "test_acc": acc, "best_val_loss": 0.05, "trials": 9,
             "epochs": 90, "first_98_s": first}
            for side, seed, acc, first in [("budgeted", 0, 0.99, 25.0),
                                           ("budgeted", 1, 0.985, 31.0),
                                           ("conventional", 0, 0.97, None)]]
    text = report_budget.table({"rows": rows})
    assert "| budgeted | 1 | 98.50% | 0.0500 | 9 | 90 | 31 s |" in text
    assert "| conventional | 0 | 97.00% | 0.0500 | 9 | 90 | never |" in text
    assert "| budgeted | 98.75% | 98.50% | 2 |" in text  # mean, lowest, seeds


def _row(side: str, seed: int, acc: float) -> dict[str, object]:
    return {"side": side, "seed": seed, "test_acc": acc}


def test_a_side_measured_again_replaces_its_rows_and_keeps_the_others() -> None:
    versions = {"torch": "2", "optuna": "5"}
    old = {"budget_s": 600.0, "versions": versions, "command": "first",
           "rows": [_row("budgeted", 0, 0.99), _row("random", 0, 0.90)]}
    new = {"budget_s": 600.0, "versions": versions, "commands": ["second"],
           "rows": [_row("random", 0, 0.95), _row("tpe-independent", 1, 0.98)]}
    result = budget.merged(old, new)
    assert [(r["side"], r["seed"], r["test_acc"]) for r in result["rows"]] == [
        ("budgeted", 0, 0.99), ("tpe-independent", 1, 0.98), ("random", 0, 0.95)]
    assert result["commands"] == ["first", "second"] and result["seeds"] == [0, 1]
    # Another budget, or other library versions, are another benchmark: not mixed in.
    assert budget.merged({**old, "budget_s": 60.0}, new) == new
    assert budget.merged({**old, "versions": {"torch": "3", "optuna": "5"}}, new) == new


def test_the_sampler_sides_are_the_budgeted_default_under_another_sampler(
        tmp_path: Path) -> None:
    args = argparse.Namespace(data_dir=tmp_path, allow_noncanonical_data=False)
    plain = budget._command("budgeted", seed=1, budget=600.0, args=args, folder=tmp_path)
    for side in budget.SAMPLER_SIDES:
        command = budget._command(side, seed=1, budget=600.0, args=args, folder=tmp_path)
        assert command[-2:] == ["--sampler", side]
        # Else the budgeted command, under the side's own study name.
        assert [word.replace(side, "budgeted") for word in command[:-2]] == plain
        assert side in SAMPLERS


@pytest.mark.slow
def test_two_sides_run_side_by_side_and_write_their_section(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    out = tmp_path / "docs"
    out.mkdir()
    shutil.copy(DOCS / "benchmarks.json", out)
    assert budget.main(["--data-dir", str(data), "--budget", "25s", "--seeds", "0",
                        "--sides", "budgeted,conventional", "--workdir", str(tmp_path / "w"),
                        "--allow-noncanonical-data", "--out", str(out)]) == 0
    result = json.loads((out / budget.BUDGET_NAME).read_text())
    assert [r["side"] for r in result["rows"]] == ["budgeted", "conventional"]
    for row in result["rows"]:
        assert row["trials"] >= 1 and 0.0 <= row["test_acc"] <= 1.0
        assert row["wall_s"] < 25 + 60  # stopped at the budget, then tested and published
    assert "## A time budget: 25 s per side, one core each" in (out / "benchmarks.md").read_text()
