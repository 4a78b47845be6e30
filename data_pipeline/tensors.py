"""Device-resident tensors, normalisation fitted on train only, and index-slice batching."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Normalizer:
    """Pixel mean and std of the split it was fitted on (the train split, never val or test)."""

    mean: float
    std: float

    @classmethod
    def fit(cls, images: np.ndarray) -> Normalizer:
        """The mean and std of uint8 IMAGES, scaled to [0, 1], from their 256-level histogram:
        exact counts, so 47M pixels sum without drift and without a float copy of them."""
        if images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images, but got {images.dtype}")
        counts = np.bincount(images.reshape(-1), minlength=256).astype(np.float64)
        levels = np.arange(256, dtype=np.float64) / 255.0
        n = counts.sum()
        mean = counts @ levels / n
        return cls(mean=float(mean), std=float(np.sqrt(counts @ (levels - mean) ** 2 / n)))

    def apply(self, images: np.ndarray, device: torch.device) -> torch.Tensor:
        # Convert on the host in uint8 and move once; the float work then runs on the device.
        pixels = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        x = pixels.to(torch.float32).div_(255.0).sub_(self.mean).div_(self.std)
        return x.unsqueeze(1)  # [N, 1, 28, 28]


@dataclass(frozen=True)
class TensorSet:
    x: torch.Tensor  # [N, 1, 28, 28] float32, normalised, on the device
    y: torch.Tensor  # [N] int64, on the device

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Fold:
    """One fold as the training loop takes it: device tensors, normalised by its train part."""

    train: TensorSet
    val: TensorSet
    normalizer: Normalizer  # fitted on this fold's train images; its test view uses it too


def to_tensor_set(
    images: np.ndarray, labels: np.ndarray, normalizer: Normalizer, device: torch.device
) -> TensorSet:
    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)).to(device)
    return TensorSet(x=normalizer.apply(images, device), y=y)


def shuffled_batches(
    n: int, batch_size: int, generator: torch.Generator, device: torch.device
) -> Iterator[torch.Tensor]:
    """Index tensors covering 0..n-1 once in a seeded random order; the last may be short."""
    # The permutation is drawn on the CPU generator so the order is the same on every device.
    order = torch.randperm(n, generator=generator).to(device)
    yield from order.split(batch_size)
