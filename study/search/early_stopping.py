"""Early stopping: a trial's own validation loss, not its peers', says when to stop.

The pruner compares a trial with the others at the same epoch and ends it PRUNED; early
stopping compares the trial with its own best so far and ends it COMPLETE, scored by (and
checkpointed at) its best epoch. Both watch every epoch; the pruner is asked first, so a trial
both behind its peers and stalled is PRUNED. With cross-validation each fold stops on its own
and the next fold starts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EarlyStopping:
    """Stop after PATIENCE epochs whose validation loss did not beat the best so far by more
    than MIN_DELTA. PATIENCE 0 is off."""

    patience: int = 0
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0 (0: off), but got {self.patience}")
        if not 0.0 <= self.min_delta < math.inf:
            raise ValueError(f"min_delta must be >= 0, but got {self.min_delta}")

    def stops(self, val_losses: Sequence[float]) -> bool:
        """Whether a fold with these per-epoch VAL_LOSSES (so far) stops now."""
        if not self.patience:
            return False
        best, stale = math.inf, 0
        for loss in val_losses:
            if loss < best - self.min_delta:
                best, stale = loss, 0
            else:
                stale += 1
        return stale >= self.patience

    def as_identity(self) -> list[float]:
        return [self.patience, self.min_delta]
