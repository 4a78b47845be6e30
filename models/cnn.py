from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two conv blocks and a small head: about 0.4M parameters, ~99.2% on MNIST when tuned."""

    def __init__(self, *, channels: int = 32, hidden: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=3, padding=1),  # [B, C, 28, 28]
            nn.ReLU(),
            nn.MaxPool2d(2),  # [B, C, 14, 14]
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),  # [B, 2C, 14, 14]
            nn.ReLU(),
            nn.MaxPool2d(2),  # [B, 2C, 7, 7]
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * channels * 7 * 7, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # [B, 10] logits
