"""`python -m study.bench`: run the benchmark sections, write docs/benchmarks.{md,json}."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from study.bench import SECTIONS

logger = logging.getLogger("study.bench")


def _sections(text: str) -> tuple[str, ...]:
    chosen = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"sections must be among {','.join(SECTIONS)}, but got "
                                         f"{text!r}")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    from study.config import DEVICES, StudyConfig

    d = StudyConfig()
    p = argparse.ArgumentParser(
        prog="python -m study.bench",
        description="Benchmark the project's fast paths against the conventional DataLoader "
                    "loop, side by side, and write OUT/benchmarks.md and OUT/benchmarks.json.")
    p.add_argument("--data-dir", type=Path, help="directory with the MNIST IDX files "
                   f"(default: env MNIST_STUDY_DATA_DIR, else {d.data_dir}); never downloads")
    p.add_argument("--out", type=Path, default=Path("docs"), help="where the report goes "
                   "(default docs/); sections not run now are kept from the previous report")
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke test in seconds")
    p.add_argument("--device", choices=DEVICES, default="auto", help="default auto")
    p.add_argument("--only", type=_sections, default=SECTIONS,
                   help=f"comma-separated sections (default all: {','.join(SECTIONS)})")
    p.add_argument("--cpu-threads", type=int, default=d.cpu_threads,
                   help=f"intra-op threads for both paths (default {d.cpu_threads}, as `run`)")
    p.add_argument("--n-trials", type=int, help="trials of the reference study")
    p.add_argument("--max-epochs", type=int, help="epochs per trial of the reference study")
    p.add_argument("--seed", type=int, help="sampler and split seed of the reference study "
                   "(default 0): another seed shows how far a result holds")
    p.add_argument("--conventional-budget", type=float, dest="conventional_budget_s",
                   help="seconds the conventional study may run")
    p.add_argument("--workdir", type=Path, help="keep stores and study results here "
                   "(default: a temporary directory, removed afterwards)")
    p.add_argument("--in-process", action="store_true", help="run studies in this process "
                   "instead of one fresh process each (faster; peak RSS then covers them all)")
    p.add_argument("--allow-noncanonical-data", action="store_true",
                   help="accept IDX files that are not the canonical MNIST (synthetic tests)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    from study.cli.logs import quiet_libraries

    quiet_libraries()
    default_threads = torch.get_num_threads()  # before anything changes it
    with tempfile.TemporaryDirectory(prefix="mnist-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = _run(args, argv, workdir=workdir.resolve(), default_threads=default_threads)
    from study.bench.report import write

    json_path, md_path = write(args.out, report)
    print(f"wrote {md_path} and {json_path}")
    return 0


def _run(args: argparse.Namespace, argv: list[str], *, workdir: Path,
         default_threads: int) -> dict[str, Any]:
    from data_pipeline import find_mnist
    from study.bench import conventional, epochs, profile, studies
    from study.bench.machine import describe
    from study.bench.report import merge
    from study.bench.settings import preset
    from study.config import ENV_VARS, StudyConfig
    from study.train.device import resolve_device
    from study.train.training import set_cpu_threads

    data_dir = args.data_dir or Path(os.environ.get(ENV_VARS["data_dir"], StudyConfig().data_dir))
    files = find_mnist(data_dir, verify=not args.allow_noncanonical_data)
    if files is None:
        raise SystemExit(f"no MNIST IDX files in {data_dir}: pass --data-dir")
    device = resolve_device(args.device).type
    settings = preset(quick=args.quick, device=device, data_dir=data_dir, out_dir=args.out,
                      workdir=workdir, cpu_threads=args.cpu_threads,
                      allow_noncanonical_data=args.allow_noncanonical_data,
                      in_process=args.in_process)
    overrides = {k: getattr(args, k) for k in ("n_trials", "max_epochs", "seed",
                                                "conventional_budget_s")
                 if getattr(args, k) is not None}
    settings = dataclasses.replace(settings, **overrides)
    set_cpu_threads(settings.cpu_threads)
    tv_root = conventional.torchvision_root(files, workdir / "torchvision")
    tracking_uri = f"sqlite:///{workdir / 'mlflow' / 'mlflow.db'}"
    store_s = studies.create_tracking_store(tracking_uri, in_process=settings.in_process)
    runner = studies.StudyRunner(settings, torchvision_root=tv_root, tracking_uri=tracking_uri)
    jobs: dict[str, Callable[[], dict[str, Any]]] = {
        "epochs": lambda: epochs.run(settings, torchvision_root=tv_root,
                                     default_threads=default_threads),
        "throughput": lambda: studies.throughput(runner),
        "tracking": lambda: {**studies.tracking(runner), "store_creation_s": store_s},
        "pruning": lambda: studies.pruning(runner),
        "target": lambda: studies.target(runner),
        "profile": lambda: profile.run(settings, tracking_uri=tracking_uri),
    }
    command = "python -m study.bench " + " ".join(shlex.quote(a) for a in argv)
    sections = {name: _section(name, jobs[name], command, settings.to_json())
                for name in SECTIONS if name in args.only}
    return merge(args.out, describe(device, default_threads=default_threads), sections)


def _section(name: str, job: Callable[[], dict[str, Any]], command: str,
             settings: dict[str, Any]) -> dict[str, Any]:
    from study.bench.machine import load_average

    logger.info("section %s ...", name)
    before, started = load_average(), time.perf_counter()
    result = job()
    seconds = time.perf_counter() - started
    logger.info("section %s: %.0f s", name, seconds)
    return {"command": command, "seconds": seconds, "load_1min": [before, load_average()],
            "measured_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "settings": settings, "result": result}


if __name__ == "__main__":
    sys.exit(main())
