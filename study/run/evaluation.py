"""The one look at the test set: the best trial's restored model(s), each scored once.

A trial has a model per fold (one for a holdout study). They are restored once, from the
checkpoint the trial saved, re-scored on their validation folds to prove the restore, and
scored on the test set, each normalised with its own fold's train statistics as it was
trained. The test score is the mean over the folds.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
import torch

import models
from data_pipeline import MnistFiles, SearchData, prepare_test_data
from study.errors import StudyError
from study.run.checkpoints import split_fold_states
from study.search.search_space import hyperparams_from_params
from study.store.record import MLFLOW_RUN_ID_ATTR
from study.store.result import Evaluation
from study.tracking import Tracker
from study.train.training import evaluate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Restored:
    """The best COMPLETE trial and its best-epoch model per fold, in eval mode."""

    trial: optuna.trial.FrozenTrial
    models: tuple[torch.nn.Module, ...]


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    try:
        return study.best_trial
    except ValueError as exc:
        raise StudyError(f"study {study.study_name!r} has no completed trial (all pruned or "
                         f"failed): nothing to evaluate; widen the search space or run "
                         f"more trials") from exc


def restore_best(study: optuna.Study, *, k: int, tracker: Tracker, model_name: str,
                 model_kwargs: Mapping[str, Any], device: torch.device) -> Restored:
    """The best trial's K fold models, rebuilt and loaded from its checkpoint onto DEVICE."""
    best = best_trial(study)
    architecture = hyperparams_from_params(best.params).model_kwargs()  # dropout, norm
    restored = []
    for state in split_fold_states(tracker.load_checkpoint(best.user_attrs[MLFLOW_RUN_ID_ATTR]),
                                   k):
        model = models.build(model_name, **architecture, **model_kwargs)
        model.load_state_dict(state)
        restored.append(model.to(device).eval())
    return Restored(trial=best, models=tuple(restored))


def evaluate_best(study: optuna.Study, *, files: MnistFiles, data: SearchData,
                  tracker: Tracker, model_name: str, model_kwargs: Mapping[str, Any],
                  device: torch.device) -> tuple[Evaluation, Restored]:
    """Restore the best trial once and score it on the test set once; both, for publishing."""
    restored = restore_best(study, k=data.k, tracker=tracker, model_name=model_name,
                            model_kwargs=model_kwargs, device=device)
    best = restored.trial
    val = statistics.fmean(evaluate(model, data.fold(i).val)[0]
                           for i, model in enumerate(restored.models))
    assert best.value is not None
    if not math.isclose(val, best.value, rel_tol=1e-4):
        logger.warning("restored weights of trial %d score val_loss %.6f, recorded %.6f: the "
                       "checkpoint does not match the trial", best.number, val, best.value)
    tests = prepare_test_data(files, normalizers=data.normalizers, device=device)  # read once
    scores = [evaluate(model, test) for model, test in zip(restored.models, tests, strict=True)]
    result = Evaluation(trial_number=best.number,
                        test_loss=statistics.fmean(loss for loss, _ in scores),
                        test_acc=statistics.fmean(acc for _, acc in scores),
                        restored_val_loss=val, test_size=len(tests[0]))
    per_fold = "" if data.k == 1 else " (per fold: " + ", ".join(
        f"{acc:.4f}" for _, acc in scores) + ")"
    logger.info("trial %d on the test set: loss %.4f, accuracy %.4f%s", best.number,
                result.test_loss, result.test_acc, per_fold)
    return result, restored
