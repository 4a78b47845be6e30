"""The seed recipe, trained once per study on the study's own split: what the tuned result is
measured against.

The recipe is the seed documents' learning-rate experiment: plain SGD (no momentum) at lr
0.05, StepLR halving the rate every 5 epochs, batch 64, no dropout, no weight decay, for the
study's --max-epochs. It is trained as its own MLflow run under the parent ("baseline (seed
recipe)", tag mnist_study.role=baseline), not as an enqueued Optuna trial: exactly as the
documents give it (momentum 0 and weight decay 0 on a log scale lie outside the default
space; the warm start enqueues the nearest point the space holds, study/search/warm_start.py), not
counting against --n-trials and never competing for best trial. The test set stays
the best trial's alone: the baseline is scored on validation only.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import optuna

from study.run.objective import Objective
from study.search.warm_start import SEED_RECIPE
from study.store.record import BASELINE_ATTR, stored_baseline
from study.tracking.layout import BASELINE_NUMBER
from study.train.engine_types import Hyperparams

logger = logging.getLogger(__name__)



def train_baseline(study: optuna.Study, objective: Objective) -> dict[str, Any]:
    """The seed recipe's validation scores on STUDY's split: trained now, or as stored by an
    earlier run of the study (the same split and epochs: its identity says so)."""
    stored = stored_baseline(study)
    if stored is not None:
        return stored
    logger.info("training the seed recipe as the baseline (%s)", _describe(SEED_RECIPE))
    trial = optuna.trial.FixedTrial({}, number=BASELINE_NUMBER)
    quiet = dataclasses.replace(objective, on_epoch=lambda number, metrics: None)
    run = quiet.start(trial, hp=SEED_RECIPE)
    value = quiet.train_folds(run)
    attrs = trial.user_attrs
    result = {"val_loss": value, "val_acc": attrs["best_val_acc"],
              "epochs_trained": attrs["epochs_trained"], "mlflow_run_id": run.run_id,
              "params": SEED_RECIPE.as_params()}
    if "best_epoch" in attrs:
        result["best_epoch"] = attrs["best_epoch"]
    study.set_user_attr(BASELINE_ATTR, result)
    return result


def _describe(hp: Hyperparams) -> str:
    return ", ".join(f"{k}={v}" for k, v in hp.as_params().items())
