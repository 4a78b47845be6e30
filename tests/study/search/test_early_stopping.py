from __future__ import annotations

import math

import pytest

from study.search.early_stopping import EarlyStopping


@pytest.mark.parametrize(("patience", "min_delta", "losses", "stops"), [
    (0, 0.0, [1.0, 2.0, 3.0, 4.0], False),  # off
    (2, 0.0, [1.0, 0.9, 0.8], False),  # improving
    (2, 0.0, [1.0, 0.9, 0.95], False),  # one stale epoch of two
    (2, 0.0, [1.0, 0.9, 0.95, 0.91], True),  # two
    (2, 0.0, [1.0, 0.9, 0.95, 0.85, 0.86], False),  # a new best resets the count
    (2, 0.05, [1.0, 0.9, 0.88, 0.87], True),  # improvements under min_delta are stale
    (1, 0.0, [1.0, math.nan], True),  # NaN never improves
])
def test_stops_after_patience_epochs_without_improvement(patience: int, min_delta: float,
                                                         losses: list[float],
                                                         stops: bool) -> None:
    assert EarlyStopping(patience, min_delta).stops(losses) is stops


@pytest.mark.parametrize(("patience", "min_delta"), [(-1, 0.0), (3, -0.1), (3, math.inf)])
def test_bad_settings_are_refused(patience: int, min_delta: float) -> None:
    with pytest.raises(ValueError):
        EarlyStopping(patience, min_delta)
