"""Cross-validation: a trial trains one model per fold and is scored by their mean.

Folds run one after another through study/training.py's loop, each from the same initial
weights (the trial's seed). A fold's score is its best epoch's validation loss, as a holdout
trial's. Pruning works at fold granularity: after each fold's last epoch the trial reports,
at step = the number of folds done (1..K), the mean score of the folds done so far; so the
pruner's resource unit is a fold (hyperband/sha get max_resource = K). The trial's value is
the mean over all K folds.

MLflow, in the trial's run: each fold's epochs as "fold{k}/<metric>" over step = epoch
(train_loss, val_loss, ...); after each fold, over step = fold number, "fold_val_loss",
"fold_val_acc" and "fold_best_epoch" of that fold, and "val_loss"/"val_acc": the running
means Optuna saw. The checkpoint holds every fold's best weights, keys prefixed "fold{k}.".
"""

from __future__ import annotations

import logging
import math
import statistics
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

import models
from data_pipeline import CvData, MnistFiles, SearchData, to_tensor_set
from study.config import StudyConfig
from study.diagnosis import diagnose
from study.errors import StudyError
from study.final import TestResult, evaluate_on_test
from study.interrupts import interruptibly
from study.liveness import WORKER_ATTR
from study.objective import (
    Objective,
    TrialSetup,
    _Best,
    ending_run,
    pruned,
    split_tags,
    trial_seed,
)
from study.publish import CONFIG_PATH, PLOTS_DIR, config_toml, write_plots
from study.search_space import Hyperparams, hyperparams_from_params, suggest
from study.tracking import StateDict, Tracker
from study.training import EpochMetrics, TrainOptions, evaluate, train

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class CvObjective(TrialSetup):
    data: CvData  # the folds only: the search cannot reach the test set

    def __call__(self, trial: optuna.trial.BaseTrial) -> float:
        hp = suggest(trial, self.space, max_epochs=self.max_epochs)
        run_id = self.tracker.start_trial(
            number=trial.number, params=hp.as_params(),
            tags={**split_tags(self.data), "cv_folds": str(self.data.folds.k)})
        trial.set_user_attr("mlflow_run_id", run_id)
        trial.set_user_attr(WORKER_ATTR, self.tracker.parent_run_id)  # whose process runs it
        done: list[_Best] = []
        current = _Best()
        # `current` is read when the trial stops: the closure sees the fold that was running.
        with ending_run(lambda state, **why: self._finish(trial, run_id, state, done, current,
                                                          **why)):
            for k in range(self.data.folds.k):
                current = _Best()
                self._train_fold(k, hp, trial, run_id, current)
                done.append(current)
                self._report(trial, run_id, done)
        self.tracker.save_checkpoint(run_id, merge_fold_states(done))
        self._finish(trial, run_id, TrialState.COMPLETE, done, current, reason="")
        return _mean_loss(done)

    def _train_fold(self, k: int, hp: Hyperparams, trial: optuna.trial.BaseTrial, run_id: str,
                    best: _Best) -> None:
        fold: SearchData = self.data.fold(k)  # device slices, normalised on its train part
        seed = trial_seed(self.seed, trial.number)
        torch.manual_seed(seed)  # every fold starts from the same weights and batch order
        generator = torch.Generator().manual_seed(seed)
        model = models.build(self.model_name, dropout=hp.dropout, **self.model_kwargs)
        model = model.to(fold.train.y.device)
        for metrics in interruptibly(train(model, hp, fold, max_epochs=self.max_epochs,
                                           generator=generator, options=self.options)):
            self.tracker.log_metrics(run_id, {f"fold{k + 1}/{name}": value for name, value
                                              in metrics.as_dict().items()}, step=metrics.epoch)
            self.on_epoch(trial.number, metrics)
            best.update(metrics, model)

    def _report(self, trial: optuna.trial.BaseTrial, run_id: str, done: list[_Best]) -> None:
        last = done[-1].metrics
        assert last is not None  # max_epochs >= 1: every finished fold has a best epoch
        mean_loss, step = _mean_loss(done), len(done)
        self.tracker.log_metrics(run_id, {
            "val_loss": mean_loss, "val_acc": _mean_acc(done), "fold_val_loss": last.val_loss,
            "fold_val_acc": last.val_acc, "fold_best_epoch": last.epoch}, step=step)
        trial.report(mean_loss, step)
        if trial.should_prune():
            raise pruned(trial, mean_loss, step=step, unit="fold")

    def _finish(self, trial: optuna.trial.BaseTrial, run_id: str, state: TrialState,
                done: list[_Best], current: _Best, *, reason: str, diverged: bool = False) -> None:
        in_progress = [] if done and current is done[-1] else [current]
        attrs: dict[str, Any] = {
            "epochs_trained": sum(len(b.history) for b in [*done, *in_progress]),
            "folds_done": len(done),
            # The fold that ran last speaks for the trial (pruned/failed: the unfinished one).
            "diagnosis": f"fold {len(done) + len(in_progress)}: " + diagnose(
                current.history, state=state, reason=reason, diverged=diverged)}
        if done:
            attrs.update(best_val_loss=_mean_loss(done), best_val_acc=_mean_acc(done),
                         fold_val_losses=[b.metrics.val_loss for b in done if b.metrics],
                         fold_best_epochs=[b.metrics.epoch for b in done if b.metrics])
        if state == TrialState.FAIL:
            attrs["fail_reason"] = reason
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        self.tracker.end_trial(run_id, number=trial.number, state=state, attrs=attrs)


def _mean_loss(done: list[_Best]) -> float:
    return statistics.fmean(b.metrics.val_loss for b in done if b.metrics is not None)


def _mean_acc(done: list[_Best]) -> float:
    return statistics.fmean(b.metrics.val_acc for b in done if b.metrics is not None)


def merge_fold_states(done: list[_Best]) -> StateDict:
    """One checkpoint for K models: fold k's tensors under 'fold{k}.' (k from 1)."""
    return {f"fold{k + 1}.{name}": tensor for k, best in enumerate(done)
            for name, tensor in (best.state or {}).items()}


def split_fold_states(state: StateDict, k: int) -> list[StateDict]:
    """The K state dicts that merge_fold_states packed; a key of no fold is a clear error."""
    folds: list[StateDict] = [{} for _ in range(k)]
    for key, tensor in state.items():
        prefix, _, name = key.partition(".")
        number = int(prefix.removeprefix("fold")) if prefix.startswith("fold") else 0
        if not 1 <= number <= k:
            raise StudyError(f"checkpoint key {key!r} is not of a {k}-fold cross-validated "
                             f"trial; was the study made with another --cv-folds?")
        folds[number - 1][name] = tensor
    return folds


def make_objective(
    config: StudyConfig, data: SearchData | CvData, tracker: Tracker, *,
    on_epoch: Callable[[int, EpochMetrics], None] = lambda number, metrics: None,
) -> Objective | CvObjective:
    """The holdout objective, or the cross-validated one when the data comes in folds."""
    kwargs: dict[str, Any] = dict(space=config.search_space, model_name=config.model,
                                  model_kwargs={"hidden": config.hidden},
                                  max_epochs=config.max_epochs, seed=config.seed,
                                  tracker=tracker, on_epoch=on_epoch,
                                  options=TrainOptions(amp=config.amp,
                                                       compile_mode=config.compile))
    if isinstance(data, CvData):
        return CvObjective(data=data, **kwargs)
    return Objective(data=data, **kwargs)


def evaluate_best_on_test(study: optuna.Study, *, config: StudyConfig, files: MnistFiles,
                          data: SearchData | CvData, tracker: Tracker,
                          device: torch.device) -> TestResult:
    """The one look at the test set, for a holdout or a cross-validated study."""
    model_kwargs = {"hidden": config.hidden}
    if isinstance(data, SearchData):
        return evaluate_on_test(study, files=files, data=data, tracker=tracker,
                                model_name=config.model, model_kwargs=model_kwargs,
                                device=device)
    return evaluate_cv_on_test(study, files=files, data=data, tracker=tracker,
                               model_name=config.model, model_kwargs=model_kwargs,
                               device=device)


def evaluate_cv_on_test(study: optuna.Study, *, files: MnistFiles, data: CvData,
                        tracker: Tracker, model_name: str, model_kwargs: Mapping[str, Any],
                        device: torch.device) -> TestResult:
    """The best trial's K fold models, restored, each scored once on the test set: the mean.

    Each model sees the test set normalised with its own fold's statistics, as it was trained.
    """
    best = _best_trial(study)
    hp = hyperparams_from_params(best.params)
    states = split_fold_states(tracker.load_checkpoint(best.user_attrs["mlflow_run_id"]),
                               data.folds.k)
    test = files.load("test")  # the one read of the test set, after the search
    val_losses, test_losses, test_accs = [], [], []
    for k, state in enumerate(states):
        model = models.build(model_name, dropout=hp.dropout, **model_kwargs)
        model.load_state_dict(state)
        model = model.to(device)
        val_losses.append(evaluate(model, data.fold_val(k))[0])
        loss, acc = evaluate(model, to_tensor_set(test.images, test.labels,
                                                  data.normalizers[k], device))
        test_losses.append(loss)
        test_accs.append(acc)
    restored = statistics.fmean(val_losses)
    assert best.value is not None
    if not math.isclose(restored, best.value, rel_tol=1e-4):
        logger.warning("restored fold models of trial %d score mean val_loss %.6f, recorded "
                       "%.6f: the checkpoint does not match the trial", best.number, restored,
                       best.value)
    logger.info("trial %d on the test set, per fold: accuracy %s", best.number,
                ", ".join(f"{a:.4f}" for a in test_accs))
    return TestResult(trial_number=best.number, test_loss=statistics.fmean(test_losses),
                      test_acc=statistics.fmean(test_accs), restored_val_loss=restored)


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    try:
        return study.best_trial
    except ValueError as exc:
        raise StudyError(f"study {study.study_name!r} has no completed trial (all pruned or "
                         f"failed): nothing to evaluate; widen the search space or run "
                         f"more trials") from exc


def publish_cv_study(study: optuna.Study, *, config: StudyConfig, tracker: Tracker) -> None:
    """The plots and resolved config of publish_study. No model is registered: a
    cross-validated trial has K fold models, not one (the audit stands in for the split)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_plots(study, root / PLOTS_DIR)
        (root / CONFIG_PATH).parent.mkdir(parents=True, exist_ok=True)
        (root / CONFIG_PATH).write_text(config_toml(config))
        tracker.log_study_artifacts(root)
    logger.info("cross-validated study: plots and config logged; no model registered (a "
                "trial has %d fold models)", config.cv_folds)
