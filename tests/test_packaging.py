"""What the wheel ships: the product's packages, found as setuptools finds them for a build."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_namespace_packages, find_packages

REPO = Path(__file__).resolve().parent.parent


def _shipped_packages() -> list[str]:
    """The packages `pip wheel .` puts in the wheel, from pyproject's own find settings.

    The same call setuptools makes for [tool.setuptools.packages.find], without a slow build.
    """
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    find = pyproject["tool"]["setuptools"]["packages"]["find"]
    # pyproject's find defaults to namespaces = true: folders without __init__.py count too.
    finder = find_namespace_packages if find.get("namespaces", True) else find_packages
    packages: list[str] = []
    for where in find.get("where", ["."]):
        packages += finder(where=str(REPO / where), include=find.get("include", ["*"]),
                           exclude=find.get("exclude", []))
    return packages


def test_the_wheel_ships_the_product_and_not_the_benchmarks() -> None:
    packages = _shipped_packages()
    assert {"study", "models", "data_pipeline"} <= set(packages)  # the product is all there
    assert [p for p in packages if p == "study.bench" or p.startswith("study.bench.")] == []
    assert [p for p in packages if p.split(".")[0] == "mlflow"] == []  # the store is no package
