"""Secrets never printed: one redaction, every URL shape, every place a URL is shown."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from study.report.summary import format_summary
from study.store.redaction import RedactingFilter, ambiguous_password, redact, redact_text
from study.store.result import Evaluation, StudySummary

SECRET = "s3cr3t"

REDACTED = [
    # (url, what the user must see instead)
    ("postgresql://bob:s3cr3t@db:5432/optuna", "postgresql://bob:***@db:5432/optuna"),
    ("postgresql://:s3cr3t@db/optuna", "postgresql://:***@db/optuna"),  # no user name
    ("postgresql://bob@db/optuna?password=s3cr3t", "postgresql://bob@db/optuna?password=***"),
    ("postgresql://db/optuna?sslmode=require&password=s3cr3t&user=bob",
     "postgresql://db/optuna?sslmode=require&password=***&user=bob"),
    ("postgresql://bob:p@ss:s3cr3t@db/optuna", "postgresql://bob:***@db/optuna"),  # '@' inside
    ("postgresql://bob:a/s3cr3t@db/optuna", "postgresql://bob:***@db/optuna"),  # '/' inside
    ("postgresql+psycopg2://bob:s3cr3t@db/optuna", "postgresql+psycopg2://bob:***@db/optuna"),
    ("mysql://root:s3cr3t@127.0.0.1:3306/optuna", "mysql://root:***@127.0.0.1:3306/optuna"),
    ("redis://:s3cr3t@cache:6379/0", "redis://:***@cache:6379/0"),
    ("http://user:s3cr3t@mlflow.example:5000/", "http://user:***@mlflow.example:5000/"),
    ("https://user:s3cr3t@mlflow.example/#runs", "https://user:***@mlflow.example/#runs"),
]
UNCHANGED = ["sqlite:///optuna.db", "sqlite:////abs/path/optuna.db", "journal:/tmp/optuna.log",
             "http://127.0.0.1:5000", "postgresql://bob@db/optuna", "mlflow/mlflow.db"]


@pytest.mark.parametrize(("url", "shown"), REDACTED)
def test_every_url_shape_loses_its_password(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert SECRET not in redact(url)


@pytest.mark.parametrize("url", UNCHANGED)
def test_urls_without_a_secret_are_left_alone(url: str) -> None:
    assert redact(url) == url


@pytest.mark.parametrize(("url", "shown"), REDACTED)
def test_urls_inside_free_text_are_redacted(url: str, shown: str) -> None:
    message = f"could not connect to {url}: connection refused"
    assert redact_text(message) == f"could not connect to {shown}: connection refused"


@pytest.mark.parametrize(("url", "ambiguous"), [
    ("postgresql://bob:p@ss@db/optuna", True),
    ("postgresql://bob:a/b@db/optuna", True),
    ("postgresql://bob:p%40ss@db/optuna", False),
    ("postgresql://bob@db/optuna?password=a@b", False),
    ("sqlite:////tmp/a@b/optuna.db", False),
])
def test_unencoded_at_or_slash_in_a_password_is_detected(url: str, ambiguous: bool) -> None:
    assert ambiguous_password(url) is ambiguous


def test_log_records_are_redacted_whoever_logs_them(caplog: pytest.LogCaptureFixture) -> None:
    caplog.handler.addFilter(RedactingFilter())
    logging.getLogger("some.library").warning("retrying %s", "http://u:s3cr3t@host/")
    assert SECRET not in caplog.text
    assert "http://u:***@host/" in caplog.text


def test_the_run_summary_prints_no_password() -> None:
    summary = StudySummary(
        study_name="s", storage=f"postgresql://bob:{SECRET}@db/optuna",
        state_counts={"COMPLETE": 1}, best_trial=0, best_params={"lr": 0.1}, best_val_loss=0.1,
        best_val_acc=0.9, test=Evaluation(trial_number=0, test_loss=0.1, test_acc=0.9,
                                          restored_val_loss=0.1),
        device="cpu", trials_run_now=1, seconds=1.0)
    printed = format_summary(summary)
    assert SECRET not in printed
    assert "postgresql://bob:***@db/optuna" in printed


@pytest.mark.parametrize("flag,url", [
    # No server listens on port 1: each fails fast with an error that names the URL.
    ("--storage", f"postgresql://:{SECRET}@127.0.0.1:1/optuna"),
    ("--storage", f"postgresql://bob@127.0.0.1:1/optuna?password={SECRET}"),
    ("--storage", f"postgresql://bob:p@ss{SECRET}@127.0.0.1:1/optuna"),
    ("--storage", f"postgresql://bob:a/{SECRET}@127.0.0.1:1/optuna"),
    ("--tracking-uri", f"http://user:{SECRET}@127.0.0.1:1/"),
    ("--tracking-uri", f"http://user:p@{SECRET}@127.0.0.1:1/"),
])
def test_error_lines_print_no_password(tmp_path: Path, flag: str, url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-m", "study", "run", "--data-dir", str(tmp_path / "none"),
         "--no-download", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db",
         "--storage", f"sqlite:///{tmp_path}/optuna.db", flag, url],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert "***" in done.stderr  # the URL is still named, so the user knows which one failed
