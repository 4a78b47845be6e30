from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from data_pipeline import MnistFiles, SearchData, find_mnist, prepare_search_data
from tests.helpers import FinishedStudy, finished_study_in, unavailable
from tests.pg import postgres_server, postgres_url
from tests.synthetic import write_synthetic_mnist

# Fixtures defined elsewhere, made visible to every test by being names of this conftest.
__all__ = ["postgres_server", "postgres_url"]

REPO = Path(__file__).resolve().parent.parent

# One intra-op thread in the test processes, as `run` has by default (--cpu-threads 1): with a
# pytest-xdist worker per core and the CLI processes the tests start beside them, threads per
# process beyond one only wait on each other.
torch.set_num_threads(1)

# pytest-xdist (`-n auto` in pyproject) spreads tests over one worker per core. Tests that share
# something costly that lives longer than one test (a module's study and servers, the
# PostgreSQL server, the bench's quick run) stay on one worker, so it is built once.
_SHARED_BY_MODULE = ("tests/study/cli/test_browser.py", "tests/study/run/test_publish.py")
_SHARED_FIXTURES = {"postgres_server": "postgres", "postgres_url": "postgres",
                    "quick_report": "bench"}


# tryfirst: pytest-xdist reads the xdist_group marks in its own hook of the same name, which
# would otherwise run first and see none (pytest-dev/pytest-xdist#1253).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.nodeid.split("::")[0]
        group = next((prefix for prefix in _SHARED_BY_MODULE if path.startswith(prefix)), None)
        fixtures = item.fixturenames if isinstance(item, pytest.Function) else []
        group = next((_SHARED_FIXTURES[f] for f in fixtures if f in _SHARED_FIXTURES), group)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    # The long tests first (a stable sort keeps each one's order): the workers then finish
    # together on short ones instead of one waiting out a long test started last.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


_SPLIT: set[str] = set()  # grouped tests whose group did not take (pytest_collection_finish)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Groups that do not take fail their tests, loudly: pytest-xdist marks a grouped test by a
    suffix on its node id, which pytest 9.2 no longer lets it write (pyproject pins below it).
    Split groups would pass, but build their module's study and servers, the bench's run and
    PostgreSQL once per worker: minutes of CI."""
    if getattr(session.config.option, "loadgroup", False):  # an xdist worker of loadgroup
        _SPLIT.update(item.nodeid for item in session.items
                      if item.get_closest_marker("xdist_group") and "@" not in item.nodeid)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.nodeid in _SPLIT:
        pytest.fail("pytest-xdist's --dist loadgroup did not group this test (its node id has "
                    "no @group suffix): check the pytest and pytest-xdist versions", pytrace=False)


@pytest.fixture
def synthetic_dir(tmp_path: Path) -> Path:
    return write_synthetic_mnist(tmp_path / "mnist")


@pytest.fixture
def synthetic_files(synthetic_dir: Path) -> MnistFiles:
    files = find_mnist(synthetic_dir, verify=False)
    assert files is not None
    return files


@pytest.fixture
def search_data(synthetic_files: MnistFiles) -> SearchData:
    return prepare_search_data(synthetic_files, val_fraction=0.25, seed=0,
                               device=torch.device("cpu"))


@pytest.fixture(scope="session")
def real_mnist_dir() -> Path:
    """The real MNIST (../shared/data). Missing data fails in CI instead of skipping."""
    directory = Path(os.environ.get("MNIST_STUDY_TEST_DATA_DIR", REPO.parent / "shared" / "data"))
    if find_mnist(directory) is None:
        unavailable(f"real MNIST not found in {directory} (set MNIST_STUDY_TEST_DATA_DIR)")
    return directory


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> FinishedStudy:
    """One tiny study finished by the CLI, made once per test run for every test that starts
    from a finished study: copy it (FinishedStudy.copy), never change it. Each pytest-xdist
    worker has a session of its own; they share the run's temporary folder, where the first
    one makes the study and the others wait for it."""
    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # the run's, above the workers'
    return finished_study_in(shared / "finished-study")
