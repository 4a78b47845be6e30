"""The audit's closest pairs as one picture, to judge by eye: the two images and where they
differ, numbered as in audit.md. Drawn by `mnist-study audit --output` and logged with every
study's audit (the report shows it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from data_pipeline.audit import AuditReport
    from data_pipeline.mnist import MnistFiles

PICTURE = "closest_pairs.png"
PAIRS_PER_ROW, ZOOM = 4, 3  # pairs side by side, each pixel 3x3
_GAP, _LABEL = 8, 26  # pixels between tiles; label lines above each tile


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
