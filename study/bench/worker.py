"""One benchmark study, in a process of its own: `python -m study.bench.worker SPEC RESULT`.

A fresh process per study keeps the numbers honest: peak RSS is that study's alone, no study
inherits another's warm caches, and every one pays its own imports and data loading.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import optuna
import torch

from study.bench.settings import REFERENCE_SPACE
from study.bench.timing import StudyClock, TimedTracker
from study.store.record import BEST_VAL_ACC_ATTR, BEST_VAL_LOSS_ATTR, EPOCHS_TRAINED_ATTR
from study.tracking import Tracker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudySpec:
    label: str  # also the study name
    kind: str  # "project" (run_study) or "conventional" (the DataLoader objective)
    n_trials: int
    max_epochs: int
    pruner: str
    seed: int
    tracking: bool
    data_dir: str
    torchvision_root: str
    workdir: str
    tracking_uri: str
    device: str
    cpu_threads: int
    allow_noncanonical_data: bool
    timeout_s: float | None = None
    target_acc: float | None = None
    amp: str = "none"
    compile: str = "none"
    cohort_size: int = 1  # trials trained at once (study/train/cohort/); 1: each one alone
    rep: int = 0  # repetitions of one configuration are distinct studies


@dataclass
class TrialRecord:
    number: int
    state: str
    epochs: int
    end_s: float  # seconds after the search began
    best_val_loss: float | None
    best_val_acc: float | None
    batch_size: int | None = None  # what the trial trained at (None: never started)


@dataclass
class StudyResult:
    spec: StudySpec
    setup_s: float  # imports done; data loaded, storage and tracker opened
    search_s: float  # first trial started to last trial ended
    finalize_s: float  # test evaluation, publishing, closing runs
    total_s: float
    trials: list[TrialRecord]
    peak_rss_mb: float
    peak_gpu_mb: float | None = None
    epoch_seconds: float | None = None  # training + validation inside the epochs (project)
    tracker_calls: dict[str, list[float]] = field(default_factory=dict)  # [count, seconds]
    target: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StudyResult:
        raw = dict(raw)
        raw["spec"] = StudySpec(**raw["spec"])
        raw["trials"] = [TrialRecord(**t) for t in raw["trials"]]
        return cls(**raw)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_spec(spec: StudySpec) -> StudyResult:
    from study.train.training import set_cpu_threads

    set_cpu_threads(spec.cpu_threads)
    runner = _run_project if spec.kind == "project" else _run_conventional
    result = runner(spec)
    result.peak_rss_mb = _peak_rss_mb()
    if spec.device == "cuda":
        result.peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20
    return result


def _run_project(spec: StudySpec) -> StudyResult:
    from study.config import StudyConfig
    from study.run.runner import run_study
    from study.tracking import MlflowTracker, NullTracker

    clock = StudyClock(origin=time.perf_counter())
    inner: Tracker = MlflowTracker(spec.tracking_uri) if spec.tracking else NullTracker()
    timed = TimedTracker(inner, clock=clock, target_acc=spec.target_acc)
    config = StudyConfig(
        study_name=spec.label, storage=_storage(spec), n_trials=spec.n_trials,
        timeout=spec.timeout_s, max_epochs=spec.max_epochs, pruner=spec.pruner,
        device=spec.device, cpu_threads=spec.cpu_threads, amp=spec.amp, compile=spec.compile,
        cohort_size=spec.cohort_size,
        data_dir=Path(spec.data_dir), download=False,
        allow_noncanonical_data=spec.allow_noncanonical_data, tracking_uri=spec.tracking_uri,
        seed=spec.seed, no_progress=True, search_space=REFERENCE_SPACE, warm_start=False,
        early_stopping_patience=0)
    # The wrapper delegates every Tracker method it does not clock itself.
    run_study(config, tracker=cast(Tracker, timed))
    assert clock.search_started is not None and clock.search_ended is not None
    assert clock.study_ended is not None
    ends = {t.number: t.end_s for t in clock.trials.values() if t.end_s is not None}
    return StudyResult(
        spec=spec, setup_s=clock.search_started - clock.origin,
        search_s=clock.search_ended - clock.search_started,
        finalize_s=clock.study_ended - clock.search_ended,
        total_s=clock.study_ended - clock.origin,
        trials=_records(optuna.load_study(study_name=spec.label, storage=config.storage), ends),
        peak_rss_mb=0.0, tracker_calls=clock.calls,
        epoch_seconds=sum(t.epoch_seconds for t in clock.trials.values()),
        target=dataclasses.asdict(clock.target) if clock.target else None,
    )


def _run_conventional(spec: StudySpec) -> StudyResult:
    from data_pipeline import stratified_split
    from study.bench.conventional import ConventionalObjective, mnist_labels
    from study.config import StudyConfig
    from study.search.strategy import make_pruner, make_sampler
    from study.train.device import resolve_device

    origin = time.perf_counter()
    defaults = StudyConfig()  # the project's split and width, so both search the same problem
    root = Path(spec.torchvision_root)
    split = stratified_split(mnist_labels(root), val_fraction=defaults.val_fraction,
                             seed=spec.seed)
    # In memory, as in Optuna's example; the project pays for its SQLite storage.
    study = optuna.create_study(
        direction="minimize", study_name=spec.label,
        sampler=make_sampler("tpe", seed=spec.seed, n_trials=spec.n_trials),
        pruner=make_pruner(spec.pruner, max_epochs=spec.max_epochs))
    objective = ConventionalObjective(root=root, split=split, space=REFERENCE_SPACE,
                                      max_epochs=spec.max_epochs, hidden=defaults.hidden,
                                      seed=spec.seed,
                                      device=resolve_device(spec.device))
    search_started = time.perf_counter()
    ends: dict[int, float] = {}

    def record_end(_: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        ends[trial.number] = time.perf_counter() - search_started

    study.optimize(objective, n_trials=spec.n_trials, timeout=spec.timeout_s,
                   callbacks=[record_end])
    done = time.perf_counter()
    return StudyResult(
        spec=spec, setup_s=search_started - origin, search_s=done - search_started,
        finalize_s=0.0, total_s=done - origin, trials=_records(study, ends), peak_rss_mb=0.0)


def _records(study: optuna.Study, ends: dict[int, float]) -> list[TrialRecord]:
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    return [
        TrialRecord(number=t.number, state=t.state.name,
                    epochs=int(t.user_attrs.get(EPOCHS_TRAINED_ATTR, 0)),
                    end_s=ends.get(t.number, float("nan")),
                    best_val_loss=_float(t.user_attrs.get(BEST_VAL_LOSS_ATTR)),
                    best_val_acc=_float(t.user_attrs.get(BEST_VAL_ACC_ATTR)),
                    # a label such as "0064" in the project's studies, an int in others
                    batch_size=(int(str(t.params["batch_size"])) if "batch_size" in t.params
                                else None))
        for t in finished
    ]


def _float(value: object) -> float | None:
    return float(cast(float, value)) if value is not None else None


def _storage(spec: StudySpec) -> str:
    return f"sqlite:///{Path(spec.workdir) / spec.label}.optuna.db"


def _peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux; children too, should a DataLoader ever spawn workers.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def main(argv: list[str]) -> int:
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is noise here
    spec = StudySpec(**json.loads(spec_path.read_text()))
    result = run_spec(spec)
    result_path.write_text(json.dumps(result.to_json(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
