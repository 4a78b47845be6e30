"""`mnist-study dashboard`: optuna-dashboard on the study storage."""

from __future__ import annotations

import argparse
import warnings
from typing import Any

from study.cli.flags import add_server_arguments, resolve_store
from study.cli.servers import DASHBOARD_PORT
from study.config import DEFAULT_STORAGE

NAME = "dashboard"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("dashboard", help="browse studies in optuna-dashboard",
                       description="Serve optuna-dashboard on the study storage: trials, "
                                   "learning curves, pruning, parameters and user attributes.")
    p.add_argument("--storage", help=f"Optuna storage URL, as given to `run` "
                   f"(default {DEFAULT_STORAGE})")
    add_server_arguments(p, default_port=DASHBOARD_PORT)


def execute(args: argparse.Namespace) -> int:
    import optuna  # seconds to import: not for --help

    from study.cli.servers import (
        dashboard_server,
        exposure_warning,
        raise_on_sigterm,
        url_for,
    )
    from study.store.redaction import redact

    # The heartbeat settings of our storage opener are experimental in Optuna: not news here.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # The dashboard recomputes importances on every page view; "few trials" would repeat each time.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"optuna\.importance")
    storage = resolve_store(args, "storage")
    dashboard = dashboard_server(storage, host=args.host, port=args.port)
    try:
        names = dashboard.study_names
        print(f"optuna-dashboard on {redact(storage)}: {len(names)} studies "
              f"({', '.join(names) or 'none yet'})")
        if warning := exposure_warning(args.host):
            print(warning)
        print(f"open {url_for(args.host, args.port)}  (Ctrl-C stops it)", flush=True)
        raise_on_sigterm()
        dashboard.server.serve_forever()
    except KeyboardInterrupt:
        print("dashboard stopped")
    finally:
        dashboard.server.server_close()
    return 0
