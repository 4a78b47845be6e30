"""Store locations checked before anything is created: a refused run leaves no debris behind.

Light on purpose: the CLI runs these checks before torch, Optuna or MLflow load, so a bad
--storage or --tracking-uri is answered at once. SQLAlchemy and MLflow load only for the URLs
that need them (a database server, a scheme only MLflow knows).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from study.errors import ConfigError, StorageError, TrackingError
from study.store.redaction import ambiguous_password, redact, redact_text

# Seconds a tracking server has to answer its /health check before the run is refused.
HEALTH_TIMEOUT = 10

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


def check_storage_url(url: str) -> None:
    """Refuse a storage URL that cannot be opened, creating nothing (no file, no folder)."""
    if url.startswith("journal:"):
        check_store_path(Path(url.removeprefix("journal:")), flag="--storage",
                         scheme="journal:", example="optuna.log")
        return
    if "://" not in url:
        raise ConfigError(f"storage {redact(url)!r} is not a URL; use sqlite:///optuna.db, "
                          f"postgresql://user:pass@host/db or journal:path/to/optuna.log")
    if ambiguous_password(url):
        raise ConfigError(f"the password in --storage {redact(url)} holds an unencoded '@' or "
                          f"'/': percent-encode it (%40, %2F), or leave it out of the URL and "
                          f"set PGPASSWORD or ~/.pgpass")
    if url.startswith("sqlite:///"):
        check_store_path(Path(url.removeprefix("sqlite:///")), flag="--storage",
                         scheme="sqlite:///", example="optuna.db")
    if missing_postgres_driver(url):
        raise StorageError(f"--storage {redact(url)} needs a PostgreSQL driver (psycopg2 or "
                           f"psycopg), and none is installed: {INSTALL_POSTGRES}")
    if not url.startswith("sqlite:"):  # a database server: it answers and lets us in
        import sqlalchemy

        try:
            engine = sqlalchemy.create_engine(with_driver(url))
            try:
                engine.connect().close()
            finally:
                engine.dispose()
        except Exception as exc:  # sqlalchemy's errors, a missing driver, a bad URL...
            raise cannot_open(url, exc) from exc


def cannot_open(url: str, exc: Exception) -> StorageError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, ImportError) and url.startswith("postgresql"):  # no psycopg2
        reason += f"; {INSTALL_POSTGRES}"
    return StorageError(f"cannot open Optuna storage {redact(url)}: {redact_text(reason)}")


def with_driver(url: str) -> str:
    """postgresql:// names no driver, and SQLAlchemy 2.0 and 2.1 default to different ones
    (psycopg2, psycopg 3): use whichever is installed."""
    if not url.startswith("postgresql://"):
        return url
    driver = next((d for d in POSTGRES_DRIVERS if importlib.util.find_spec(d)), None)
    return url if driver is None else f"postgresql+{driver}://" + url.removeprefix("postgresql://")


def check_tracking_uri(tracking_uri: str) -> None:
    """Refuse a URI MLflow cannot use, creating nothing; a tracking server must answer, quickly."""
    if tracking_uri.startswith("sqlite:///"):
        check_store_path(Path(tracking_uri.removeprefix("sqlite:///")), flag="--tracking-uri",
                         scheme="sqlite:///", example="mlflow.db")
        return
    if ambiguous_password(tracking_uri):
        raise TrackingError(f"the password in --tracking-uri {redact(tracking_uri)} holds an "
                            f"unencoded '@' or '/': percent-encode it (%40, %2F)")
    if tracking_uri.startswith(("http://", "https://")):
        # One request with a timeout, before MLflow's client (and its minutes of retries).
        try:
            with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health",
                                        timeout=HEALTH_TIMEOUT):
                return
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(f"MLflow tracking server {redact(tracking_uri)} does not answer "
                                f"({redact_text(str(exc))}); start it or pass another "
                                f"--tracking-uri") from exc
    if tracking_uri.startswith("file:") or "://" not in tracking_uri:
        raise TrackingError(
            f"tracking URI {redact(tracking_uri)!r} is a file store, which MLflow 3 no longer "
            f"accepts; use sqlite:///path/mlflow.db or an http:// tracking server"
        )
    if missing_postgres_driver(tracking_uri):
        raise TrackingError(f"--tracking-uri {redact(tracking_uri)} needs a PostgreSQL driver, "
                            f"and none is installed: {INSTALL_POSTGRES}")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    try:  # looks the scheme up; builds no store
        _tracking_store_registry.get_store_builder(tracking_uri)
    except MlflowException as exc:
        raise TrackingError(f"tracking URI {redact(tracking_uri)!r} has a scheme MLflow has no "
                            f"store for; use sqlite:///path/mlflow.db or an http:// tracking "
                            f"server") from exc
