"""`mnist-study audit`: the leakage audit of the split a `run` with the same flags would use."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from data_pipeline.pictures import PICTURE, write_closest_pairs
from study.cli.flags import add_data_arguments, add_leakage_arguments, config_values
from study.config import StudyConfig, resolve_config

NAME = "audit"
EXIT_DUPLICATES = 1  # the audit ran, and `run` would refuse this split
_DEFAULTS = StudyConfig()
_NOT_CONFIG = ("format", "output")  # audit's own flags, beside the config's


def add_parser(sub: Any) -> None:
    d = _DEFAULTS
    p = sub.add_parser(
        "audit", help="check the split for leakage: class balance, disjointness, duplicates",
        description="Print the leakage audit of the split that `run` with the same flags would "
                    "search on. Exit status 1 when duplicates cross the split (run would "
                    "refuse it), 0 when it is clean.")
    p.add_argument("--config", type=Path, help="TOML file of `run` (its data and split keys "
                   "are used); flags override it")
    add_data_arguments(p, noncanonical_help="accept IDX files whose content is not the "
                       "canonical MNIST")
    p.add_argument("--seed", type=int, help=f"seed of the split (default {d.seed})")
    p.add_argument("--val-fraction", type=float, help=f"share of the training images held out "
                   f"for validation, stratified (default {d.val_fraction})")
    add_leakage_arguments(p)
    p.add_argument("--format", choices=("markdown", "json"), default="markdown",
                   help="report format on stdout (default markdown)")
    p.add_argument("--output", type=Path, metavar="DIR",
                   help=f"also write audit.json, audit.md and {PICTURE} (the closest pairs, "
                        f"to judge by eye) into DIR")


def execute(args: argparse.Namespace) -> int:
    from data_pipeline import audit_files, locate_mnist  # numpy/torch only when needed

    cli = config_values(args, exclude=_NOT_CONFIG)
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
        if report.closest:
            write_closest_pairs(report, files, args.output / PICTURE)
        else:  # nothing to draw (exact duplicates only were looked for, and none found)
            (args.output / PICTURE).unlink(missing_ok=True)
    print(report.to_json() if args.format == "json" else report.to_markdown(), end="")
    return EXIT_DUPLICATES if report.cross_split() else 0
