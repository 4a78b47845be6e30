"""`mnist-study report`: the study as one offline HTML file (study/report/html.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from study.cli.flags import config_values
from study.config import StudyConfig
from study.errors import StudyError

NAME = "report"
_DEFAULTS = StudyConfig()
_NOT_CONFIG = ("output",)


def add_parser(sub: Any) -> None:
    d = _DEFAULTS
    p = sub.add_parser(NAME, help="write the study report: one HTML file that opens offline",
                       description="Write one self-contained HTML file about a study: its best "
                                   "trial and test accuracy, the optimisation history, what "
                                   "mattered, learning curves with each trial's findings, and "
                                   "the leakage audit. `run` writes it too, to the parent run.")
    p.add_argument("--output", type=Path, required=True, metavar="FILE",
                   help="the HTML file to write")
    p.add_argument("--config", type=Path, help="TOML file, as given to `run` (its [diagnosis] "
                   "thresholds draw the report's lines)")
    p.add_argument("--study-name", help=f"as given to `run` (default {d.study_name})")
    p.add_argument("--storage", help=f"as given to `run` (default {d.storage})")
    p.add_argument("--tracking-uri", help=f"as given to `run`; env MLFLOW_TRACKING_URI "
                   f"(default {d.tracking_uri})")


def execute(args: argparse.Namespace) -> int:
    from study.cli.logs import quiet_libraries
    from study.config import resolve_config
    from study.report.data import collect
    from study.report.html import write_report
    from study.store.redaction import redact

    quiet_libraries()
    config = resolve_config(config_values(args, exclude=_NOT_CONFIG), config_path=args.config,
                            env=os.environ)
    study = load_existing_study(config.study_name, config.storage)
    data = collect(study, storage=config.storage, client=existing_client(config.tracking_uri))
    size = write_report(data, args.output, thresholds=config.diagnosis)
    print(f"wrote {args.output} ({size / 1e6:.1f} MB): study {config.study_name!r} in "
          f"{redact(config.storage)}, {len(data.trials)} trials")
    return 0


def load_existing_study(name: str, storage: str) -> Any:
    """The study NAME in STORAGE; a clear error, and nothing created, when there is none."""
    import optuna

    from study.store.redaction import redact
    from study.store.storage import open_storage

    for prefix in ("sqlite:///", "journal:"):
        if storage.startswith(prefix) and not Path(storage.removeprefix(prefix)).is_file():
            raise StudyError(f"no study storage at {redact(storage)}: give the --storage "
                             f"(and --study-name) that `run` used")
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        names = optuna.get_all_study_names(storage=open_storage(storage))
        raise StudyError(f"no study {name!r} in {redact(storage)}; it holds {names}: give "
                         f"--study-name") from None


def existing_client(tracking_uri: str) -> Any:
    """An MLflow client on TRACKING_URI, or None where a SQLite store does not exist (the
    report then says so, and creates no empty store)."""
    from mlflow import MlflowClient

    path = tracking_uri.removeprefix("sqlite:///")
    if tracking_uri.startswith("sqlite:///") and not Path(path).is_file():
        return None
    return MlflowClient(tracking_uri)
