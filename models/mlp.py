from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """The seed network: 784-HIDDEN-10, ReLU, dropout before the output layer."""

    def __init__(self, *, hidden: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),  # [B, 1, 28, 28] -> [B, 784]
            nn.Linear(28 * 28, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [B, 10] logits
