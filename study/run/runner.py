"""One `mnist-study run`, a straight pipeline: prepare, search, evaluate, publish.

Prepare: every check a run can fail, then the data, audited, on the device once. Search: the
study created or resumed and optimised, every trial tracked. Evaluate: the best trial's
model(s) restored and the test set read once. Publish: the result, the report, config and model
on the MLflow parent run, and the result kept in the study for reruns.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import TrialState

import models
from data_pipeline import (
    AuditedData,
    AuditReport,
    MnistFiles,
    SearchData,
    locate_mnist,
    prepare_audited_data,
)
from data_pipeline.pictures import PICTURE, write_closest_pairs
from study.config import StudyConfig, check_batch_sizes
from study.errors import ConfigError, TrackingError
from study.report.summary import baseline_line
from study.run.baseline import train_baseline
from study.run.cohort_search import DEFAULT_COHORT_SIZE, search_in_cohorts
from study.run.console import progress
from study.run.evaluation import Restored, evaluate_best
from study.run.interrupts import deferred_interrupts, raise_pending_interrupt
from study.run.objective import make_objective, model_kwargs, report_steps
from study.run.publish import publish_study
from study.search.plan import Plan, measure_epoch_seconds, rungs
from study.search.search_space import hyperparams_from_params
from study.search.strategy import make_pruner, make_sampler, startup_trials
from study.search.warm_start import fitted, recipes, timing_recipe
from study.store import record
from study.store.liveness import (
    dead_workers,
    describe_running,
    evaluation_claim,
    fail_trial,
    grace_seconds_of,
    mark_closed,
    note_fail_reason,
    registered_worker,
    running_trials,
    still_searching,
)
from study.store.provenance import code_version, package_versions
from study.store.record import (
    BEST_VAL_ACC_ATTR,
    FAIL_REASON_ATTR,
    MLFLOW_RUN_ID_ATTR,
    SPOOLED_RUNS_ATTR,
    WORKER_ATTR,
    adopt_stored_settings,
    enqueue_warm_start,
    settings_identity,
    stored_baseline,
)
from study.store.redaction import redact, redact_text
from study.store.result import (
    Evaluation,
    StudySummary,
    evaluated_result,
    store_result,
    summary_from_result,
)
from study.store.storage import (
    FINISHED,
    GRACE_SECONDS,
    RETRIES,
    check_tracking_store,
    count_finished,
    open_storage,
    open_study,
    stored_identity,
)
from study.store.store_checks import check_storage_url, check_tracking_uri
from study.tracking import MlflowTracker, Tracker
from study.train.cohort.memory import evaluation_bytes, free_bytes, largest_cohort, member_bytes
from study.train.device import resolve_device
from study.train.engine_types import Hyperparams

logger = logging.getLogger(__name__)

CONFIG_PARAM_PREFIX = "config."  # the parent run's params of the study's settings
STUDY_METRIC_PREFIX = "study."  # the parent run's metrics the trials also have by name


@dataclass(frozen=True)
class EvaluatedElsewhere:
    """What a worker that leaves the study's one evaluation to another returns."""

    study_name: str
    line: str  # who evaluates, and how to see the result
    trials_run_now: int  # this worker's own


def identity(config: StudyConfig, data: SearchData) -> dict[str, Any]:
    """What a resumed study must share with the run that created it (JSON-comparable)."""
    return {**settings_identity(config), "data_fingerprint": data.data_fingerprint,
            "split_fingerprint": data.split_fingerprint}


def run_study(config: StudyConfig, *,
              tracker: Tracker | None = None) -> StudySummary | EvaluatedElsewhere:
    """Search, then evaluate the best trial once: here, unless another worker of the study is
    still searching (the last one evaluates) or is evaluating it now."""
    started = time.perf_counter()
    existing = _existing_study(config)
    if existing is not None:  # what it was made to search, where the user said nothing else
        config, adopted = adopt_stored_settings(config, stored_identity(existing))
        if adopted:
            logger.info("study %r keeps the settings it was made with: %s (today's defaults "
                        "differ; give them to change them, under another --study-name)",
                        config.study_name, ", ".join(adopted))
        finished = _already_evaluated(existing, config, started=started)
        if finished is not None:
            return finished  # no data read, no MLflow run made, no model registered
    deadline = None if config.timeout is None else started + config.timeout
    device = resolve_device(config.device)
    torch.set_float32_matmul_precision(config.matmul_precision)
    if config.cuda_graph and device.type != "cuda":
        logger.warning("--cuda-graph needs a CUDA device: on %s every step runs eagerly", device)
    files, audited = _checked_inputs(config, device, tracked=tracker is None)  # prepare
    data = audited.data
    plan = _plan(config, data, deadline=deadline)  # refuses a budget too short for a trial
    study, enqueued = _open(config, data)
    plan = dataclasses.replace(plan, warm_start=tuple(enqueued))  # none on a resume
    check_tracking_store(study, config.tracking_uri)  # before a new, empty store is made
    tracker = tracker if tracker is not None else MlflowTracker(
        config.tracking_uri, spool_root=config.mlflow_spool,
        tracking_timeout=config.tracking_timeout)
    with deferred_interrupts():  # a signal stops an epoch, never a store call
        _start(study, config, tracker, audited, files=files, device=device)
        logger.info("%s", plan.line())
        if (short := plan.shortfall(config.model)) is not None:
            logger.warning("%s", short)
        status = "FAILED"
        with registered_worker(study, tracker.parent_run_id) as worker:
            try:
                _close_dead_runs(study, tracker)
                before = count_finished(study)
                _search(study, config, data, tracker, plan=plan, deadline=deadline)  # search
                worker.search_ended()
                raise_pending_interrupt()  # held through the last trial: test set unseen
                if tracker.outage:  # the search is saved; its logs wait in the spool
                    raise TrackingError(_outage_line(study, config, tracker))
                own = _own_trials(study, tracker.parent_run_id,
                                  fallback=count_finished(study) - before)
                grace = grace_seconds_of(study) or GRACE_SECONDS
                if searching := still_searching(study, worker, grace_seconds=grace):
                    status = "FINISHED"
                    return _elsewhere(config, own, f"{' and '.join(searching)} still "
                                      f"{'search' if len(searching) > 1 else 'searches'}: the "
                                      f"last worker to end its search evaluates the study")
                with evaluation_claim(study, worker, grace_seconds=grace) as holder:
                    if holder is not None:
                        status = "FINISHED"
                        return _elsewhere(config, own, f"{holder} is evaluating the study")
                    done = evaluated_result(study, n_trials=0,
                                            identity=settings_identity(config))
                    if done is not None:  # another worker evaluated these very trials
                        status = "FINISHED"
                        return dataclasses.replace(summary_from_result(
                            study, done, storage=config.storage, cv_folds=config.cv_folds,
                            seconds=time.perf_counter() - started), trials_run_now=own)
                    if config.baseline:  # the seed recipe on the same split, validation only
                        train_baseline(study, make_objective(config, data, tracker))
                    test, restored = evaluate_best(  # evaluate
                        study, files=files, data=data, tracker=tracker,
                        model_name=config.model, model_kwargs=model_kwargs(config),
                        device=device)
                    summary = _summarise(study, config, test, device=str(device),
                                         trials_run_now=own,
                                         seconds=time.perf_counter() - started,
                                         parent_run_id=tracker.parent_run_id)
                    summary = _publish(study, config, data, summary, restored,
                                       tracker)  # publish
                    raise_pending_interrupt()  # held through publishing: the run says KILLED
                    store_result(study, summary)  # a rerun shows it, no second evaluation
                status = "FINISHED"
                return summary
            except KeyboardInterrupt:
                status = "KILLED"
                raise
            finally:
                _end_study(study, tracker, status=status, failing=sys.exc_info()[1])


def _own_trials(study: optuna.Study, parent_run_id: str, *, fallback: int) -> int:
    """The finished trials this process ran (FALLBACK for a tracker without runs)."""
    if not parent_run_id:
        return fallback
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED)
               if t.user_attrs.get(WORKER_ATTR) == parent_run_id)


def _elsewhere(config: StudyConfig, own: int, why: str) -> EvaluatedElsewhere:
    line = (f"this worker ran {own} trial{'' if own == 1 else 's'} of study "
            f"{config.study_name!r}; {why}, and the same command shows the result once it is "
            f"stored")
    return EvaluatedElsewhere(study_name=config.study_name, line=line, trials_run_now=own)


def _open(config: StudyConfig, data: SearchData) -> tuple[optuna.Study, list[str]]:
    """The study CONFIG names, created or resumed (a resume must match its identity); a new
    one gets its warm-start trials, whose names come second."""
    enqueued: list[str] = []

    def warm_start(study: optuna.Study) -> None:
        if config.warm_start:
            enqueued.extend(enqueue_warm_start(study, config.search_space, config.model,
                                               max_epochs=config.max_epochs))

    study = open_study(
        name=config.study_name,
        storage=open_storage(config.storage, grace_seconds=config.heartbeat_grace),
        storage_url=config.storage,
        sampler=make_sampler(config.sampler, seed=config.seed, n_trials=config.trial_limit()),
        # With cross-validation a trial reports once per fold: the pruner's resource is a fold.
        pruner=make_pruner(config.pruner, max_epochs=report_steps(config.max_epochs, data.k)),
        identity=identity(config, data),
        on_create=warm_start,
    )
    return study, enqueued


def _plan(config: StudyConfig, data: SearchData, *, deadline: float | None) -> Plan:
    """What the budget buys: rungs, about how many trials, the warm start; refused when the
    budget cannot train one trial to --max-epochs."""
    shaped = config.pruner == "sha" and data.k == 1
    held = [name for name, hp in recipes(config.model).items()
            if fitted(hp, config.search_space, max_epochs=config.max_epochs) is not None
            ] if config.warm_start else []
    epoch_seconds = None
    if config.timeout is not None:
        timed = timing_recipe(config.model)
        fit = None if timed is None else fitted(timed, config.search_space,
                                                max_epochs=config.max_epochs)
        hp = fit[0] if fit is not None else _median_point(config)
        epoch_seconds = measure_epoch_seconds(config.model, hp, data.fold(0),
                                              model_kwargs=model_kwargs(config))
    plan = Plan(max_epochs=config.max_epochs, rungs=rungs(config.max_epochs) if shaped else (),
                budget_seconds=config.timeout, n_trials=config.trial_limit(),
                epoch_seconds=epoch_seconds, warm_start=tuple(held),
                warm_epochs=config.max_epochs if held else 0,
                left_seconds=None if deadline is None else deadline - time.perf_counter())
    plan.check_fits(config.model)
    return plan


def _median_point(config: StudyConfig) -> Hyperparams:
    """A representative trial of CONFIG's space for timing: its middle batch size, with
    BatchNorm and augmentation when the space has them (the slower choices)."""
    space = config.search_space
    sizes = sorted(space.batch_sizes)
    augment = "affine" if "affine" in space.augments else "rotate" \
        if "rotate" in space.augments else "none"
    params = {"aug_degrees": 10.0, "aug_translate": 0.1, "aug_scale": 0.1}
    return Hyperparams(lr=space.lr_range(space.optimizers[0])[0], optimizer=space.optimizers[0],
                       batch_size=sizes[len(sizes) // 2], dropout=space.dropout[0],
                       weight_decay=space.weight_decay[0], scheduler="none",
                       momentum=space.momentum[0] if space.optimizers[0] == "sgd" else None,
                       norm="batch" if "batch" in space.norms else "none", augment=augment,
                       augment_params={k: v for k, v in params.items()
                                       if augment == "affine" or k == "aug_degrees"}
                       if augment != "none" else {})


def _start(study: optuna.Study, config: StudyConfig, tracker: Tracker, audited: AuditedData,
           *, files: MnistFiles, device: torch.device) -> None:
    """Provenance on the study and the parent run; spooled logs sent; RUNNING trials judged."""
    data = audited.data
    provenance = {record.CODE_VERSION_ATTR: code_version(),
                  record.DATA_FINGERPRINT_ATTR: data.data_fingerprint,
                  record.SPLIT_FINGERPRINT_ATTR: data.split_fingerprint,
                  record.DEVICE_ATTR: str(device),
                  record.MATMUL_PRECISION_ATTR: torch.get_float32_matmul_precision()}
    for key, value in {**provenance, record.SPLIT_SEED_ATTR: config.seed,
                       record.VAL_FRACTION_ATTR: config.val_fraction,
                       record.CV_FOLDS_ATTR: config.cv_folds,
                       record.AUDIT_ATTR: audited.report.summary(),
                       record.PACKAGE_VERSIONS_ATTR: package_versions()}.items():
        study.set_user_attr(key, value)
    # The config under its own prefix: in MLflow's Columns and Compare, the trials' bare
    # hyperparameters (dropout, norm...) stay apart from the study's settings.
    params = {**_flat(config.to_dict()), "storage": redact(config.storage),
              "tracking_uri": redact(config.tracking_uri)}
    params = {f"{CONFIG_PARAM_PREFIX}{key}": value for key, value in params.items()}
    tracker.start_study(study_name=config.study_name, params=params,
                        tags={**provenance, **{f"version.{k}": v for k, v in
                                               package_versions().items()}})
    _backfill(study, tracker)
    _log_audit(tracker, audited.report, files)
    _take_stock(study)


def _existing_study(config: StudyConfig) -> optuna.Study | None:
    """The study CONFIG names, when its storage holds it; None for a new one (and no file is
    created where there is none)."""
    url = config.storage
    for prefix in ("sqlite:///", "journal:"):
        if url.startswith(prefix) and not Path(url.removeprefix(prefix)).is_file():
            return None  # a new study: and opening would create the file
    try:
        return optuna.load_study(study_name=config.study_name, storage=open_storage(
            url, grace_seconds=config.heartbeat_grace))
    except KeyError:
        return None


def _already_evaluated(study: optuna.Study, config: StudyConfig, *,
                       started: float) -> StudySummary | None:
    """The stored result of a finished, evaluated study; None when there is work to do."""
    url = config.storage
    result = evaluated_result(study, n_trials=config.trial_limit() or 0,
                              identity=settings_identity(config))
    if result is None:
        return None
    check_tracking_store(study, config.tracking_uri)  # its runs are in the store it names
    limit = config.trial_limit()
    logger.info("study %r is finished (%d trials%s) and evaluated: nothing to run",
                config.study_name, count_finished(study),
                f" of --n-trials {limit}" if limit is not None else "")
    return summary_from_result(study, result, storage=url, cv_folds=config.cv_folds,
                               seconds=time.perf_counter() - started)


def _backfill(study: optuna.Study, tracker: Tracker) -> None:
    """Send what earlier processes spooled during an outage; join their runs to the trials."""
    runs = {**study.user_attrs.get(SPOOLED_RUNS_ATTR, {}), **tracker.backfill()}
    if runs != study.user_attrs.get(SPOOLED_RUNS_ATTR, {}):
        study.set_user_attr(SPOOLED_RUNS_ATTR, runs)  # for workers on other machines
    tracker.remember_runs(runs)


def _take_stock(study: optuna.Study) -> None:
    """Say what this run finds RUNNING, and fail (then retry) the trials of dead workers.

    A worker on this host whose process is gone is dead for sure: its trials are failed and
    re-queued now. Elsewhere only the heartbeat tells, after the grace period (RDB storages).
    A failed trial's fail_reason says why, and its retry keeps it.
    """
    grace = grace_seconds_of(study)
    dead = dead_workers(study, grace_seconds=grace or GRACE_SECONDS)
    retry = RetryHeartbeatStaleTrialCallback(max_retry=RETRIES)
    stale = False
    for trial in running_trials(study):
        if trial.worker in dead:
            reason = f"its worker stopped without a word: {dead[trial.worker]}"
            logger.warning("trial %d was RUNNING, but %s: it is failed and retried now",
                           trial.number, dead[trial.worker])
            retry(study, fail_trial(study, trial.trial_id, reason=reason))
            continue
        logger.warning("%s", describe_running(trial, grace_seconds=grace))
        if grace is not None and trial.heartbeat_age is not None \
                and trial.heartbeat_age > grace:
            note_fail_reason(study, trial.trial_id, f"its worker stopped without a word "
                             f"(heartbeat {trial.heartbeat_age:.0f} s old)")
            stale = True
    if stale:  # failed and re-queued now, so that this run counts and retries it
        fail_stale_trials(study)


def _checked_inputs(config: StudyConfig, device: torch.device, *,
                    tracked: bool) -> tuple[MnistFiles, AuditedData]:
    """The data, and every check a run can fail, before any store or folder is created.

    A refused run (a misspelled --data-dir, a bad URL) leaves no empty optuna.db, mlflow/ or
    lock file behind. TRACKED: the run makes its own MlflowTracker on config.tracking_uri.
    """
    check_storage_url(config.storage)
    if tracked:
        check_tracking_uri(config.tracking_uri)
    files = locate_mnist(config.data_dir, download=config.download,
                         verify=not config.allow_noncanonical_data)
    # Audited once per process, before any trial: duplicates across the split refuse the run.
    audited = prepare_audited_data(
        files, val_fraction=config.val_fraction, seed=config.seed, cv_folds=config.cv_folds,
        near_threshold=config.near_duplicate_threshold, drop_duplicates=config.drop_duplicates,
        device=device)
    check_batch_sizes(config.search_space, train_sizes=audited.data.train_sizes())
    _check_cohort_fits(config, audited.data)
    return files, audited


def _cohort_size(config: StudyConfig, device: torch.device) -> int:
    """Trials trained at once: --cohort-size, else the device's default. --compile compiles a
    cohort of one: it implies one trial at a time."""
    return config.cohort_size or (
        1 if config.compile != "none" else DEFAULT_COHORT_SIZE[device.type])


def _check_cohort_fits(config: StudyConfig, data: SearchData) -> None:
    """Refuse a cohort size whose members cannot all fit in the device's free memory, at the
    search space's largest batch size, before any trial starts."""
    device = data.images.device
    size = _cohort_size(config, device)
    if size <= 1:
        return
    # The fold's normalised tensors first (made on first use, kept while trials run): the
    # memory they take is not free for the members.
    example = data.fold(0).train.x[:1]
    free = free_bytes(device)
    if free is None:
        return
    # The largest member the space allows: with BatchNorm if it may have it.
    norm = "batch" if "batch" in config.search_space.norms else "none"
    model = models.build(config.model, dropout=0.0, norm=norm, **model_kwargs(config))
    batch = max(config.search_space.batch_sizes)
    per_member = member_bytes(model, example, batch_size=batch, vectorised=device.type != "cpu")
    fits = largest_cohort(per_member, evaluation_bytes(model, example), free)
    if size > fits:
        raise ConfigError(
            f"--cohort-size {size} does not fit on {device}: a {config.model} member at batch "
            f"size {batch} needs about {per_member / 2**20:.0f} MiB, so {size} need "
            f"{size * per_member / 2**30:.1f} GiB, but {free / 2**30:.1f} GiB is free; use "
            f"--cohort-size {max(fits, 1)} or less, or smaller batch_sizes")


def _close_dead_runs(study: optuna.Study, tracker: Tracker) -> None:
    # A SIGKILLed worker cannot end its MLflow runs: once Optuna has failed its trial
    # (heartbeat), the trial's run must not stay RUNNING forever, nor its parent run.
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if "mlflow_run_id" in trial.user_attrs:
            why = trial.user_attrs.get(FAIL_REASON_ATTR, "its worker stopped without a word "
                                                      "(heartbeat went stale)")
            tracker.close_dead_runs([trial.user_attrs[MLFLOW_RUN_ID_ATTR]],
                                    tags={"optuna.state": "FAIL", "optuna.fail_reason": why})
    grace = grace_seconds_of(study) or GRACE_SECONDS
    for parent, why in dead_workers(study, grace_seconds=grace).items():
        if parent == tracker.parent_run_id:
            continue
        tracker.close_dead_runs([parent], tags={"mnist_study.fail_reason": f"{why}; closed by "
                                                f"the run {tracker.parent_run_id}"})
        if not tracker.outage:
            mark_closed(study, parent, why)
            logger.info("closed the MLflow run %s of a dead worker: %s", parent, why)


def _end_study(study: optuna.Study, tracker: Tracker, *, status: str,
               failing: BaseException | None) -> None:
    """End this invocation's runs; a clean-up error never hides the error being raised."""
    try:
        try:
            _close_dead_runs(study, tracker)
        finally:
            tracker.end_study(status=status)
    except Exception as exc:
        if failing is None:
            raise
        logger.warning("could not end the MLflow runs: %s",
                       redact_text(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__)


def _outage_line(study: optuna.Study, config: StudyConfig, tracker: Tracker) -> str:
    return (f"MLflow tracking server {redact(config.tracking_uri)} stopped answering "
            f"({tracker.outage}); the study's {count_finished(study)} finished trials are in "
            f"the Optuna storage and their MLflow logs in {tracker.spool_dir}: once it answers, "
            f"run `mnist-study sync-mlflow` with the same --study-name, --storage and "
            f"--tracking-uri, or this same command, which back-fills them and then evaluates "
            f"the best trial on the test set")


def _log_audit(tracker: Tracker, report: AuditReport, files: MnistFiles) -> None:
    """The leakage audit in the parent run's audit/ artifacts: JSON, markdown and the picture
    of its closest pairs (the study report shows it)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "audit"
        folder.mkdir()
        (folder / "audit.json").write_text(report.to_json())
        (folder / "audit.md").write_text(report.to_markdown())
        if report.closest:
            write_closest_pairs(report, files, folder / PICTURE)
        tracker.log_study_artifacts(Path(tmp))


def _search(study: optuna.Study, config: StudyConfig, data: SearchData,
            tracker: Tracker, *, plan: Plan, deadline: float | None) -> None:
    """Trials until the trial budget (the study's total across restarts: a resumed run does
    only what is left) or the DEADLINE, at which running trials end with their best epoch."""
    limit = config.trial_limit()
    remaining = None if limit is None else limit - count_finished(study)
    if remaining is not None and remaining <= 0:
        logger.info("study %r already has %d finished trials; nothing to run",
                    config.study_name, limit)
        return
    cohort_size = _cohort_size(config, data.images.device)
    timeout = None if deadline is None else max(deadline - time.perf_counter(), 0.0)
    with progress(total=remaining, max_epochs=config.max_epochs, bar=not config.no_progress,
                  budget_seconds=plan.budget_seconds) as console:
        objective = make_objective(config, data, tracker, on_epoch=console.epoch,
                                   deadline=deadline)
        if cohort_size > 1:
            logger.info("training up to %d trials at once (--cohort-size)", cohort_size)
        search_in_cohorts(study, objective, cohort_size=cohort_size, n_trials=limit,
                          timeout=timeout, free_draws=startup_trials(limit),
                          trial_done=console.trial_done)


def _publish(study: optuna.Study, config: StudyConfig, data: SearchData, summary: StudySummary,
             restored: Restored, tracker: Tracker) -> StudySummary:
    """The result on the MLflow parent run, then the report, config and (holdout) the model."""
    baseline = summary.baseline or {}
    tracker.log_study_result(
        metrics={"test_accuracy": summary.test.test_acc, "test_loss": summary.test.test_loss,
                 # Named apart from the trials' best_val_loss: sorted by it, the parent run
                 # would rank among its own trials.
                 f"{STUDY_METRIC_PREFIX}best_val_loss": summary.best_val_loss,
                 f"{STUDY_METRIC_PREFIX}best_val_acc": summary.best_val_acc,
                 **{f"baseline_{k}": float(baseline[k]) for k in ("val_loss", "val_acc")
                    if k in baseline}},
        params={f"best.{k}": v for k, v in summary.best_params.items()},
        tags={"best_trial_number": str(summary.test.trial_number),
              # MLflow shows a run's note as its description: read first.
              "mlflow.note.content": _description(summary)},
    )
    # After the result: the logged model copies the parent run's metrics.
    registered = publish_study(study, config=config, data=data, test=summary.test,
                               restored=restored, tracker=tracker)
    return dataclasses.replace(summary, registered_model=registered)


def _summarise(study: optuna.Study, config: StudyConfig, test: Evaluation, *, device: str,
               trials_run_now: int, seconds: float, parent_run_id: str) -> StudySummary:
    best = study.best_trial
    counts = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    return StudySummary(
        study_name=config.study_name, storage=config.storage, state_counts=dict(counts),
        best_trial=best.number, best_params=hyperparams_from_params(best.params).as_params(),
        best_val_loss=float(best.values[0]), best_val_acc=float(best.user_attrs[BEST_VAL_ACC_ATTR]),
        test=test, device=device, trials_run_now=trials_run_now, seconds=seconds,
        mlflow_parent_run_id=parent_run_id, cv_folds=config.cv_folds,
        notes=_budget_notes(counts, n_trials=config.trial_limit()),
        baseline=stored_baseline(study),
    )


def _description(s: StudySummary) -> str:
    """The parent run's description: the study's result in three lines of markdown."""
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in sorted(s.best_params.items()))
    how = f"mean of its {s.cv_folds} fold models" if s.cv_folds else "its restored weights"
    return (f"**Best trial #{s.best_trial}** of study `{s.study_name}`: validation loss "
            f"{s.best_val_loss:.4f}, validation accuracy {s.best_val_acc:.2%}.\n\n"
            f"**Test accuracy {s.test.test_acc:.2%}** (loss {s.test.test_loss:.4f}; {how}, "
            f"test set read once).\n\nParameters: {params}."
            + (f"\n\n{baseline_line(s.baseline)}" if s.baseline else ""))


def _budget_notes(counts: Counter[str], *, n_trials: int | None) -> list[str]:
    """The budget's arithmetic, when the study stopped short of --n-trials."""
    finished = sum(counts[state.name] for state in FINISHED)
    if n_trials is None or finished >= n_trials:
        return []
    running, waiting = counts[TrialState.RUNNING.name], counts[TrialState.WAITING.name]
    return [f"budget: {finished} of --n-trials {n_trials} finished; {running} RUNNING "
            f"(another worker's, or a dead one's) and {waiting} queued count against it. A "
            f"dead worker's trial is failed and retried once its heartbeat is older than "
            f"the grace period: rerun this command then to finish the budget"]


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
