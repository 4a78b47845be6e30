"""`mnist-study ui`: the MLflow UI on the tracking store, artifacts included."""

from __future__ import annotations

import argparse
from typing import Any

from study.cli.flags import add_server_arguments, resolve_store
from study.cli.logs import quiet_libraries
from study.cli.servers import MLFLOW_PORT
from study.config import DEFAULT_TRACKING_URI

NAME = "ui"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ui", help="compare trials in the MLflow UI",
                       description="Serve the MLflow UI on the tracking store: one experiment "
                                   "per study, a parent run per `run`, a child run per trial.")
    p.add_argument("--tracking-uri", help=f"MLflow tracking URI, as given to `run`; env "
                   f"MLFLOW_TRACKING_URI (default {DEFAULT_TRACKING_URI})")
    add_server_arguments(p, default_port=MLFLOW_PORT)


def execute(args: argparse.Namespace) -> int:
    from study.cli.servers import (
        ServerError,
        ensure_port_free,
        experiment_links,
        exposure_warning,
        mlflow_server_command,
        raise_on_sigterm,
        start_mlflow_server,
        stop_process_group,
        url_for,
        wait_until_ready,
    )
    from study.store.redaction import redact

    uri = resolve_store(args, "tracking_uri")
    command = mlflow_server_command(uri, host=args.host, port=args.port)
    ensure_port_free(args.host, args.port)
    quiet_libraries()  # after the checks: importing mlflow takes seconds
    url = url_for(args.host, args.port)
    print(f"starting the MLflow UI on {redact(uri)} at {url} ...", flush=True)
    if warning := exposure_warning(args.host):
        print(warning)
    raise_on_sigterm()
    process = start_mlflow_server(command)
    try:
        wait_until_ready(process, url)
        for study, link in experiment_links(url).items():
            print(f"  study {study}: {link}")
        print(f"MLflow UI ready (mlflow server pid {process.pid}): open {url}  "
              f"(Ctrl-C stops it)", flush=True)
        code = process.wait()
        raise ServerError(f"mlflow server stopped by itself with code {code}")
    except KeyboardInterrupt:
        print("MLflow UI stopped")
        return 0
    finally:
        stop_process_group(process)
