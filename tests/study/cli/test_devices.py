"""`run --devices`: one worker per GPU on one shared study."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from study.cli.devices import parse_devices, run_workers, worker_commands
from study.errors import ConfigError, DeviceError
from tests.helpers import run_main, small_run_args


def test_devices_name_every_gpu_or_some() -> None:
    assert parse_devices("all", visible=4) == [0, 1, 2, 3]
    assert parse_devices("2,0", visible=4) == [2, 0]
    assert parse_devices("1", visible=2) == [1]


@pytest.mark.parametrize(("value", "visible", "error", "said"), [
    ("all", 0, DeviceError, "needs CUDA GPUs, but torch sees none"),
    ("0", 0, DeviceError, "needs CUDA GPUs, but torch sees none"),
    ("2", 2, DeviceError, "torch sees 2 GPU(s), numbered 0 to 1"),
    ("0,0", 2, DeviceError, "each named once"),
    ("gpu", 2, ConfigError, "takes 'all' or GPU indices such as 0,1"),
])
def test_devices_that_are_not_there_are_refused(value: str, visible: int,
                                                error: type[Exception], said: str) -> None:
    with pytest.raises(error, match=said.replace("(", r"\(").replace(")", r"\)")):
        parse_devices(value, visible=visible)


def test_each_worker_is_the_same_command_on_its_own_gpu() -> None:
    for argv in (["run", "--n-trials", "8", "--devices", "0,1", "--storage", "journal:j.log"],
                 ["run", "--n-trials", "8", "--devices=0,1", "--storage", "journal:j.log"]):
        assert worker_commands(argv, [0, 1]) == [
            [sys.executable, "-m", "study", "run", "--n-trials", "8", "--storage",
             "journal:j.log", "--device", f"cuda:{d}"] for d in (0, 1)]


def test_the_launcher_waits_for_every_worker_and_exits_with_the_worst_code() -> None:
    def python(code: str) -> list[str]:
        return [sys.executable, "-c", code]

    assert run_workers([python("pass"), python("import time; time.sleep(0.5)")]) == 0
    assert run_workers([python("raise SystemExit(2)"), python("pass")]) == 2
    assert run_workers([python("pass"), python("raise SystemExit(130)"),
                        python("raise SystemExit(2)")]) == 130


@pytest.mark.parametrize(("args", "said"), [
    (["--devices", "all"], "give --storage journal:PATH (one machine) or postgresql://"),
    (["--devices", "0", "--device", "cpu", "--storage", "journal:j.log"],
     "give one of the two"),
    (["--devices", "all", "--storage", "journal:j.log"], "torch sees none"),
])
def test_devices_on_this_machine_is_one_line_and_exit_2(tmp_path: Path, args: list[str],
                                                        said: str) -> None:
    if "torch sees none" in said:
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has GPUs")
    result = run_main(tmp_path, *small_run_args("--data-dir", str(tmp_path), *args))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith("mnist-study: error: ")
    assert said in result.stderr.splitlines()[-1] and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # refused before any store was made
