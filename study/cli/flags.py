"""The flags several commands share, and the argparse helpers around them: one home, so `run`
and `audit` (or `dashboard` and `ui`) cannot drift apart.

Cheap to import on purpose: the parser is built for `--help` and for a bad flag, which must not
pay for torch, optuna, mlflow or sklearn.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

from study.cli.servers import LOCALHOST
from study.config import StudyConfig, resolve_config

_DEFAULTS = StudyConfig()


def add_data_arguments(p: argparse.ArgumentParser, *, noncanonical_help: str) -> None:
    """Where MNIST is, and whether it may be fetched or be something else (`run`, `audit`)."""
    d = _DEFAULTS
    p.add_argument("--data-dir", type=Path, help=f"directory with the MNIST IDX files, or where "
                   f"to download them; env MNIST_STUDY_DATA_DIR (default {d.data_dir})")
    p.add_argument("--no-download", dest="download", action="store_const", const=False,
                   help="never download: fail unless --data-dir holds the files")
    p.add_argument("--allow-noncanonical-data", action="store_const", const=True,
                   help=noncanonical_help)


def add_leakage_arguments(p: argparse.ArgumentParser) -> None:
    """The flags `run` and `audit` share about cross-validation and duplicates."""
    d = _DEFAULTS
    p.add_argument("--cv-folds", type=int, metavar="K",
                   help="K-fold stratified cross-validation over train+val: a trial's value is "
                        "the mean validation loss of K models (default: holdout split)")
    p.add_argument("--near-duplicate-threshold", type=float, metavar="D",
                   help=f"distance at or under which two images count as near duplicates: the "
                        f"share of their ink that differs by more than 15%% of the ink level, "
                        f"after normalising brightness and contrast and aligning them by up to "
                        f"one pixel; 0 checks exact duplicates only "
                        f"(default {d.near_duplicate_threshold})")
    p.add_argument("--drop-duplicates", action="store_const", const=True,
                   help="drop the training images that duplicate a validation or test image "
                        "(default: refuse to run on such a split)")


def add_server_arguments(parser: argparse.ArgumentParser, *, default_port: int) -> None:
    """--config, --host and --port of the browsing servers (`dashboard`, `ui`)."""
    parser.add_argument("--config", type=Path, help="the TOML file given to `mnist-study run`: "
                        "its store is used unless the flag above is given")
    parser.add_argument("--host", default=LOCALHOST, help=f"interface to listen on; 0.0.0.0 "
                        f"exposes it to the network (default {LOCALHOST}: this machine only)")
    parser.add_argument("--port", type=int, default=default_port,
                        help=f"port to listen on (default {default_port})")


def config_values(args: argparse.Namespace, *, exclude: Collection[str] = ()) -> dict[str, Any]:
    """ARGS as config keys: every flag but the command, --config and EXCLUDE; None = not given.

    Flags default to None so that the resolver can tell "given" from "not given".
    """
    skipped = {"command", "config", "argv", *exclude}
    return {key: value for key, value in vars(args).items() if key not in skipped}


def resolve_store(args: argparse.Namespace, key: str) -> str:
    """The store `mnist-study run` would use given the same flag, --config and environment."""
    config = resolve_config({key: getattr(args, key)}, config_path=args.config, env=os.environ)
    return str(getattr(config, key))
