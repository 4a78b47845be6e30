"""Study level: the reference study trained one trial at a time against in cohorts.

    python -m study.bench.cohort_study --data-dir ../shared/data --cohort-size 16 --out docs

For each seed, in interleaved order (one trial at a time, then cohorts, then the next seed),
the same study (TPE, median pruner, N trials, E epochs, untracked) runs in a fresh process:
search wall time, trial-epochs trained, and the best validation loss found. Asking K trials
at once costs the sampler information (it proposes a round's trials before any of them has
reported), and the median pruner has no finished trial to compare the first cohort with (it
counts the running ones at the first decision epoch: study/search/peer_pruner.py); the best
losses of the seeds show whether that costs the search anything. Prints a table; with --out,
writes OUT/cohort_study_benchmarks.json and re-renders OUT/benchmarks.md with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from study.bench.report import rerender
from study.bench.report_cohort import STUDY_NAME, study_table
from study.bench.settings import preset
from study.bench.studies import StudyRunner
from study.bench.worker import StudyResult

logger = logging.getLogger("study.bench.cohort_study")


def summary(result: StudyResult) -> dict[str, Any]:
    complete = [t for t in result.trials if t.state == "COMPLETE" and t.best_val_loss is not None]
    return {"label": result.spec.label, "seed": result.spec.seed,
            "cohort_size": result.spec.cohort_size, "search_s": result.search_s,
            "trials": len(result.trials),
            "trial_epochs": sum(t.epochs for t in result.trials),
            "pruned": sum(t.state == "PRUNED" for t in result.trials),
            # where the epochs went: batch size sets an epoch's cost, and cohorts share one
            "epochs_by_batch_size": {str(size): sum(t.epochs for t in result.trials
                                                    if t.batch_size == size)
                                     for size in sorted({t.batch_size for t in result.trials
                                                         if t.batch_size is not None})},
            "best_val_loss": min((t.best_val_loss for t in complete if t.best_val_loss),
                                 default=None)}


def run(*, data_dir: Path, workdir: Path, seeds: Sequence[int], n_trials: int, max_epochs: int,
        cohort_size: int, cpu_threads: int, device: str,
        allow_noncanonical_data: bool = False) -> dict[str, Any]:
    settings = preset(quick=False, device=device, data_dir=data_dir, out_dir=workdir,
                      workdir=workdir, cpu_threads=cpu_threads,
                      allow_noncanonical_data=allow_noncanonical_data, in_process=False)
    runner = StudyRunner(settings, torchvision_root=workdir / "torchvision",
                         tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    rows = []
    for seed in seeds:  # interleaved: the machine's drift falls on both alike
        for size in (1, cohort_size):
            spec = runner.spec(pruner="median", seed=seed, n_trials=n_trials,
                               max_epochs=max_epochs, cohort_size=size)
            spec = dataclasses.replace(spec, label=f"{spec.label}-seed{seed}-k{size}")
            rows.append(summary(runner.run(spec)))
            logger.info("%s", rows[-1])
    return {"rows": rows, "n_trials": n_trials, "max_epochs": max_epochs,
            "cohort_size": cohort_size, "cpu_threads": cpu_threads, "device": device,
            "torch": torch.__version__}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.bench.cohort_study", description=__doc__)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--cohort-size", type=int, default=16)
    p.add_argument("--n-trials", type=int, default=64)
    p.add_argument("--max-epochs", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--cpu-threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--allow-noncanonical-data", action="store_true")
    p.add_argument("--out", type=Path, help="write OUT/cohort_study_benchmarks.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="cohort-study-") as tmp:
        result = run(data_dir=args.data_dir, workdir=Path(tmp), seeds=args.seeds,
                     n_trials=args.n_trials, max_epochs=args.max_epochs,
                     cohort_size=args.cohort_size, cpu_threads=args.cpu_threads,
                     device=args.device, allow_noncanonical_data=args.allow_noncanonical_data)
    result["command"] = "python -m study.bench.cohort_study " + " ".join(
        sys.argv[1:] if argv is None else argv)
    print(study_table(result))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / STUDY_NAME
        path.write_text(json.dumps(result, indent=1))
        print(f"wrote {path}")
        if (markdown := rerender(args.out)) is not None:
            print(f"re-rendered {markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
