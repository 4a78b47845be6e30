"""`mnist-study run`: launch or resume a study."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from models import MODELS
from study.cli.devices import check_shared_storage, parse_devices, run_workers, worker_commands
from study.cli.flags import add_data_arguments, add_leakage_arguments, config_values
from study.cli.logs import quiet_libraries
from study.config import (
    DEFAULT_MAX_EPOCHS,
    DEFAULT_N_TRIALS,
    DEVICES,
    MATMUL_PRECISIONS,
    StudyConfig,
    resolve_config,
)
from study.diagnose.detectors import Thresholds
from study.errors import ConfigError
from study.report.summary import format_summary
from study.search.search_space import SearchSpace
from study.search.strategy import PRUNERS, SAMPLERS
from study.store.store_checks import check_storage_url, check_tracking_uri
from study.train.engine_types import AMP_MODES, COMPILE_MODES

NAME = "run"
_DEFAULTS = StudyConfig()


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="launch or resume a study",
                       description="Launch a study, or resume it: the same command continues "
                                   "where a killed run stopped.",
                       epilog=_search_space_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d = _DEFAULTS
    # The choices of --model, --sampler and --pruner are their registries' names (cheap to read).
    # Every default is None here so the config resolver can tell "given" from "not given".
    p.add_argument("--config", type=Path, help="TOML file; keys are these flag names, plus a "
                   "[search_space] table; flags override it")
    p.add_argument("--study-name", help=f"Optuna study name, also the MLflow experiment "
                   f"(default {d.study_name})")
    p.add_argument("--storage", help=f"Optuna storage URL: sqlite:///..., postgresql://... or "
                   f"journal:PATH (default {d.storage})")
    p.add_argument("--n-trials", type=int, help=f"total finished trials the study should have, "
                   f"across restarts (default {DEFAULT_N_TRIALS}; with --timeout alone, no "
                   f"limit: time is the budget)")
    p.add_argument("--timeout", metavar="DURATION", help="this run's wall-time budget: "
                   "seconds, or 90s, 10m, 1h, 1h30m; the study is planned for it (printed "
                   "first), running trials end at it with their best epoch, then the best "
                   "trial is tested (default: no limit)")
    p.add_argument("--max-epochs", type=int, help=f"epochs a trial trains at most; successive "
                   f"halving (--pruner sha) compares trials at 2, 6, 18... (default "
                   f"{_per_model(DEFAULT_MAX_EPOCHS)})")
    p.add_argument("--no-warm-start", dest="warm_start", action="store_const", const=False,
                   help="do not enqueue the known-good recipes (the best measured "
                   "configuration, the seed recipe) as a new study's first trials "
                   "(default: enqueued where the search space holds them)")
    p.add_argument("--model", choices=tuple(MODELS), help=f"network (default {d.model})")
    p.add_argument("--hidden", type=int, help=f"hidden width of the MLP / CNN head "
                   f"(default {d.hidden})")
    p.add_argument("--sampler", choices=tuple(SAMPLERS), help=f"Optuna sampler "
                   f"(default {d.sampler})")
    p.add_argument("--pruner", choices=tuple(PRUNERS), help=f"pruner on validation loss "
                   f"(default {d.pruner})")
    p.add_argument("--device", metavar="{" + ",".join(DEVICES) + ",cuda:N}",
                   help=f"auto = cuda when available; cuda:N = the N-th visible GPU "
                   f"(default {d.device})")
    p.add_argument("--devices", metavar="all|0,1,...", help="one worker per GPU on one shared "
                   "study (--storage journal:PATH or postgresql://): this command again for "
                   "each, with --device cuda:N; each trial records its device (default: one "
                   "process on --device)")
    p.add_argument("--cpu-threads", type=int, help=f"intra-op CPU threads; 0 = one per core "
                   f"(default {d.cpu_threads}: as fast for MNIST, robust on shared cores)")
    p.add_argument("--amp", choices=AMP_MODES, help=f"bf16: bfloat16 autocast in the training "
                   f"step, for GPUs (default {d.amp})")
    p.add_argument("--compile", choices=COMPILE_MODES, help=f"torch.compile mode, compiled once "
                   f"and reused by every trial; reduce-overhead adds CUDA graphs "
                   f"(default {d.compile})")
    p.add_argument("--matmul-precision", choices=MATMUL_PRECISIONS, help=f"torch's float32 "
                   f"matrix-product precision: high lets GPUs use TF32 (default "
                   f"{d.matmul_precision}, torch's own; recorded with the study)")
    p.add_argument("--cuda-graph", action="store_const", const=True, help="capture a "
                   "cohort's training step once as a CUDA graph and replay it (one launch a "
                   "step instead of hundreds); trains through the cohort driver even at "
                   "--cohort-size 1; a capture that fails warns once and steps eagerly "
                   "(default: off; CUDA only)")
    p.add_argument("--no-signals", dest="signals", action="store_const", const=False,
                   help="skip the per-epoch gradient norms, update ratios and dead units "
                   "(the dying-ReLU and exploding-gradient findings then cannot be made; "
                   "default: measured)")
    p.add_argument("--cohort-size", type=int, help="K: up to K trials trained at once, "
                   "those of one batch size as one stacked model; one trial in K draws the "
                   "batch size, the next K-1 take it; 1 = one at a time (default: per "
                   "device, see README's Performance)")
    p.add_argument("--early-stopping-patience", type=int, metavar="N", help=f"stop a trial "
                   f"(each fold, with --cv-folds) after N epochs without a better validation "
                   f"loss; it is COMPLETE with its best epoch's weights; 0 = off "
                   f"(default {d.early_stopping_patience})")
    p.add_argument("--early-stopping-min-delta", type=float, metavar="D", help=f"what counts "
                   f"as better for --early-stopping-patience: a validation loss below the best "
                   f"by more than D (default {d.early_stopping_min_delta})")
    p.add_argument("--baseline", action="store_const", const=True, help="also train the "
                   "seed recipe (SGD lr 0.05 without momentum, StepLR 5/0.5, batch 64, no "
                   "dropout or weight decay) on the same split, once per study, and show its "
                   "validation scores beside the best trial's (default: off)")
    p.add_argument("--prune-diagnosed", action="store_const", const=True, help="prune a trial "
                   "as soon as it is diagnosed as diverging or with dying ReLUs (thresholds: "
                   "the [diagnosis] table; default: off, the pruner alone decides)")
    add_data_arguments(p, noncanonical_help="accept IDX files whose content is not the "
                       "canonical MNIST (a subset, Fashion-MNIST...); their fingerprint is still "
                       "logged")
    p.add_argument("--tracking-uri", help=f"MLflow tracking URI; env MLFLOW_TRACKING_URI "
                   f"(default {d.tracking_uri})")
    p.add_argument("--tracking-timeout", type=float, help=f"seconds one MLflow call may wait "
                   f"for a tracking server that does not answer; then training goes on and its "
                   f"logs are spooled (default {d.tracking_timeout:.0f})")
    p.add_argument("--mlflow-spool", type=Path, help=f"where logs that MLflow could not take "
                   f"wait for `mnist-study sync-mlflow` (default {d.mlflow_spool})")
    p.add_argument("--heartbeat-grace", type=float, help=f"seconds without a heartbeat after "
                   f"which a RUNNING trial's worker is taken for dead, its trial failed and "
                   f"retried (PostgreSQL/SQLite storages; default {d.heartbeat_grace:.0f})")
    p.add_argument("--seed", type=int, help=f"drives split, sampler and torch (default {d.seed})")
    p.add_argument("--val-fraction", type=float, help=f"share of the 60k training images held "
                   f"out for validation, stratified (default {d.val_fraction})")
    p.add_argument("--no-progress", action="store_const", const=True,
                   help="no progress bar (default: shown); one line per trial either way")
    p.add_argument("--verbose", action="store_const", const=True,
                   help="also Optuna's own line per trial, with all its parameters")
    add_leakage_arguments(p)


def _on_every_device(args: argparse.Namespace, config: StudyConfig) -> int:
    """--devices: this command once per GPU, as workers of one study (study/cli/devices.py)."""
    if args.device is not None:
        raise ConfigError("--devices starts one worker per GPU, each with its own --device: "
                          "give one of the two")
    check_shared_storage(config.storage)
    import torch  # to count the GPUs

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return run_workers(worker_commands(args.argv, parse_devices(args.devices, visible=visible)))


def _per_model(defaults: dict[str, int]) -> str:
    """E.g. "40 for the mlp, 20 for the cnn"."""
    return ", ".join(f"{value} for the {model}" for model, value in defaults.items())


def _search_space_help() -> str:
    """The [search_space] table of --config, with its defaults: what the study searches."""
    lines = ["the search space: a [search_space] table in the --config file, defaults shown;",
             "ranges are [low, high] (low == high pins one value), choices are lists:"]
    for key, value in SearchSpace().as_dict().items():
        lines.append(f"  {key} = {json.dumps(value)}")
    lines.append('  (norms: add "batch" to search BatchNorm after the hidden layers)')
    lines += ["", "the detectors' thresholds: a [diagnosis] table, defaults shown (README, "
              "Diagnosis):"]
    lines += [f"  {key} = {value!r}" for key, value in Thresholds().as_dict().items()]
    return "\n".join(lines)


def execute(args: argparse.Namespace) -> int:
    cli = config_values(args, exclude=("devices",))
    # Resolved before the heavy imports: a bad value is answered at once, not after seconds.
    config = resolve_config(cli, config_path=args.config, env=os.environ)
    # So are the stores' URLs and paths (the runner checks them again, for its other callers).
    check_storage_url(config.storage)
    check_tracking_uri(config.tracking_uri)
    if args.devices is not None:
        return _on_every_device(args, config)
    if not config.download:  # and the data, where no download can bring it (numpy only)
        from data_pipeline.mnist import locate_mnist

        locate_mnist(config.data_dir, download=False, verify=not config.allow_noncanonical_data)
    from study.run.runner import EvaluatedElsewhere, run_study  # torch, optuna, mlflow load here
    from study.train.training import set_cpu_threads

    quiet_libraries(verbose=config.verbose)
    set_cpu_threads(config.cpu_threads)
    summary = run_study(config)
    if isinstance(summary, EvaluatedElsewhere):
        print(summary.line)  # another worker of the study evaluates it, once
        return 0
    print(format_summary(summary))
    return 0
