"""`mnist-study audit`: the leakage audit of the split a `run` with the same flags would use."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from study.cli.flags import add_data_arguments, add_leakage_arguments, config_values
from study.config import StudyConfig, resolve_config

if TYPE_CHECKING:
    import numpy as np

    from data_pipeline import AuditReport, MnistFiles

NAME = "audit"
EXIT_DUPLICATES = 1  # the audit ran, and `run` would refuse this split
_DEFAULTS = StudyConfig()
_NOT_CONFIG = ("format", "output")  # audit's own flags, beside the config's
PICTURE = "closest_pairs.png"
PAIRS_PER_ROW, ZOOM = 4, 3  # the picture: pairs side by side, each pixel 3x3
_GAP, _LABEL = 8, 26  # pixels between tiles; label lines above each tile


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


def write_closest_pairs(report: AuditReport, files: MnistFiles, path: Path) -> None:
    """Draw REPORT's closest pairs into the PNG file PATH, numbered as in audit.md."""
    from PIL import Image, ImageDraw  # Pillow comes with torchvision

    from data_pipeline.audit import TEST_PART

    train, test = files.load("train").images, files.load("test").images
    tiles = [_pair_tile((test if p.part_a == TEST_PART else train)[p.index_a],
                        (test if p.part_b == TEST_PART else train)[p.index_b], p.shift)
             for p in report.closest]
    height, width = tiles[0].shape
    columns = min(PAIRS_PER_ROW, len(tiles))
    rows = -(-len(tiles) // columns)
    canvas = Image.new("L", (columns * (width + _GAP) + _GAP,
                             rows * (height + _LABEL + _GAP) + _GAP), color=255)
    draw = ImageDraw.Draw(canvas)
    for number, (pair, tile) in enumerate(zip(report.closest, tiles, strict=True)):
        x = _GAP + (number % columns) * (width + _GAP)
        y = _GAP + (number // columns) * (height + _LABEL + _GAP)
        draw.text((x, y), f"{number + 1}. {pair.kind} {pair.distance:.4f} shift {pair.shift}",
                  fill=0)
        draw.text((x, y + _LABEL // 2), f"{pair.part_a}[{pair.index_a}] ~ "
                  f"{pair.part_b}[{pair.index_b}]", fill=0)
        canvas.paste(Image.fromarray(tile), (x, y + _LABEL))
    canvas.save(path, format="PNG")


def _pair_tile(a: np.ndarray, b: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
    """A | B | where they differ beyond the dead zone once normalised and aligned, zoomed."""
    import numpy as np

    from data_pipeline.duplicates import DEAD_LEVELS, normalise_intensity, shifted

    normalised = normalise_intensity(np.stack([a, b])).astype(np.int16)
    beyond = np.abs(normalised[0] - shifted(normalised[1:], *shift)[0]) - DEAD_LEVELS
    difference = np.clip(beyond * 255 // (255 - DEAD_LEVELS), 0, 255).astype(np.uint8)
    rule = np.full((28, 1), 128, np.uint8)  # grey: where one image ends
    tile = np.concatenate([a, rule, b, rule, difference], axis=1)
    return np.kron(tile, np.ones((ZOOM, ZOOM), np.uint8))
