"""Store locations checked before anything is created: a refused run leaves no debris behind."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

from study.errors import ConfigError

# The drivers SQLAlchemy picks for postgresql://: 2.1 takes the first, 2.0 the second.
POSTGRES_DRIVERS = ("psycopg", "psycopg2")
INSTALL_POSTGRES = 'pip install -e ".[postgres]"'


def check_store_path(path: Path, *, flag: str, scheme: str, example: str) -> None:
    """Refuse PATH as a store file unless it is, or can be created as, a writable file.

    Nothing is created. Writability is probed with a temporary folder made and removed in the
    nearest existing folder: permission bits say nothing for root, and /proc or /sys refuse
    even root. The message shows the flag as given (FLAG SCHEME+PATH) and a file name EXAMPLE.
    """
    given = f"{flag} {scheme}{path}"
    if path.is_dir():
        raise ConfigError(f"{given}: {path} is a directory; name a file in it, e.g. "
                          f"{flag} {scheme}{path / example}")
    folder = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path.cwd())
    if not folder.is_dir():
        raise ConfigError(f"{given}: {folder} is a file, not a directory; choose another path")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mnist-study-probe-", dir=folder))
        if path.exists():
            open(path, "ab").close()  # opening to append changes nothing
    except OSError as exc:
        where = path if path.exists() else folder
        raise ConfigError(f"{given}: cannot write in {where} ({exc.strerror or exc}); choose a "
                          f"writable directory") from exc


def missing_postgres_driver(url: str) -> bool:
    """URL is a plain postgresql:// one, and neither driver SQLAlchemy would pick is installed."""
    return url.startswith("postgresql://") and not any(
        importlib.util.find_spec(driver) for driver in POSTGRES_DRIVERS)
