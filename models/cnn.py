from __future__ import annotations

import torch
from torch import nn

from models.registry import check_norm


class SmallCNN(nn.Module):
    """Two conv blocks and a small head: about 0.4M parameters (its accuracy: README, "Results
    on real MNIST").

    NORM "batch" puts BatchNorm after each convolution (whose bias it makes redundant).
    """

    def __init__(self, *, channels: int = 32, hidden: int = 128, dropout: float = 0.0,
                 norm: str = "none") -> None:
        super().__init__()
        batch_norm = check_norm(norm) == "batch"

        def block(inputs: int, outputs: int) -> list[nn.Module]:
            # No placeholder layer without BatchNorm: the state-dict keys stay as they were.
            return [nn.Conv2d(inputs, outputs, kernel_size=3, padding=1, bias=not batch_norm),
                    *([nn.BatchNorm2d(outputs)] if batch_norm else []),
                    nn.ReLU(),
                    nn.MaxPool2d(2)]

        self.features = nn.Sequential(
            *block(1, channels),  # [B, C, 28, 28] -> [B, C, 14, 14]
            *block(channels, 2 * channels),  # -> [B, 2C, 7, 7]
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
