"""What a person sees in the terminal: one format, a line per trial, epoch progress."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from study.run.console import Format, KnownWarnings
from tests.helpers import STUDY_TRAIN_IMAGES, FinishedStudy
from tests.synthetic import write_synthetic_mnist

TIME = re.compile(r"^\d\d:\d\d:\d\d ")


def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    data = write_synthetic_mnist(tmp_path / "data", n_train=STUDY_TRAIN_IMAGES)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MNIST_STUDY_DATA_DIR")}
    return subprocess.run(
        [sys.executable, "-m", "study", "run", "--data-dir", str(data),
         "--allow-noncanonical-data", "--n-trials", "3", "--max-epochs", "2", "--hidden", "16",
         "--val-fraction", "0.25", *extra], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=300)


@pytest.mark.slow
def test_a_quiet_console_one_format_and_one_line_per_trial(
    finished_study: FinishedStudy,
) -> None:
    done = finished_study.result  # a `run --no-progress` of 3 trials
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert all(TIME.match(line) for line in lines), lines  # one format, every line
    assert not any("Trial 0 finished with value" in line for line in lines)  # Optuna's: off
    per_trial = [line for line in lines if re.search(r" trial \d+ (complete|pruned|fail)", line)]
    assert len(per_trial) == FinishedStudy.N_TRIALS  # one short line per finished trial
    assert all(len(line) < 200 for line in per_trial)  # not every parameter of the trial
    assert not any("Successfully registered model" in line for line in lines)
    assert "TEST accuracy" in done.stdout


@pytest.mark.slow
def test_verbose_brings_optunas_lines_back_and_the_bar_shows_epochs(tmp_path: Path) -> None:
    done = _run(tmp_path, "--verbose")
    assert done.returncode == 0, done.stderr
    assert "Trial 0 finished with value" in done.stderr  # Optuna's own line, in our format
    assert re.search(r"trial \d+ epoch 2/2: val loss \d", done.stderr)  # the bar's status


def test_known_warnings_are_dropped_and_others_kept() -> None:
    drop = KnownWarnings()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("optuna", logging.WARNING, __file__, 1, message, None, None)

    assert not drop.filter(record("Some regimes for parameter `exp_gamma` have less than 2 "
                                  "trials. The importance of the parameter may be inaccurate."))
    assert drop.filter(record("something the user should know"))
    assert Format().format(record("w")).endswith(" warning: w")  # the level when it matters


@pytest.mark.parametrize("level", [logging.INFO])
def test_info_lines_carry_no_level_or_logger_name(level: int) -> None:
    line = Format().format(logging.LogRecord("study.run.runner", level, __file__, 1, "hello", None,
                                             None))
    assert TIME.match(line) and line.endswith(" hello") and "study.run.runner" not in line


def test_with_a_budget_the_bar_shows_time_used_and_left(capsys: pytest.CaptureFixture[str],
                                                       ) -> None:
    import optuna

    from study.run.console import Console
    from study.train.engine_types import EpochMetrics

    console = Console(total=None, max_epochs=40, bar=True, budget_seconds=600)
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0}, user_attrs={"stopped_by": "time budget",
                                                "stopped_epoch": 7, "diagnosis": "converging"})
    study.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=1)
    console.trial_done(study, study.trials[0])
    console.epoch(1, EpochMetrics(epoch=3, train_loss=0.1, train_acc=0.9, val_loss=0.2,
                                  val_acc=0.95, lr=0.01, seconds=1.0))
    console.close()
    bar = capsys.readouterr().err
    assert "10:00 left" in bar or "9:59 left" in bar
    assert "0:00 used" in bar and "1 trials | trial 1 epoch 3/40: val loss 0.2000" in bar
    assert "/600" not in bar  # no trial count pretending to be the budget


def test_a_trial_the_budget_ended_says_so(caplog: pytest.LogCaptureFixture) -> None:
    import optuna

    from study.run.console import Console

    console = Console(total=None, max_epochs=40, bar=False, budget_seconds=60)
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0}, user_attrs={"stopped_by": "time budget",
                                                "stopped_epoch": 7, "diagnosis": "converging"})
    study.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=1)
    with caplog.at_level(logging.INFO, logger="study"):
        console.trial_done(study, study.trials[0])
    assert "trial 0 complete: the time budget ended it after epoch 7; converging" in caplog.text


def test_a_pruned_trial_s_line_says_pruned_once_and_fits_a_terminal(
        caplog: pytest.LogCaptureFixture) -> None:
    import optuna

    from study.diagnose.diagnosis import pruner_evidence
    from study.run.console import Console

    console = Console(total=30, max_epochs=40, bar=False)
    study = optuna.create_study()
    study.enqueue_trial({"x": 0.474})
    study.optimize(lambda t: t.suggest_float("x", 0, 2), n_trials=1)  # the best so far
    evidence = pruner_evidence(0.123456, [0.0456789, 0.0789012] * 4, step=18)
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED, params={"x": 1.5},
        distributions={"x": optuna.distributions.FloatDistribution(0, 2)},
        intermediate_values={18: 0.123456},
        user_attrs={"diagnosis": f"pruned at epoch 18: {evidence}"}))
    with caplog.at_level(logging.INFO, logger="study"):
        console.trial_done(study, study.trials[1])
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trial 1 ")]
    assert line == ("trial 1 pruned at epoch 18: val loss 0.1235 ranked 9 of 9 (best 0.04568, "
                    "median 0.0789) | best so far: trial 0 (0.4740)")
    assert len(line) + len("00:00:00 ") <= 132  # pruned once, the epoch once: a wide terminal
