"""`mnist-study audit`: the leakage audit of the split a `run` with the same flags would use."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from study.config import StudyConfig, resolve_config

NAME = "audit"
EXIT_DUPLICATES = 1  # the audit ran, and `run` would refuse this split
_DEFAULTS = StudyConfig()
_NOT_CONFIG = ("command", "config", "format", "output")


def add_leakage_arguments(p: argparse.ArgumentParser) -> None:
    """The flags `run` and `audit` share about cross-validation and duplicates."""
    d = _DEFAULTS
    p.add_argument("--cv-folds", type=int, metavar="K",
                   help="K-fold stratified cross-validation over train+val: a trial's value is "
                        "the mean validation loss of K models (default: holdout split)")
    p.add_argument("--near-duplicate-threshold", type=float, metavar="D",
                   help=f"Ruzicka pixel distance at or under which two images count as near "
                        f"duplicates; 0 checks exact duplicates only "
                        f"(default {d.near_duplicate_threshold})")
    p.add_argument("--drop-duplicates", action="store_const", const=True,
                   help="drop the training images that duplicate a validation or test image "
                        "(default: refuse to run on such a split)")


def add_parser(sub: Any) -> None:
    d = _DEFAULTS
    p = sub.add_parser(
        "audit", help="check the split for leakage: class balance, disjointness, duplicates",
        description="Print the leakage audit of the split that `run` with the same flags would "
                    "search on. Exit status 1 when duplicates cross the split (run would "
                    "refuse it), 0 when it is clean.")
    p.add_argument("--config", type=Path, help="TOML file of `run` (its data and split keys "
                   "are used); flags override it")
    p.add_argument("--data-dir", type=Path, help=f"directory with the MNIST IDX files, or where "
                   f"to download them; env MNIST_STUDY_DATA_DIR (default {d.data_dir})")
    p.add_argument("--no-download", dest="download", action="store_const", const=False,
                   help="never download: fail unless --data-dir holds the files")
    p.add_argument("--allow-noncanonical-data", action="store_const", const=True,
                   help="accept IDX files whose content is not the canonical MNIST")
    p.add_argument("--seed", type=int, help=f"seed of the split (default {d.seed})")
    p.add_argument("--val-fraction", type=float, help=f"share of the training images held out "
                   f"for validation, stratified (default {d.val_fraction})")
    add_leakage_arguments(p)
    p.add_argument("--format", choices=("markdown", "json"), default="markdown",
                   help="report format on stdout (default markdown)")
    p.add_argument("--output", type=Path, help="also write audit.json and audit.md into DIR")


def execute(args: argparse.Namespace) -> int:
    from data_pipeline import audit_files, locate_mnist  # numpy/torch only when needed

    cli = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
    config = resolve_config(cli, config_path=args.config, env=os.environ)
    files = locate_mnist(config.data_dir, download=config.download,
                         verify=not config.allow_noncanonical_data)
    report = audit_files(files, val_fraction=config.val_fraction, seed=config.seed,
                         cv_folds=config.cv_folds,
                         near_threshold=config.near_duplicate_threshold,
                         drop_duplicates=config.drop_duplicates)
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "audit.json").write_text(report.to_json())
        (args.output / "audit.md").write_text(report.to_markdown())
    print(report.to_json() if args.format == "json" else report.to_markdown(), end="")
    return EXIT_DUPLICATES if report.cross_split() else 0
