"""The objective: suggest, build, train over the folds, report, prune, track. Glue only.

Holdout is one fold. A trial trains one model per fold, each from the same initial weights
and batch order (the trial's seed), and is scored by the mean of the folds' best-epoch
validation losses. What it reports, when it may be pruned and how its metrics are named in
MLflow is the reporting policy's (study/run/reporting.py: per epoch for one fold, per fold for
K). The checkpoint holds each fold's best weights: as they are for one fold, under "fold{k}."
for K.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
import torch
from optuna.trial import TrialState

import models
from data_pipeline import SearchData
from study.config import StudyConfig
from study.diagnose.detectors import (
    Context,
    Finding,
    Thresholds,
    detect,
    findings_detail,
    summarise_findings,
)
from study.diagnose.diagnosis import diagnose, pruner_evidence
from study.run.checkpoints import merge_fold_states
from study.run.interrupts import interruptibly
from study.run.reporting import FoldResult, mean, reporting
from study.search.early_stopping import EarlyStopping
from study.search.search_space import SearchSpace, suggest
from study.store import record
from study.tracking import StateDict, Tracker
from study.train.engine_types import EpochMetrics, Hyperparams, TrainOptions
from study.train.training import NonFiniteLossError
from study.train.trial import train


def split_tags(data: SearchData) -> dict[str, str]:
    """Every trial's run carries them: all trials of a study searched on the identical split."""
    return {"split_fingerprint": data.split_fingerprint, "data_fingerprint": data.data_fingerprint}


def trial_seed(seed: int, number: int) -> int:
    """Distinct, reproducible seeds per (study seed, trial number)."""
    return seed * 1_000_003 + number


class _Finish(Protocol):
    def __call__(self, state: TrialState, *, reason: str, diverged: bool = False) -> None: ...


def pruned(trial: optuna.trial.BaseTrial, value: float, *, step: int,
           unit: str = "epoch") -> optuna.TrialPruned:
    """The prune, saying what the pruner saw: this trial's value among the others at STEP."""
    study = getattr(trial, "study", None)  # a FixedTrial has none
    others = [] if study is None else [
        t.intermediate_values[step] for t in study.get_trials(deepcopy=False)
        if t.number != trial.number and step in t.intermediate_values and record.judged(t)]
    return optuna.TrialPruned(pruner_evidence(value, others, step=step, unit=unit))


@contextmanager
def ending_run(finish: _Finish) -> Iterator[None]:
    """FINISH the trial's MLflow run with the state Optuna will record, however it stops early.

    Pruned is PRUNED, a NaN loss a FAIL Optuna catches, anything else (Ctrl-C, a bug) a FAIL
    that propagates: in no case may the run stay RUNNING.
    """
    try:
        yield
    except optuna.TrialPruned as exc:
        finish(TrialState.PRUNED, reason=str(exc))
        raise
    except NonFiniteLossError as exc:
        finish(TrialState.FAIL, reason=str(exc), diverged=True)
        raise
    except BaseException as exc:
        finish(TrialState.FAIL, reason=f"interrupted: {type(exc).__name__}")
        raise


@dataclass
class TrialRun:
    """One trial in progress: its hyperparameters, MLflow run and folds so far."""

    trial: optuna.trial.BaseTrial
    hp: Hyperparams
    run_id: str
    judged: bool = True  # whether the pruner may stop it (store.record.judged), read once
    folds: list[FoldResult] = field(default_factory=list)


def cpu_state(model: torch.nn.Module) -> StateDict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass(kw_only=True)
class Objective:
    """One trial: a model per fold of DATA, trained and reported as the module doc says.

    The search drives its steps (start, build, record_epoch, judge_epoch, fold_done,
    complete, stop) for every member of its cohorts (study/run/cohort_search.py). Called with a
    trial, it trains that trial's folds one after another through the same engine (a cohort
    of one) and records it the same way: the baseline's seed recipe is trained so.
    """

    data: SearchData  # the folds only: the search cannot reach the test set
    space: SearchSpace
    model_name: str
    model_kwargs: Mapping[str, Any]
    max_epochs: int
    seed: int
    tracker: Tracker
    options: TrainOptions = field(default_factory=TrainOptions)  # how steps run (amp, compile)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)  # off by default
    thresholds: Thresholds = field(default_factory=Thresholds)  # the detectors'
    prune_diagnosed: bool = False  # prune on a divergence or dying-ReLU finding, at once
    # Each epoch's metrics as they come, with the trial's number: the console's status line.
    on_epoch: Callable[[int, EpochMetrics], None] = field(default=lambda number, metrics: None)
    # time.perf_counter() at which the time budget ends: a trial still training then stops
    # after its epoch with its best epoch so far (holdout), or is pruned (cross-validation)
    deadline: float | None = None

    def __post_init__(self) -> None:
        self.reporting = reporting(self.data.k, self.max_epochs)

    def __call__(self, trial: optuna.trial.BaseTrial) -> float:
        return self.train_folds(self.start(trial))

    def train_folds(self, run: TrialRun) -> float:
        """Train RUN's folds one after another, recording them; its value."""
        with ending_run(lambda state, **why: self.stop(run, state, **why)):
            for i in range(self.reporting.folds):
                model, generator = self.build(run, i)
                fold = self.data.fold(i)  # device slices, normalised on its train part
                for metrics in interruptibly(train(model, run.hp, fold,
                                                   max_epochs=self.max_epochs,
                                                   generator=generator, options=self.options)):
                    self.epoch_done(run, metrics, lambda: cpu_state(model))
                    if self.stops_early(run):
                        break
                self.fold_done(run)
        return self.complete(run)

    def start(self, trial: optuna.trial.BaseTrial, hp: Hyperparams | None = None) -> TrialRun:
        """Suggest the trial's hyperparameters (unless HP gives them) and open its MLflow
        run."""
        hp = hp if hp is not None else suggest(trial, self.space, max_epochs=self.max_epochs)
        run_id = self.tracker.start_trial(number=trial.number, params=hp.as_params(),
                                          tags=split_tags(self.data) | self.reporting.tags())
        trial.set_user_attr(record.MLFLOW_RUN_ID_ATTR, run_id)
        # whose process runs it, on which device
        trial.set_user_attr(record.WORKER_ATTR, self.tracker.parent_run_id)
        trial.set_user_attr(record.DEVICE_ATTR, str(self.data.images.device))
        return TrialRun(trial=trial, hp=hp, run_id=run_id, judged=record.judged(trial))

    def build(self, run: TrialRun, i: int) -> tuple[torch.nn.Module, torch.Generator]:
        """Fold I's network and batch-order generator; fold I begins.

        Every fold starts from the same weights and batch order: the trial's seed.
        """
        run.folds.append(FoldResult())
        seed = trial_seed(self.seed, run.trial.number)
        torch.manual_seed(seed)  # init and dropout
        generator = torch.Generator().manual_seed(seed)
        model = models.build(self.model_name, **run.hp.model_kwargs(), **self.model_kwargs)
        return model.to(self.data.fold(i).train.y.device), generator

    def epoch_done(self, run: TrialRun, metrics: EpochMetrics,
                   state: Callable[[], StateDict]) -> None:
        """Record an epoch of the current fold; with one fold, report it (may prune)."""
        self.record_epoch(run, metrics, state)
        self.judge_epoch(run, metrics)

    def record_epoch(self, run: TrialRun, metrics: EpochMetrics,
                     state: Callable[[], StateDict]) -> None:
        """epoch_done's first half: log the epoch and, with one fold, report it to Optuna.

        A cohort records every member's epoch before judging any, so that each member is
        judged against all its peers' values at that epoch (study.search.peer_pruner).
        """
        result = run.folds[-1]
        self.tracker.log_epoch(run.run_id, metrics,
                               prefix=self.reporting.metric_prefix(len(run.folds)))
        self.on_epoch(run.trial.number, metrics)
        result.update(metrics, state)
        if self.reporting.epochs_are_reported:  # the pruner watches epochs
            result.reported = True
            run.trial.report(metrics.val_loss, metrics.epoch)

    def judge_epoch(self, run: TrialRun, metrics: EpochMetrics) -> None:
        """epoch_done's second half: raise TrialPruned if the pruner stops the trial here, or
        (--prune-diagnosed) a detector finds it diverging or dying. A trial at its last epoch
        has nothing left to save: it is never pruned there, it completes."""
        if metrics.epoch >= self.max_epochs:
            return
        if self.prune_diagnosed:
            fatal = [f for f in self.findings(run, len(run.folds) - 1)
                     if f.kind in FATAL_FINDINGS]
            if fatal:
                raise optuna.TrialPruned(f"diagnosed at epoch {metrics.epoch}: "
                                         f"{fatal[0].summary}")
        if self.reporting.epochs_are_reported and run.judged and run.trial.should_prune():
            raise pruned(run.trial, metrics.val_loss, step=metrics.epoch)

    def findings(self, run: TrialRun, i: int, *, diverged: bool = False) -> list[Finding]:
        """The detectors' findings on fold I's epochs so far."""
        context = Context(val_size=len(self.data.partition.val[i]),
                          batch_size=run.hp.batch_size, norm=run.hp.norm, diverged=diverged,
                          lr=run.hp.lr)
        return detect(run.folds[i].history, context, self.thresholds)

    def stops_early(self, run: TrialRun) -> bool:
        """Whether early stopping ends the current fold now (noted on it), before its last
        epoch; asked after the pruner, for a trial the pruner kept."""
        fold = run.folds[-1]
        if len(fold.history) >= self.max_epochs:
            return False
        if self.out_of_time():
            fold.stopped_epoch, fold.out_of_time = len(fold.history), True
            return True
        if not self.early_stopping.stops([m.val_loss for m in fold.history]):
            return False
        fold.stopped_epoch = len(fold.history)
        return True

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.perf_counter() >= self.deadline

    def fold_done(self, run: TrialRun) -> None:
        """The current fold trained all its epochs; report it if the policy says so (may
        prune)."""
        report = self.reporting.fold_report(run.folds)
        if report is None:
            return
        run.folds[-1].reported = True
        value, step = report
        self.tracker.log_metrics(run.run_id, self.reporting.fold_metrics(run.folds), step=step)
        run.trial.report(value, step)
        last = step == self.reporting.steps
        if not last and run.judged and run.trial.should_prune():
            raise pruned(run.trial, value, step=step, unit="fold")
        if self.out_of_time() and not last:  # a part of the folds is no score
            raise optuna.TrialPruned(f"the time budget ran out after fold {step} of "
                                     f"{self.reporting.folds}")

    def complete(self, run: TrialRun) -> float:
        """Every fold done: checkpoint, record COMPLETE, and the trial's value."""
        self.tracker.save_checkpoint(run.run_id, merge_fold_states(run.folds))
        self.stop(run, TrialState.COMPLETE, reason="")
        return mean(run.folds, "val_loss")

    def stop(self, run: TrialRun, state: TrialState, *, reason: str,
             diverged: bool = False) -> None:
        """The trial's user attributes (mirrored on its MLflow run), whatever stopped it.

        Scores summarise what Optuna saw: with K folds, the folds finished; with one, the
        best epoch so far. The one place a per-trial attribute is set.
        """
        folds, trial = run.folds, run.trial
        seen = [f for f in folds if f.reported]
        attrs: dict[str, Any] = {record.EPOCHS_TRAINED_ATTR: sum(len(f.history) for f in folds),
                                 record.DIAGNOSIS_ATTR: _diagnosis(folds, state, reason,
                                                                   diverged)}
        last = len(folds) - 1
        per_fold = [self.findings(run, i, diverged=diverged and i == last)
                    for i in range(len(folds))]
        summary = summarise_findings(
            per_fold, [f.history for f in folds],
            val_sizes=[len(v) for v in self.data.partition.val], thresholds=self.thresholds)
        attrs[record.FINDINGS_ATTR] = summary.kinds
        if summary.fluctuation_ratio is not None:
            attrs[record.FLUCTUATION_RATIO_ATTR] = summary.fluctuation_ratio
        if summary.final_gap is not None:
            attrs[record.FINAL_GAP_ATTR] = summary.final_gap
        if seen:
            attrs[record.BEST_VAL_LOSS_ATTR] = mean(seen, "val_loss")
            attrs[record.BEST_VAL_ACC_ATTR] = mean(seen, "val_acc")
        attrs.update(self.reporting.summary(folds, seen))
        if state == TrialState.FAIL:
            attrs[record.FAIL_REASON_ATTR] = reason
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        self.tracker.end_trial(run.run_id, number=trial.number, state=state, attrs=attrs,
                               findings=findings_detail(per_fold))


# What --prune-diagnosed prunes on: no later epoch can bring such a trial back.
FATAL_FINDINGS = ("divergence", "dying_relu")


def _diagnosis(folds: list[FoldResult], state: TrialState, reason: str, diverged: bool) -> str:
    """Each fold's curves read on their own: a finished fold as COMPLETE, the last as STATE."""
    if not folds:
        return diagnose([], state=state, reason=reason, diverged=diverged)
    last = len(folds) - 1
    verdicts = [diagnose(f.history, state=state if i == last else TrialState.COMPLETE,
                         reason=reason if i == last else "", diverged=diverged and i == last)
                for i, f in enumerate(folds)]
    if len(verdicts) == 1:
        return verdicts[0]
    return "; ".join(f"fold {i + 1}: {v}" for i, v in enumerate(verdicts))


def report_steps(max_epochs: int, k: int) -> int:
    """The steps a trial reports at, the pruner's resource: one fold's epochs, or K folds."""
    return reporting(k, max_epochs).steps


def model_kwargs(config: StudyConfig) -> dict[str, Any]:
    """The constructor arguments CONFIG gives the network (beyond the trial's dropout)."""
    return {"hidden": config.hidden}


def make_objective(
    config: StudyConfig, data: SearchData, tracker: Tracker, *,
    on_epoch: Callable[[int, EpochMetrics], None] = lambda number, metrics: None,
    deadline: float | None = None,
) -> Objective:
    """The objective CONFIG describes, over DATA's folds."""
    return Objective(data=data, space=config.search_space, model_name=config.model,
                     model_kwargs=model_kwargs(config), max_epochs=config.max_epochs,
                     seed=config.seed, tracker=tracker, on_epoch=on_epoch,
                     options=TrainOptions(amp=config.amp, compile_mode=config.compile,
                                          cuda_graph=config.cuda_graph,
                                          signals=config.signals),
                     early_stopping=EarlyStopping(config.early_stopping_patience,
                                                  config.early_stopping_min_delta),
                     thresholds=config.diagnosis, prune_diagnosed=config.prune_diagnosed,
                     deadline=deadline)
