"""The cost of the per-epoch signals (gradient norms, update ratios, dead units): seconds per
epoch with them and without, side by side, for the seed MLP and the small CNN.

    python -m study.bench.signals --data-dir ../shared/data --reps 5 [--out docs]

An epoch is the training pass plus the validation pass, as a trial's; repetitions are
interleaved (off, on, then again). Torch alone: it also runs on a bare GPU machine.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

import models
from data_pipeline.tensors import Fold, TensorSet
from study.bench import side_by_side
from study.bench.side_by_side import load_fold, time_interleaved
from study.train.engine_types import Hyperparams, TrainOptions
from study.train.training import set_cpu_threads
from study.train.trial import train

# The CNN's epoch is about 30x the MLP's: a slice of the training split keeps it short.
CNN_TRAIN_IMAGES = 6400


def _variant(model_name: str, hp: Hyperparams, device: str, signals: bool) -> Any:
    def epoch(fold: Fold, generator: torch.Generator) -> None:
        model = models.build(model_name).to(device)
        for _ in train(model, hp, fold, max_epochs=1, generator=generator,
                       options=TrainOptions(signals=signals)):
            pass
    return epoch


def run(*, data_dir: Path, device: str, reps: int, batch_size: int, models_: list[str],
        allow_noncanonical_data: bool = False) -> dict[str, Any]:
    fold = load_fold(data_dir, device, allow_noncanonical_data=allow_noncanonical_data)
    hp = Hyperparams(lr=0.05, optimizer="sgd", batch_size=batch_size, dropout=0.2,
                     weight_decay=0.0, scheduler="none", momentum=0.9)
    rows = []
    for name in models_:
        data = fold if name == "mlp" else dataclasses.replace(fold, train=TensorSet(
            fold.train.x[:CNN_TRAIN_IMAGES], fold.train.y[:CNN_TRAIN_IMAGES]))
        timed = time_interleaved({"off": _variant(name, hp, device, False),
                                  "on": _variant(name, hp, device, True)},
                                 data, reps=reps, device=device)
        rows += [{"model": name, "train_images": len(data.train), **row} for row in timed]
    return {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "batch_size": batch_size, "reps": reps, "rows": rows}


def table(result: dict[str, Any]) -> str:
    lines = [f"Epoch (train + validation) at batch {result['batch_size']} on "
             f"{result['device']}, {result['threads']} thread(s), torch {result['torch']}, "
             f"median of {result['reps']} interleaved reps:", "",
             "| model | train images | signals | s / epoch | vs off |",
             "| --- | ---: | --- | ---: | ---: |"]
    lines += [f"| {row['model']} | {row['train_images']} | {row['variant']} | "
              f"{row['median_s']:.3f} | {row['ratio']:.3f}x |" for row in result["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = side_by_side.parser(__doc__.splitlines()[0])
    p.add_argument("--models", default="mlp,cnn", help="comma-separated (default mlp,cnn)")
    args = p.parse_args(argv)
    set_cpu_threads(args.cpu_threads)
    result = run(data_dir=args.data_dir, device=args.device, reps=args.reps,
                 batch_size=args.batch_size, models_=args.models.split(","),
                 allow_noncanonical_data=args.allow_noncanonical_data)
    side_by_side.publish(result, table(result), name="signals", args=args)


if __name__ == "__main__":
    main()
