"""Tiny synthetic MNIST look-alikes written as real IDX files, for fast unit tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_pipeline import write_idx


def make_images(labels: np.ndarray, *, seed: int) -> np.ndarray:
    """28x28 uint8 images a small net can learn: class k lights a distinct 7x7 block."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 4)
        images[i, row * 7:(row + 1) * 7, col * 7:(col + 1) * 7] += 180
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
