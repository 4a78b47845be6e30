"""The one look at the test set: the best trial's restored weights, evaluated once."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
import torch

import models
from data_pipeline import MnistFiles, SearchData, prepare_test_data
from study.errors import StudyError
from study.search_space import hyperparams_from_params
from study.tracking import Tracker
from study.training import evaluate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TestResult:
    trial_number: int
    test_loss: float
    test_acc: float
    restored_val_loss: float  # the restored weights re-scored on val: proves the restore


def restore_best_model(
    study: optuna.Study, *, tracker: Tracker, model_name: str, model_kwargs: Mapping[str, Any],
    device: torch.device,
) -> tuple[optuna.trial.FrozenTrial, torch.nn.Module]:
    """The best COMPLETE trial and its best-epoch weights (checkpointed when it finished)."""
    try:
        best = study.best_trial
    except ValueError as exc:
        raise StudyError(f"study {study.study_name!r} has no completed trial (all pruned or "
                         f"failed): nothing to evaluate; widen the search space or run "
                         f"more trials") from exc
    hp = hyperparams_from_params(best.params)
    model = models.build(model_name, dropout=hp.dropout, **model_kwargs)
    model.load_state_dict(tracker.load_checkpoint(best.user_attrs["mlflow_run_id"]))
    return best, model.to(device)


def evaluate_on_test(
    study: optuna.Study, *, files: MnistFiles, data: SearchData, tracker: Tracker,
    model_name: str, model_kwargs: Mapping[str, Any], device: torch.device,
) -> TestResult:
    best, model = restore_best_model(study, tracker=tracker, model_name=model_name,
                                     model_kwargs=model_kwargs, device=device)
    restored_val_loss, _ = evaluate(model, data.val)
    assert best.value is not None
    if not math.isclose(restored_val_loss, best.value, rel_tol=1e-4):
        logger.warning("restored weights of trial %d score val_loss %.6f, recorded %.6f: the "
                       "checkpoint does not match the trial", best.number, restored_val_loss,
                       best.value)
    test_loss, test_acc = evaluate(model, prepare_test_data(files, normalizer=data.normalizer,
                                                            device=device))
    logger.info("trial %d on the test set: loss %.4f, accuracy %.4f", best.number, test_loss,
                test_acc)
    return TestResult(trial_number=best.number, test_loss=test_loss, test_acc=test_acc,
                      restored_val_loss=restored_val_loss)
