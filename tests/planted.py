"""Synthetic MNIST with planted duplicates, exact and near, across and within its split.

Shared by the audit's unit tests (tests/data_pipeline/test_audit.py) and its CLI tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_pipeline import stratified_split, write_idx

VAL_FRACTION, SEED = 0.25, 0  # the split the planted pairs are placed across
Key = tuple[str, str, int, str, int]  # kind, part_a, index_a, part_b, index_b


def mnist_like(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Clean-background images, pairwise far apart: three random strokes plus a class block."""
    images = np.zeros((len(labels), 28, 28), np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 4)
        images[i, row * 7:(row + 1) * 7, col * 7:(col + 1) * 7] = 200
        for _ in range(3):
            (r0, c0), (r1, c1) = rng.integers(2, 26, size=(2, 2))
            t = np.linspace(0.0, 1.0, 40)
            rows = np.round(r0 + t * (r1 - r0)).astype(int)
            cols = np.round(c0 + t * (c1 - c0)).astype(int)
            images[i, rows, cols] = 255
            images[i, rows, np.minimum(cols + 1, 27)] = 255  # two pixels wide, like a pen
    return images


def near_copy(image: np.ndarray) -> np.ndarray:
    """What a re-scan leaves: 1% dimmer, and one grey speck of dust on the background."""
    out = np.round(image.astype(np.float64) * 0.99).astype(np.uint8)
    background = np.argwhere(image == 0)
    r, c = background[len(background) // 2]
    out[r, c] = 128
    return out


@dataclass
class Planted:
    directory: Path
    cross: set[Key] = field(default_factory=set)  # pairs that cross the split
    within: set[Key] = field(default_factory=set)  # pairs inside one part


def write_planted_mnist(directory: Path, *, n_train: int = 400, n_test: int = 100) -> Planted:
    """IDX files whose split (VAL_FRACTION, SEED) has known duplicates, exact and near.

    Copies keep their label, so the stratified split (which depends on labels only) is the
    one computed here.
    """
    rng = np.random.default_rng(1)
    train_labels = np.tile(np.arange(10, dtype=np.uint8), n_train // 10)
    test_labels = np.tile(np.arange(10, dtype=np.uint8), n_test // 10)
    train, test = mnist_like(train_labels, rng), mnist_like(test_labels, rng)
    split = stratified_split(train_labels, val_fraction=VAL_FRACTION, seed=SEED)
    tr = [int(i) for i in split.train[0] if train_labels[i] == 3]  # same class: labels stay
    va = [int(i) for i in split.val[0] if train_labels[i] == 3]
    planted = Planted(directory)
    train[va[0]] = train[tr[0]]
    planted.cross.add(("exact", "train", tr[0], "val", va[0]))
    train[va[1]] = near_copy(train[tr[1]])
    planted.cross.add(("near", "train", tr[1], "val", va[1]))
    test[3] = train[tr[2]]
    planted.cross.add(("exact", "train", tr[2], "test", 3))
    test[13] = near_copy(train[tr[3]])
    planted.cross.add(("near", "train", tr[3], "test", 13))
    train[tr[5]] = train[tr[4]]
    planted.within.add(("exact", "train", tr[4], "train", tr[5]))
    test[23] = near_copy(test[33])
    planted.within.add(("near", "test", 23, "test", 33))
    _write(directory, train, train_labels, test, test_labels)
    return planted


def _write(directory: Path, train: np.ndarray, train_labels: np.ndarray, test: np.ndarray,
           test_labels: np.ndarray) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, images, labels in (("train", train, train_labels), ("t10k", test, test_labels)):
        write_idx(images, directory / f"{prefix}-images-idx3-ubyte.gz", compress=True)
        write_idx(labels, directory / f"{prefix}-labels-idx1-ubyte.gz", compress=True)
