"""What a study keeps in Optuna's storage beside its trials, under study user attributes: the
evaluated result (kept by result.py) and the seed recipe's baseline (kept by baseline.py).
Their keys and readers live here, on Optuna alone, so that reading a study (`mnist-study
report`) loads no torch and no scikit-learn.
"""

from __future__ import annotations

from typing import Any

import optuna

RESULT_ATTR = "result"  # the best trial's one test-set evaluation, for reruns to show
BASELINE_ATTR = "baseline"  # the seed recipe's validation scores on the study's split


def stored_baseline(study: optuna.Study) -> dict[str, Any] | None:
    """The seed recipe's stored scores, or None when the study trained none."""
    baseline = study.user_attrs.get(BASELINE_ATTR)
    return dict(baseline) if isinstance(baseline, dict) else None
