"""The budget plan: durations, rungs, the expected trial count, the plan line and its refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.config import DEFAULT_N_TRIALS, StudyConfig, resolve_config
from study.errors import ConfigError
from study.search.plan import Plan, expected_epochs, format_duration, parse_duration, rungs


@pytest.mark.parametrize(("text", "seconds"), [
    ("600", 600.0), (600, 600.0), (90.5, 90.5), ("90s", 90.0), ("10m", 600.0), ("1h", 3600.0),
    ("1.5h", 5400.0), ("1h30m", 5400.0), (" 2M ", 120.0), ("1m30s", 90.0),
])
def test_a_duration_is_seconds_or_a_number_with_units(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "10x", "m10", "10m garbage", "", "0", "-5m", "nan",
                                  "inf", "1h-30m"])
def test_a_bad_duration_is_one_line_that_shows_the_forms(text: str) -> None:
    with pytest.raises(ConfigError, match=r"timeout must be .*duration") as info:
        parse_duration(text)
    assert "\n" not in str(info.value)


def test_timeout_in_a_toml_file_or_on_the_command_line_takes_units(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text('timeout = "10m"\n')
    assert resolve_config({}, config_path=path, env={}).timeout == 600.0
    assert resolve_config({"timeout": "1h"}, config_path=None, env={}).timeout == 3600.0
    path.write_text("timeout = 90\n")
    assert resolve_config({}, config_path=path, env={}).timeout == 90.0
    with pytest.raises(ConfigError, match=r"study.toml: timeout must be"):
        path.write_text('timeout = "ten minutes"\n')
        resolve_config({}, config_path=path, env={})


def test_with_timeout_alone_time_is_the_budget() -> None:
    assert StudyConfig().trial_limit() == DEFAULT_N_TRIALS  # neither: the default count
    assert StudyConfig(timeout=600).trial_limit() is None  # time alone: no trial limit
    assert StudyConfig(timeout=600, n_trials=5).trial_limit() == 5  # both: whichever first
    assert StudyConfig(n_trials=7).trial_limit() == 7


def test_durations_read_as_people_say_them() -> None:
    assert [format_duration(s) for s in (45, 600, 630, 3600, 5400)] == [
        "45 s", "10 min", "10 min 30 s", "1 h", "1 h 30 min"]


def test_the_rungs_are_successive_halving_s_over_the_epochs() -> None:
    assert rungs(40) == (2, 6, 18)
    assert rungs(54) == (2, 6, 18)
    assert rungs(55) == (2, 6, 18, 54)
    assert rungs(2) == () and rungs(1) == ()
    # All trials train 2 epochs, a third 6, a ninth 18, a 27th all 40.
    assert expected_epochs((2, 6, 18), 40) == pytest.approx(2 + 4 / 3 + 12 / 9 + 22 / 27)
    assert expected_epochs((), 8) == 8


def test_the_plan_line_says_the_budget_the_rungs_and_about_how_many_trials() -> None:
    plan = Plan(max_epochs=40, rungs=(2, 6, 18), budget_seconds=600, n_trials=None,
                epoch_seconds=1.0, warm_start=("best known", "seed recipe"), warm_epochs=40)
    # 2 warm-start trials of 40 epochs, then (600 - 40) s at 5.48 epochs a trial: 102 more.
    assert plan.expected_trials() == 2 + int(560 / expected_epochs((2, 6, 18), 40))
    assert plan.line() == (
        f"10 min budget: rungs at 2, 6, 18 of 40 epochs, about {plan.expected_trials()} "
        f"trials (warm start: best known, seed recipe; an epoch takes about 1.0 s here)")
    counted = Plan(max_epochs=8, rungs=(), budget_seconds=None, n_trials=20)
    assert counted.line() == "20 trials: up to 8 epochs a trial"
    both = Plan(max_epochs=8, rungs=(2, 6), budget_seconds=60, n_trials=5, epoch_seconds=1.0)
    assert both.line().startswith("1 min budget or 5 trials, whichever ends first: rungs at 2, 6")


def test_a_budget_for_part_of_a_trial_is_said_and_for_under_half_refused() -> None:
    part = Plan(max_epochs=40, rungs=(2, 6, 18), budget_seconds=300, n_trials=None,
                epoch_seconds=9.0, left_seconds=300)
    part.check_fits("cnn")  # 360 s of trial in 300 s: it runs, ending at the deadline
    assert part.shortfall("cnn") == (
        "the 5 min budget holds about 33 of a cnn trial's 40 epochs here (9.0 s an epoch): "
        "the first trial will end at the deadline with its best epoch so far; give a longer "
        "--timeout or fewer --max-epochs for whole trials")
    plan = Plan(max_epochs=40, rungs=(2, 6, 18), budget_seconds=300, n_trials=None,
                epoch_seconds=9.0, left_seconds=170)
    assert not plan.fits_one_trial()
    with pytest.raises(ConfigError) as info:
        plan.check_fits("cnn")
    assert str(info.value) == (
        "a 5 min budget cannot train one cnn trial of 40 epochs here: 2 min 50 s of it is "
        "left once the data is ready, and a trial takes about 6 min (9.0 s an epoch); give "
        "--timeout 25m or more, or fewer --max-epochs")
    whole = Plan(max_epochs=40, rungs=(), budget_seconds=300, n_trials=None, epoch_seconds=7.0)
    whole.check_fits("mlp")  # 280 s of 300: one trial fits
    assert whole.shortfall("mlp") is None
