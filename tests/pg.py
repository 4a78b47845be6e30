"""A real, throwaway PostgreSQL server for the tests marked `postgres`.

The `postgres_server` fixture starts one cluster per test session (initdb in a temporary
directory, 127.0.0.1 only, a free port, fsync off) and removes it afterwards, even when a test
fails. MNIST_STUDY_TEST_POSTGRES_URL points the tests at an existing server instead. Without
PostgreSQL binaries the tests skip, or fail under CI (env CI set), where .ci/run installs them.

Tests take the `postgres_url` fixture (tests/conftest.py makes both fixtures visible everywhere)
and must be marked `@pytest.mark.postgres`: the fixture fails a test without the mark, so that
`-m "not postgres"` always deselects every test that needs a server.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy

from tests.helpers import free_port

POSTGRES_URL_ENV = "MNIST_STUDY_TEST_POSTGRES_URL"
DATABASE = "mnist_study"
SUPERUSER = "postgres"  # the cluster's superuser, and the system user that runs it as root
_TOOLS = ("initdb", "pg_ctl", "postgres")


def find_postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin (Debian's layout), else the directory of pg_ctl."""
    versions = [d for d in Path("/usr/lib/postgresql").glob("*/bin")
                if all((d / tool).is_file() for tool in _TOOLS)]
    if versions:
        return max(versions, key=lambda d: _version_key(d.parent.name))
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        return None
    directory = Path(pg_ctl).resolve().parent
    return directory if all((directory / tool).is_file() for tool in _TOOLS) else None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _as_server_user() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", SUPERUSER, "--"]


def _run(command: list[str], *, what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}): {' '.join(command)}\n"
                           f"{result.stdout}{result.stderr}")


@contextmanager
def throwaway_postgres(bin_dir: Path, *, database: str = DATABASE) -> Iterator[str]:
    """Start a private cluster; yield postgresql+DRIVER://postgres@127.0.0.1:PORT/DATABASE."""
    root = Path(tempfile.mkdtemp(prefix="mnist-study-pg-"))
    data, log = root / "data", root / "server.log"
    try:
        if os.geteuid() == 0:
            user = pwd.getpwnam(SUPERUSER)  # KeyError: no such user; .ci/run creates it
            os.chown(root, user.pw_uid, user.pw_gid)
        # trust auth is fine: the cluster listens on 127.0.0.1 and a socket in ROOT only.
        _run([*_as_server_user(), str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER,
              "--auth=trust", "--encoding=UTF8", "--no-sync"], what="initdb")
        for attempt in range(3):  # the free port can be taken between the probe and the bind
            port = free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off "
                       f"-c synchronous_commit=off -c full_page_writes=off")
            try:
                _run([*_as_server_user(), str(bin_dir / "pg_ctl"), "-D", str(data), "-l",
                      str(log), "-w", "-t", "60", "-o", options, "start"], what="pg_ctl start")
                break
            except RuntimeError:
                if attempt == 2:
                    raise RuntimeError(f"PostgreSQL did not start; its log:\n"
                                       f"{log.read_text() if log.exists() else '(none)'}")
        server = f"{sqlalchemy_scheme()}://{SUPERUSER}@127.0.0.1:{port}/postgres"
        yield create_database(server, database)
    finally:
        _stop(bin_dir, data)
        shutil.rmtree(root, ignore_errors=True)


def _stop(bin_dir: Path, data: Path) -> None:
    """Stop the cluster in DATA if a postmaster runs there, whatever state setup reached."""
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return
    stopped = subprocess.run([*_as_server_user(), str(bin_dir / "pg_ctl"), "-D", str(data),
                              "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
    if stopped.returncode != 0 and pid_file.exists():  # pg_ctl failed: end our postmaster
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        except (ProcessLookupError, ValueError, IndexError):
            pass  # already gone, or the file was half written


def sqlalchemy_scheme() -> str:
    """postgresql+DRIVER for the installed driver.

    Explicit on purpose: a bare postgresql:// means psycopg2 to SQLAlchemy 2.0 but psycopg (3)
    to SQLAlchemy 2.1, so it works only where the matching driver happens to be installed.
    """
    for driver in ("psycopg", "psycopg2"):
        if importlib.util.find_spec(driver) is not None:
            return f"postgresql+{driver}"
    raise RuntimeError("no PostgreSQL driver: pip install -e '.[test]' (psycopg2-binary)")


def create_database(url: str, database: str) -> str:
    """A new, empty database on URL's server (the user needs CREATEDB); its URL."""
    base = sqlalchemy.make_url(url)
    _admin(url, f'CREATE DATABASE "{database}"')
    return base.set(database=database).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop URL's database; nobody may be connected to it."""
    _admin(url, f'DROP DATABASE IF EXISTS "{sqlalchemy.make_url(url).database}"')


def _admin(url: str, statement: str) -> None:
    # Run from the maintenance database, outside a transaction (CREATE/DROP DATABASE need both).
    engine = sqlalchemy.create_engine(sqlalchemy.make_url(url).set(database="postgres"),
                                      isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(statement))
    finally:
        engine.dispose()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests (.ci/run installs it)",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A SQLAlchemy URL of an empty-at-start PostgreSQL database for this test session."""
    external = os.environ.get(POSTGRES_URL_ENV)
    if external:
        yield external
        return
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        _unavailable(f"no PostgreSQL server binaries (/usr/lib/postgresql/*/bin or pg_ctl on "
                     f"PATH); apt-get install postgresql, or set {POSTGRES_URL_ENV}")
    assert bin_dir is not None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            _unavailable(f"running as root, PostgreSQL needs a '{SUPERUSER}' system user to run "
                         f"as (useradd --system {SUPERUSER})")
    with throwaway_postgres(bin_dir) as url:
        yield url


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest, postgres_server: str) -> str:
    """The session's PostgreSQL URL, for a test marked `postgres` only.

    Function-scoped so that it sees the requesting test: a test that needs the server but lacks
    the mark would run under `-m "not postgres"` (CI jobs without PostgreSQL) and fail there.
    """
    if request.node.get_closest_marker("postgres") is None:
        pytest.fail(f"{request.node.nodeid} uses PostgreSQL: mark it @pytest.mark.postgres",
                    pytrace=False)
    return postgres_server
