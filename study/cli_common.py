"""Helpers shared by the CLI's subcommands."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    """Called after the heavy imports, since mlflow sets up its own loggers when imported."""
    import mlflow  # noqa: F401
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # MLflow's store migrations, alembic chatter and download bars are not the user's business.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for noisy in ("alembic", "mlflow", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
