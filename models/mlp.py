from __future__ import annotations

import torch
from torch import nn

from models.registry import check_norm


class MLP(nn.Module):
    """The seed network: 784-HIDDEN-10, ReLU, dropout before the output layer.

    NORM "batch" puts BatchNorm after the hidden linear layer (whose bias it makes redundant);
    "none" is the seed network as it was.
    """

    def __init__(self, *, hidden: int = 128, dropout: float = 0.0, norm: str = "none") -> None:
        super().__init__()
        batch_norm = check_norm(norm) == "batch"
        # No placeholder layer without BatchNorm: the seed network's state-dict keys stay.
        self.net = nn.Sequential(
            nn.Flatten(),  # [B, 1, 28, 28] -> [B, 784]
            nn.Linear(28 * 28, hidden, bias=not batch_norm),
            *([nn.BatchNorm1d(hidden)] if batch_norm else []),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [B, 10] logits
