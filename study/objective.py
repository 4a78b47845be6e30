"""The objective: suggest, build, train, report, prune, track. Glue only."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
import torch
from optuna.trial import TrialState

import models
from data_pipeline import CvData, SearchData
from study.diagnosis import diagnose, pruner_evidence
from study.interrupts import interruptibly
from study.liveness import WORKER_ATTR
from study.search_space import SearchSpace, suggest
from study.tracking import StateDict, Tracker
from study.training import EpochMetrics, NonFiniteLossError, TrainOptions, train


def split_tags(data: SearchData | CvData) -> dict[str, str]:
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
        if t.number != trial.number and step in t.intermediate_values]
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
class _Best:
    """The best epoch so far and a CPU copy of the weights that produced it."""

    metrics: EpochMetrics | None = None
    state: StateDict | None = None
    history: list[EpochMetrics] = field(default_factory=list)  # every epoch, for the diagnosis

    def update(self, metrics: EpochMetrics, model: torch.nn.Module) -> None:
        self.history.append(metrics)
        if self.metrics is None or metrics.val_loss < self.metrics.val_loss:
            self.metrics = metrics
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in
                          model.state_dict().items()}


@dataclass(kw_only=True)
class TrialSetup:
    """What every trial of a study is built from, besides its data (a split, or folds)."""

    space: SearchSpace
    model_name: str
    model_kwargs: Mapping[str, Any]
    max_epochs: int
    seed: int
    tracker: Tracker
    options: TrainOptions = field(default_factory=TrainOptions)  # how steps run (amp, compile)
    # Each epoch's metrics as they come, with the trial's number: the console's status line.
    on_epoch: Callable[[int, EpochMetrics], None] = field(default=lambda number, metrics: None)


@dataclass(kw_only=True)
class Objective(TrialSetup):
    data: SearchData  # train and val only: the search cannot reach the test set

    def __call__(self, trial: optuna.trial.BaseTrial) -> float:
        hp = suggest(trial, self.space, max_epochs=self.max_epochs)
        run_id = self.tracker.start_trial(number=trial.number, params=hp.as_params(),
                                          tags=split_tags(self.data))
        trial.set_user_attr("mlflow_run_id", run_id)
        trial.set_user_attr(WORKER_ATTR, self.tracker.parent_run_id)  # whose process runs it
        torch.manual_seed(trial_seed(self.seed, trial.number))  # init and dropout
        generator = torch.Generator().manual_seed(trial_seed(self.seed, trial.number))
        device = self.data.train.y.device
        model = models.build(self.model_name, dropout=hp.dropout, **self.model_kwargs).to(device)
        best = _Best()
        epochs = 0
        # `epochs` is read when the trial stops, not now: the closure sees its last value.
        with ending_run(lambda state, **why: self._finish(trial, run_id, state, best, epochs,
                                                          **why)):
            for metrics in interruptibly(train(model, hp, self.data, max_epochs=self.max_epochs,
                                               generator=generator, options=self.options)):
                epochs = metrics.epoch
                self.tracker.log_epoch(run_id, metrics)
                self.on_epoch(trial.number, metrics)
                best.update(metrics, model)
                trial.report(metrics.val_loss, metrics.epoch)
                if trial.should_prune():
                    raise pruned(trial, metrics.val_loss, step=metrics.epoch)
        assert best.metrics is not None and best.state is not None  # max_epochs >= 1
        self.tracker.save_checkpoint(run_id, best.state)
        self._finish(trial, run_id, TrialState.COMPLETE, best, epochs, reason="")
        return best.metrics.val_loss

    def _finish(self, trial: optuna.trial.BaseTrial, run_id: str, state: TrialState, best: _Best,
                epochs: int, *, reason: str, diverged: bool = False) -> None:
        attrs: dict[str, Any] = {"epochs_trained": epochs, "diagnosis": diagnose(
            best.history, state=state, reason=reason, diverged=diverged)}
        if best.metrics is not None:
            attrs.update(best_epoch=best.metrics.epoch, best_val_loss=best.metrics.val_loss,
                         best_val_acc=best.metrics.val_acc)
        if state == TrialState.FAIL:
            attrs["fail_reason"] = reason
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        self.tracker.end_trial(run_id, number=trial.number, state=state, attrs=attrs)
