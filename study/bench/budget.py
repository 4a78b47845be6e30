"""A time budget in, the best model out: studies of equal wall time, side by side.

    python -m study.bench.budget --data-dir ../shared/data --budget 10m --seeds 0,1,2 --out docs

Sides, each a fresh process pinned to one core, two started together:
  budgeted      `mnist-study run --timeout T --seed S`: the default study, planned for T
  conventional  Optuna's PyTorch example style: torchvision MNIST + ToTensor/Normalize +
                DataLoader, random_split 54,000/6,000, TPE + MedianPruner on validation loss,
                lr 1e-4..0.3 (log), SGD (momentum 0.9) / Adam / AdamW, batch 32..512, dropout
                0..0.5, weight decay 1e-6..1e-2, none / StepLR / cosine / plateau, 8 epochs;
                its best trial's final weights are kept and tested
  previous      the default study before the budget plan: --max-epochs 8, the median pruner,
                the old space (shared lr 1e-4..3e-2, batch 32..1024, six schedulers, no
                BatchNorm or augmentation), no warm start, no early stopping
  hand          study/examples/mlp_accuracy.toml, the best hand-written config
  tpe-independent, random
                the budgeted default with --sampler tpe-independent (one density per
                parameter) or --sampler random: what the default's multivariate TPE buys
Every side stops at T (a trial still training then ends with what it has) and tests its best
trial once. Per side and seed: test accuracy, best validation loss, trials, epochs trained and
the time from the process's start to the first epoch at 98.0% validation accuracy. With --out,
writes OUT/budget_benchmarks.json (a side and seed measured again replaces its row, the others
stay) and re-renders OUT/benchmarks.md with it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from study.bench.report_budget import BUDGET_NAME, SIDES, table
from study.store.record import (
    BEST_VAL_ACC_ATTR,
    EPOCHS_TRAINED_ATTR,
    MLFLOW_RUN_ID_ATTR,
    RESULT_ATTR,
)

logger = logging.getLogger("study.bench.budget")

PAIRS = (("budgeted", "conventional"), ("previous", "hand"),
         ("tpe-independent", "random"))  # started together
SAMPLER_SIDES = ("tpe-independent", "random")  # the budgeted default under another sampler
TARGET_ACC = 0.98
HAND_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "mlp_accuracy.toml"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.bench.budget", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--budget", default="10m", help="wall time per side: 600, 10m, 1h")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--sides", default=",".join(SIDES), help=f"among {','.join(SIDES)}")
    p.add_argument("--workdir", type=Path, default=Path("bench-budget"))
    p.add_argument("--out", type=Path, help="write OUT/budget_benchmarks.json, re-render "
                   "OUT/benchmarks.md")
    p.add_argument("--allow-noncanonical-data", action="store_true")
    p.add_argument("--side", choices=("conventional",), help=argparse.SUPPRESS)  # a child
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from study.search.plan import parse_duration

    budget = parse_duration(args.budget)
    if args.side == "conventional":
        result = conventional_study(args.data_dir, seed=args.seed, budget=budget,
                                    verify=not args.allow_noncanonical_data)
        print(json.dumps(result))
        return 0
    sides = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = sorted(set(sides) - set(SIDES))
    if unknown:
        p.error(f"unknown sides {unknown}; choose among {list(SIDES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:
        for pair in PAIRS:
            chosen = [side for side in pair if side in sides]
            if chosen:
                rows += run_together(chosen, seed=seed, budget=budget, args=args)
    command = "python -m study.bench.budget " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"budget_s": budget, "seeds": seeds, "rows": rows, "versions": _versions(),
              "commands": [command]}
    print(table(result))
    if args.out is not None:
        path = args.out / BUDGET_NAME
        if path.exists():
            result = merged(json.loads(path.read_text()), result)
        path.write_text(json.dumps(result, indent=2) + "\n")
        from study.bench.report import rerender

        rerender(args.out)
        print(f"wrote {path}")
    return 0


def run_together(sides: Sequence[str], *, seed: int, budget: float,
                 args: argparse.Namespace) -> list[dict[str, Any]]:
    """SIDES started at once, each pinned to its own core; their rows once all have ended."""
    cores = sorted(os.sched_getaffinity(0))
    procs = {}
    for i, side in enumerate(sides):
        folder = args.workdir / f"{side}-seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        command = _command(side, seed=seed, budget=budget, args=args, folder=folder)
        core = {cores[i % len(cores)]}
        log = (folder / "log.txt").open("w")
        logger.info("seed %d: %s on core %s", seed, side, core)
        started = time.time()
        procs[side] = (subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE,
                                        stderr=log, text=True,
                                        preexec_fn=_pinned(core),
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"}),
                       started, folder)
    rows = []
    for side, (proc, started, folder) in procs.items():
        out, _ = proc.communicate()
        wall = time.time() - started
        if proc.returncode != 0:
            for other, *_ in procs.values():
                other.kill()
            raise SystemExit(f"{side} (seed {seed}) failed with exit {proc.returncode}: see "
                             f"{folder / 'log.txt'}")
        row = (json.loads(out.strip().splitlines()[-1]) if side == "conventional"
               else _project_row(folder, started=started))
        rows.append({"side": side, "seed": seed, "wall_s": wall, **row})
        logger.info("seed %d %s: %s", seed, side, rows[-1])
    return rows


def merged(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """NEW's rows over OLD's: a side and seed measured again replaces its row. Runs of another
    budget or other versions are not mixed: NEW alone is kept."""
    if old.get("budget_s") != new["budget_s"] or old.get("versions") != new["versions"]:
        return new
    fresh = {(r["side"], r["seed"]) for r in new["rows"]}
    rows = [r for r in old["rows"] if (r["side"], r["seed"]) not in fresh] + new["rows"]
    rows.sort(key=lambda r: (SIDES.index(r["side"]), r["seed"]))
    commands = old.get("commands", [old["command"]] if "command" in old else [])
    return {**new, "rows": rows, "seeds": sorted({r["seed"] for r in rows}),
            "commands": [*commands, *new["commands"]]}


def previous_default() -> str:
    """The default study before the time-budget plan, as a --config file."""
    from study.bench.settings import REFERENCE_SPACE

    lines = ["# The default study before the time-budget plan (2026-12-02).", "max_epochs = 8",
             'pruner = "median"', "early_stopping_patience = 0", "warm_start = false",
             "[search_space]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in REFERENCE_SPACE.as_dict().items()]
    return "\n".join(lines) + "\n"


def _pinned(cores: set[int]) -> Callable[[], None]:
    """What a child runs before it starts: stay on CORES."""
    return lambda: os.sched_setaffinity(0, cores)


def _command(side: str, *, seed: int, budget: float, args: argparse.Namespace,
             folder: Path) -> list[str]:
    data = str(args.data_dir.resolve())
    noncanonical = ["--allow-noncanonical-data"] if args.allow_noncanonical_data else []
    if side == "conventional":
        return [sys.executable, "-m", "study.bench.budget", "--side", "conventional",
                "--seed", str(seed), "--budget", str(budget), "--data-dir", data, *noncanonical]
    run = [sys.executable, "-m", "study", "run", "--timeout", str(budget), "--seed", str(seed),
           "--data-dir", data, "--no-progress", "--study-name", side,
           "--storage", "sqlite:///optuna.db", "--tracking-uri", "sqlite:///mlflow.db",
           *noncanonical]
    if side == "previous":
        (folder / "previous.toml").write_text(previous_default())
        run += ["--config", "previous.toml"]
    if side == "hand":
        run += ["--config", str(HAND_CONFIG), "--n-trials", "100000"]
    if side in SAMPLER_SIDES:
        run += ["--sampler", side]
    return run


def _project_row(folder: Path, *, started: float) -> dict[str, Any]:
    """What a project side's study and MLflow store say, read after it ended."""
    import optuna
    from mlflow.tracking import MlflowClient

    storage = f"sqlite:///{folder / 'optuna.db'}"
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    result = study.user_attrs[RESULT_ATTR]
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    first = math.inf
    for trial in trials:
        run_id = trial.user_attrs.get(MLFLOW_RUN_ID_ATTR)
        if run_id is None:
            continue
        for metric in client.get_metric_history(run_id, "val_acc"):
            if metric.value >= TARGET_ACC:
                first = min(first, metric.timestamp / 1000 - started)
    best = study.best_trial
    begun = min(t.datetime_start.timestamp() for t in trials if t.datetime_start is not None)
    return {"trials": len(trials), "epochs": sum(int(t.user_attrs.get(EPOCHS_TRAINED_ATTR, 0))
                                                 for t in trials),
            "best_val_loss": float(best.values[0]),
            "best_val_acc": float(best.user_attrs[BEST_VAL_ACC_ATTR]),
            "test_acc": float(result["test"]["test_acc"]),
            "first_98_s": None if math.isinf(first) else first,
            # the same moment from the first trial's start: the set-up left out
            "first_98_search_s": None if math.isinf(first) else first - (begun - started),
            "best_trial": best.number, "best_params": best.params}


def conventional_study(data_dir: Path, *, seed: int, budget: float,
                       verify: bool = True) -> dict[str, Any]:
    """The conventional study for BUDGET seconds from now; its row (see the module doc)."""
    started = time.time()
    import optuna
    import torch
    from torch.utils.data import DataLoader, random_split
    from torchvision import datasets, transforms

    import models
    from data_pipeline import find_mnist
    from study.bench.conventional import evaluate, torchvision_root, train_epoch
    from study.train.training import set_cpu_threads

    set_cpu_threads(1)
    deadline = started + budget
    files = find_mnist(data_dir, verify=verify)
    if files is None:
        raise SystemExit(f"no MNIST IDX files in {data_dir}")
    root = torchvision_root(files, Path("torchvision"))
    transform = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize((0.1307,), (0.3081,))])
    full = datasets.MNIST(str(root), train=True, download=False, transform=transform)
    test = datasets.MNIST(str(root), train=False, download=False, transform=transform)
    n_val = len(full) // 10  # 6,000 of MNIST's 60,000
    train_set, val_set = random_split(full, [len(full) - n_val, n_val],
                                      generator=torch.Generator().manual_seed(seed))
    val_loader = DataLoader(val_set, batch_size=1000)
    best: dict[str, Any] = {"loss": math.inf, "state": None, "params": None}
    first = [math.inf]
    epochs = [0]

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 0.3, log=True)
        name = trial.suggest_categorical("optimizer", ["sgd", "adam", "adamw"])
        batch = trial.suggest_categorical("batch_size", [32, 64, 128, 256, 512])
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        wd = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        sched = trial.suggest_categorical("scheduler", ["none", "step", "cosine", "plateau"])
        torch.manual_seed(seed * 1_000_003 + trial.number)
        model = models.build("mlp", dropout=dropout)
        opt: torch.optim.Optimizer = (
            torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=wd)
            if name == "sgd" else torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
            if name == "adam" else torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd))
        schedule: Any = None if sched == "none" else (
            torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5) if sched == "step"
            else torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8) if sched == "cosine"
            else torch.optim.lr_scheduler.ReduceLROnPlateau(opt))
        loader = DataLoader(train_set, batch_size=batch, shuffle=True)
        loss, acc = math.inf, 0.0
        for epoch in range(1, 9):
            if time.time() >= deadline:
                break
            train_epoch(model, opt, None, loader, torch.device("cpu"))
            loss, acc = evaluate(model, val_loader, torch.device("cpu"))
            epochs[0] += 1
            if acc >= TARGET_ACC:
                first[0] = min(first[0], time.time() - started)
            if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
                schedule.step(loss)
            elif schedule is not None:
                schedule.step()
            trial.report(loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        if not math.isfinite(loss):
            raise optuna.TrialPruned()  # the budget ended it before its first epoch
        if loss < best["loss"]:  # the final weights, as the example keeps them
            best.update(loss=loss, state={k: v.clone() for k, v in model.state_dict().items()},
                        params=trial.params, acc=acc)
        return loss

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, timeout=max(deadline - time.time(), 1.0))
    if best["state"] is None:
        raise SystemExit(f"conventional (seed {seed}): no trial finished an epoch within the "
                         f"{budget:.0f} s budget; give it more time")
    model = models.build("mlp", dropout=0.0)
    model.load_state_dict(best["state"])
    test_loss, test_acc = evaluate(model, DataLoader(test, batch_size=1000), torch.device("cpu"))
    return {"trials": len(study.trials), "epochs": epochs[0], "best_val_loss": best["loss"],
            "best_val_acc": best["acc"], "test_acc": test_acc,
            "first_98_s": None if math.isinf(first[0]) else first[0],
            "best_params": best["params"]}


def _versions() -> dict[str, str]:
    import optuna
    import torch

    return {"torch": torch.__version__, "optuna": optuna.__version__}


if __name__ == "__main__":
    sys.exit(main())
