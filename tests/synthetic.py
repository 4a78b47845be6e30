"""Tiny synthetic MNIST look-alikes written as real IDX files, for fast unit tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_pipeline import write_idx


def make_images(labels: np.ndarray, *, seed: int) -> np.ndarray:
    """28x28 uint8 images a small net can learn: class k lights a distinct 7x7 block.

    Each image lights its own random 60% of the block's pixels and a 4x4 stroke anywhere, as
    each writer draws a digit differently: same-class images are neither near duplicates
    (which the leakage audit, blind to brightness, contrast, noise and small shifts, would
    otherwise find everywhere and refuse) nor close candidates that it must verify one by one.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    ink = (rng.random((len(labels), 7, 7)) < 0.6).astype(np.uint8) * 180
    strokes = rng.integers(0, 24, size=(len(labels), 2))
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 4)
        images[i, row * 7:(row + 1) * 7, col * 7:(col + 1) * 7] += ink[i]
        y, x = strokes[i]
        images[i, y:y + 4, x:x + 4] = np.maximum(images[i, y:y + 4, x:x + 4], 200)
    return images


def write_synthetic_mnist(
    directory: Path, *, n_train: int = 400, n_test: int = 100, compress: bool = True,
    seed: int = 0,
) -> Path:
    """Write the four MNIST-named IDX files into DIRECTORY and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    suffix = ".gz" if compress else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.tile(np.arange(10, dtype=np.uint8), n // 10 + 1)[:n]
        rng.shuffle(labels)
        write_idx(make_images(labels, seed=seed + n), directory / f"{prefix}-images-idx3-ubyte"
                  f"{suffix}", compress=compress)
        write_idx(labels, directory / f"{prefix}-labels-idx1-ubyte{suffix}", compress=compress)
    return directory
