"""The command line: parse -> config -> run -> print. Every user error is one line and exit 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data_pipeline import DataError
from study.config import DEVICES, MODEL_NAMES, PRUNERS, SAMPLERS, StudyConfig, resolve_config
from study.errors import StudyError
from study.report import format_summary

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
_DEFAULTS = StudyConfig()


def _add_run_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="launch or resume a study",
                       description="Launch a study, or resume it: the same command continues "
                                   "where a killed run stopped.")
    d = _DEFAULTS
    # Every default is None here so the config resolver can tell "given" from "not given".
    p.add_argument("--config", type=Path, help="TOML file; keys are these flag names, plus a "
                   "[search_space] table; flags override it")
    p.add_argument("--study-name", help=f"Optuna study name, also the MLflow experiment "
                   f"(default {d.study_name})")
    p.add_argument("--storage", help=f"Optuna storage URL: sqlite:///..., postgresql://... or "
                   f"journal:PATH (default {d.storage})")
    p.add_argument("--n-trials", type=int, help=f"total finished trials the study should have, "
                   f"across restarts (default {d.n_trials})")
    p.add_argument("--timeout", type=float, help="stop starting trials after SEC seconds "
                   "(default: no limit)")
    p.add_argument("--max-epochs", type=int, help=f"epochs per trial (default {d.max_epochs})")
    p.add_argument("--model", choices=MODEL_NAMES, help=f"network (default {d.model})")
    p.add_argument("--hidden", type=int, help=f"hidden width of the MLP / CNN head "
                   f"(default {d.hidden})")
    p.add_argument("--sampler", choices=SAMPLERS, help=f"Optuna sampler (default {d.sampler})")
    p.add_argument("--pruner", choices=PRUNERS, help=f"pruner on validation loss "
                   f"(default {d.pruner})")
    p.add_argument("--device", choices=DEVICES, help=f"auto = cuda when available "
                   f"(default {d.device})")
    p.add_argument("--data-dir", type=Path, help=f"directory with the MNIST IDX files, or where "
                   f"to download them; env MNIST_STUDY_DATA_DIR (default {d.data_dir})")
    p.add_argument("--no-download", dest="download", action="store_const", const=False,
                   help="never download: fail unless --data-dir holds the files")
    p.add_argument("--allow-noncanonical-data", action="store_const", const=True,
                   help="accept IDX files whose content is not the canonical MNIST "
                        "(a subset, Fashion-MNIST...); their fingerprint is still logged")
    p.add_argument("--tracking-uri", help=f"MLflow tracking URI; env MLFLOW_TRACKING_URI "
                   f"(default {d.tracking_uri})")
    p.add_argument("--seed", type=int, help=f"drives split, sampler and torch (default {d.seed})")
    p.add_argument("--val-fraction", type=float, help=f"share of the 60k training images held "
                   f"out for validation, stratified (default {d.val_fraction})")
    p.add_argument("--no-progress", action="store_const", const=True,
                   help="no progress bar (default: shown)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-study",
        description="Optuna hyperparameter studies for MNIST in PyTorch, tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        return _run(args)
    except (StudyError, DataError) as exc:
        print(f"mnist-study: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("mnist-study: interrupted; finished trials are saved, rerun the same command to "
              "resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    from study.runner import run_study  # torch, optuna and mlflow load only when needed

    _quiet_libraries()

    cli = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
    config = resolve_config(cli, config_path=args.config, env=os.environ)
    summary = run_study(config)
    print(format_summary(summary))
    return 0


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s", datefmt="%H:%M:%S")


def _quiet_libraries() -> None:
    """Called after the heavy imports, since mlflow sets up its own loggers when imported."""
    import mlflow  # noqa: F401
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # MLflow's store migrations, alembic chatter and download bars are not the user's business.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for noisy in ("alembic", "mlflow", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
