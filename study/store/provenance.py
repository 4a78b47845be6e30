"""What produced a result: code version and package versions, logged with every study."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("mnist-study", "torch", "torchvision", "optuna", "mlflow", "scikit-learn", "numpy")


def code_version() -> str:
    """The git commit of this checkout (with '-dirty' for local edits), else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], check=True, capture_output=True,
                               text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"mnist-study {_version('mnist-study')}"
    return f"{commit}-dirty" if dirty else commit


def package_versions() -> dict[str, str]:
    return {name: _version(name) for name in PACKAGES}


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
