"""Helpers shared by several test modules (test modules never import each other).

Servers a test starts live in tests/servers.py, planted duplicates in tests/planted.py,
PostgreSQL in tests/pg.py, synthetic IDX data in tests/synthetic.py.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

import optuna
import pytest
from filelock import FileLock

from study.bench.settings import REFERENCE_SPACE
from study.cli import main
from study.store.liveness import EVALUATION_CLAIM
from study.store.record import TRACKING_URI_ATTR
from tests.synthetic import write_synthetic_mnist

if TYPE_CHECKING:
    from study.config import StudyConfig
    from study.store.result import StudySummary

# The default space before the budget plan (the benchmark's reference space). Unit tests that
# give parameters by hand (a FixedTrial's "scheduler": "none") are written against it.
CLASSIC_SPACE = REFERENCE_SPACE

# Synthetic training images for a study on the default search space: `run` refuses batch sizes
# larger than the train split, and the largest default one (1024) must fit a 3:1 holdout split
# (1575 train images) and each fold of a 2-fold cross-validation (1050).
STUDY_TRAIN_IMAGES = 2100

# Settings a developer's shell may hold that would point a test's CLI at their own stores.
_USER_SETTINGS = ("MLFLOW_TRACKING_URI", "MNIST_STUDY_DATA_DIR")


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a user who set nothing, plus EXTRA: stores come from flags or defaults."""
    env = {k: v for k, v in os.environ.items() if k not in _USER_SETTINGS}
    return {**env, **extra}


def run_cli(cwd: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`python -m study ARGS` in CWD, as a user runs it: a real process, its output captured."""
    return subprocess.run([sys.executable, "-m", "study", *args], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def run_main(cwd: Path, *args: str, env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
    """`mnist-study ARGS` through main() in this process, in CWD with ENV (default: cli_env()),
    its output captured: what run_cli does, without a new interpreter's seconds of imports. For
    runs refused before any store is used, which need no process boundary: MLflow caches a
    store per URI, so a relative default URI would reach an earlier test's store from here."""
    saved_env, saved_cwd = dict(os.environ), Path.cwd()
    root = logging.getLogger()
    saved_logging = (root.handlers[:], root.level)
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(env or cli_env())
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        root.handlers[:], root.level = saved_logging  # main() set up its own console
        logging.captureWarnings(False)
    return subprocess.CompletedProcess(["mnist-study", *args], code, out.getvalue(),
                                       err.getvalue())


def small_run_args(*extra: str) -> list[str]:
    """`run` on synthetic data, small enough for seconds: two epochs of a 16-unit MLP."""
    return ["run", "--max-epochs", "2", "--allow-noncanonical-data", "--no-progress",
            "--val-fraction", "0.25", "--hidden", "16", *extra]


@dataclass(frozen=True)
class FinishedStudy:
    """A tiny study that `mnist-study run` finished in ROOT, as a user runs it: the default
    stores in ROOT (optuna.db, mlflow/), the data in ROOT/data, named by MNIST_STUDY_DATA_DIR.

    Made once per test session (the `finished_study` fixture): a test that needs a finished
    study copies ROOT and works on its copy, never on ROOT. Both stores record places by
    absolute path: the copy's study is pointed at the copy's MLflow store (as a user who moved
    the folder would have to), while its MLflow experiment keeps its artifacts under ROOT, so a
    resumed copy adds files there, each under a new run id of its own; ROOT's stores never
    change.
    """

    root: Path
    result: subprocess.CompletedProcess[str]

    N_TRIALS = 3

    @staticmethod
    def args(*extra: str) -> list[str]:
        """The `run` that made it (data from the environment), then EXTRA (later flags win)."""
        return small_run_args("--n-trials", str(FinishedStudy.N_TRIALS), *extra)

    @staticmethod
    def env(root: Path) -> dict[str, str]:
        return cli_env(MNIST_STUDY_DATA_DIR=str(root / "data"))

    def copy(self, dest: Path) -> Path:
        shutil.copytree(self.root, dest)
        study = optuna.load_study(study_name="mnist", storage=f"sqlite:///{dest}/optuna.db")
        study.set_user_attr(TRACKING_URI_ATTR, f"sqlite:///{dest.resolve()}/mlflow/mlflow.db")
        return dest


def finished_study_in(root: Path) -> FinishedStudy:
    """The finished study in ROOT, made there by the first caller of any process (a lock
    keeps the others waiting until it is done), read back by every later one."""
    output = root / "output.json"
    with FileLock(f"{root}.lock"):
        if not output.exists():
            root.mkdir(parents=True, exist_ok=True)
            write_synthetic_mnist(root / "data", n_train=STUDY_TRAIN_IMAGES)
            made = run_cli(root, *FinishedStudy.args(), env=FinishedStudy.env(root))
            assert made.returncode == 0, made.stderr
            output.write_text(json.dumps({"stdout": made.stdout, "stderr": made.stderr}))
    printed = json.loads(output.read_text())
    result = subprocess.CompletedProcess(["mnist-study", *FinishedStudy.args()], 0,
                                         printed["stdout"], printed["stderr"])
    return FinishedStudy(root=root, result=result)


def evaluated_here(config: StudyConfig, **kwargs: Any) -> StudySummary:
    """run_study for a test's only worker, which evaluates its study itself."""
    from study.run.runner import run_study
    from study.store.result import StudySummary

    summary = run_study(config, **kwargs)
    assert isinstance(summary, StudySummary), summary
    return summary


def assert_evaluated_once(outputs: list[str], *, study: optuna.Study,
                          tracking_uri: str) -> None:
    """The workers' OUTPUTS of one STUDY: one of them evaluated it, once, after its last
    trial; each of the others printed one line (or the result that evaluation stored); and
    each says how many trials it ran itself, which add up to the study's."""
    from mlflow import MlflowClient

    evaluated = [out for out in outputs if "test set read once" in out
                 and "the results its evaluation stored" not in out]
    assert len(evaluated) == 1, outputs  # the test set was read by one worker
    counts = []
    for out in outputs:
        if out is not evaluated[0] and "TEST accuracy" not in out:
            assert re.search(r"still search|is evaluating the study", out), out
        found = re.search(r"\((\d+) run now|this worker ran (\d+) trial", out)
        assert found is not None, out
        counts.append(int(found.group(1) or found.group(2)))
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    assert sum(counts) == len(finished), (counts, outputs)  # each counts its own trials
    versions = MlflowClient(tracking_uri).search_model_versions(
        f"name='mnist-study-{study.study_name}'")
    assert len(versions) == 1, versions  # one model version registered
    last = max(t.datetime_complete.timestamp() for t in finished if t.datetime_complete)
    assert versions[0].creation_timestamp / 1000 >= last  # after the study's last trial
    assert EVALUATION_CLAIM.format(study.study_name) not in optuna.get_all_study_names(
        study._storage)  # the claim is released


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (another process may still take it before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unavailable(reason: str) -> NoReturn:
    """Skip for want of REASON, or fail under CI (env CI set): CI installs all and runs all."""
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def import_or_skip(module: str, *, install: str) -> ModuleType:
    """MODULE imported; without it the tests that need it skip (see `unavailable`).

    Called at a test module's top, before its tests are collected: a missing optional package
    skips the module instead of erroring at collection, and INSTALL says how to get it.
    """
    if not os.environ.get("CI"):
        return pytest.importorskip(module, reason=f"{module} is not installed: {install}")
    try:
        return importlib.import_module(module)
    except ImportError as error:
        unavailable(f"{module} is not installed ({error}): {install}")
