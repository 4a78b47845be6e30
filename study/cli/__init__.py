"""The command line: parse -> config -> command -> print. A user error is one line, exit 2.

Each subcommand is a module of this package with NAME, add_parser(subparsers) and
execute(args) -> exit code; the flags several commands share live in `flags`. Parsing imports
none of torch, optuna, mlflow or sklearn: each command imports what it needs in execute().
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from data_pipeline.errors import DataError  # not `data_pipeline`: that would load torch
from study.cli import audit, dashboard, report, run, sync, ui
from study.errors import StudyError
from study.run.console import Format, Handler, KnownWarnings
from study.run.interrupts import Terminated
from study.store.redaction import RedactingFilter, redact_text

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
COMMANDS: tuple[ModuleType, ...] = (run, report, audit, dashboard, ui, sync)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-study",
        description="Optuna hyperparameter studies for MNIST in PyTorch, tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given: --devices repeats it
    _setup_logging()
    command = {c.NAME: c for c in COMMANDS}[args.command]
    try:
        return int(command.execute(args))
    except (StudyError, DataError) as exc:
        print(f"mnist-study: error: {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        stopped_by = f"stopped by {exc}" if isinstance(exc, Terminated) else "interrupted"
        print(f"mnist-study: {stopped_by}; finished trials are saved, rerun the same command to "
              "resume", file=sys.stderr)
        # The shell's convention, 128 + the signal: what `kill` and schedulers expect to see.
        return 128 + exc.signum if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def _setup_logging() -> None:
    # MLflow would give its loggers handlers and a format of their own: one format for all.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    handler = Handler()
    handler.setFormatter(Format())
    handler.addFilter(RedactingFilter())  # every record, ours or a library's
    handler.addFilter(KnownWarnings())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.captureWarnings(True)  # Python warnings in the same format, through the filters
