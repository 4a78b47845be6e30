"""`mnist-study sync-mlflow`: send what a run kept in its spool while MLflow was away."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from study.cli.flags import config_values
from study.config import StudyConfig

NAME = "sync-mlflow"
_DEFAULTS = StudyConfig()


def add_parser(sub: Any) -> None:
    d = _DEFAULTS
    p = sub.add_parser(NAME, help="back-fill MLflow with what a run spooled during an outage",
                       description="Replay the study's MLflow spool into the tracking store: "
                                   "every trial's run, params, per-epoch metrics, state and "
                                   "checkpoint, and the runs' ends. Safe to run again.")
    p.add_argument("--config", type=Path, help="TOML file, as given to `run`")
    p.add_argument("--study-name", help=f"as given to `run` (default {d.study_name})")
    p.add_argument("--storage", help=f"as given to `run` (default {d.storage})")
    p.add_argument("--tracking-uri", help=f"as given to `run`; env MLFLOW_TRACKING_URI "
                   f"(default {d.tracking_uri})")
    p.add_argument("--mlflow-spool", type=Path, help=f"as given to `run` "
                   f"(default {d.mlflow_spool})")
    p.add_argument("--tracking-timeout", type=float, help=f"as given to `run` "
                   f"(default {d.tracking_timeout:.0f})")


def execute(args: argparse.Namespace) -> int:
    import optuna

    from study.cli.logs import quiet_libraries
    from study.config import resolve_config
    from study.store.record import SPOOLED_RUNS_ATTR
    from study.store.redaction import redact
    from study.store.storage import open_storage
    from study.tracking import MlflowTracker
    from study.tracking.spool import pending, study_spool_dir

    quiet_libraries()
    cli = config_values(args)
    config = resolve_config(cli, config_path=args.config, env=os.environ)
    directory = study_spool_dir(config.mlflow_spool, config.study_name)
    waiting = pending(directory)
    if waiting == 0:
        print(f"nothing to back-fill for study {config.study_name!r} in {directory}")
        return 0
    tracker = MlflowTracker(config.tracking_uri, spool_root=config.mlflow_spool,
                            tracking_timeout=config.tracking_timeout)
    tracker.attach(config.study_name)
    runs = tracker.backfill()
    # The trials' mlflow_run_id user attrs hold the spool keys: the study maps them to runs.
    study = optuna.load_study(study_name=config.study_name,
                              storage=open_storage(config.storage))
    study.set_user_attr(SPOOLED_RUNS_ATTR, {**study.user_attrs.get(SPOOLED_RUNS_ATTR, {}),
                                            **runs})
    print(f"back-filled {waiting} spooled operations ({len(runs)} runs) of study "
          f"{config.study_name!r} into {redact(config.tracking_uri)}")
    return 0
