from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from data_pipeline import MnistFiles, SearchData, find_mnist, prepare_search_data
from tests.helpers import FinishedStudy, make_finished_study, unavailable
from tests.pg import postgres_server, postgres_url
from tests.synthetic import write_synthetic_mnist

# Fixtures defined elsewhere, made visible to every test by being names of this conftest.
__all__ = ["postgres_server", "postgres_url"]

REPO = Path(__file__).resolve().parent.parent


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
def finished_study(tmp_path_factory: pytest.TempPathFactory) -> FinishedStudy:
    """One tiny study finished by the CLI, made once per session (per xdist worker) for every
    test that starts from a finished study: copy it (FinishedStudy.copy), never change it."""
    return make_finished_study(tmp_path_factory.mktemp("finished-study"))
