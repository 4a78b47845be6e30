"""What the CLI does to the libraries' logging: one format, no chatter, no double reports."""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries(*, verbose: bool = False) -> None:
    """Called after the heavy imports, since mlflow sets up its own loggers when imported.

    Optuna's records go through our handler and format; its per-trial lines (every parameter
    of every trial) only with VERBOSE: the console's own line per trial says what matters.
    """
    import mlflow  # noqa: F401
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # MLflow's store migrations, alembic chatter and download bars are not the user's business.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for noisy in ("alembic", "mlflow", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
