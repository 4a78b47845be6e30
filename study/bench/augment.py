"""The cost of train-only augmentation: seconds per epoch of the seed MLP at batch 64, without
augmentation and with each kind, side by side.

    python -m study.bench.augment --data-dir ../shared/data --reps 5 [--out docs]

An epoch is the training pass plus the validation pass, as a trial's. Repetitions are
interleaved (none, rotate, affine, then again), so that load from other processes hits every
variant alike; the table gives each variant's median and its ratio to no augmentation. Needs
torch alone (no optuna or mlflow): it also runs on a bare GPU machine (--device cuda).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import models
from data_pipeline.tensors import Fold
from study.bench import side_by_side
from study.bench.side_by_side import load_fold, time_interleaved
from study.train.engine_types import Hyperparams
from study.train.training import set_cpu_threads
from study.train.trial import train

STRENGTHS = {"none": {}, "rotate": {"aug_degrees": 10.0},
             "affine": {"aug_degrees": 10.0, "aug_translate": 0.1, "aug_scale": 0.1}}


def hyperparams(augment: str, batch_size: int) -> Hyperparams:
    """The seed recipe's SGD at BATCH_SIZE, with AUGMENT at moderate strengths."""
    return Hyperparams(lr=0.05, optimizer="sgd", batch_size=batch_size, dropout=0.0,
                       weight_decay=0.0, scheduler="none", momentum=0.0, augment=augment,
                       augment_params=STRENGTHS[augment])


def run(*, data_dir: Path, device: str, reps: int, batch_size: int,
        allow_noncanonical_data: bool = False) -> dict[str, Any]:
    fold = load_fold(data_dir, device, allow_noncanonical_data=allow_noncanonical_data)

    def variant(kind: str) -> Any:
        def epoch(fold: Fold, generator: torch.Generator) -> None:
            model = models.build("mlp").to(device)
            for _ in train(model, hyperparams(kind, batch_size), fold, max_epochs=1,
                           generator=generator):
                pass
        return epoch

    rows = time_interleaved({kind: variant(kind) for kind in STRENGTHS}, fold, reps=reps,
                            device=device)
    return {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "batch_size": batch_size, "reps": reps, "train_images": len(fold.train),
            "rows": [{"augment": row.pop("variant"), **row} for row in rows]}


def table(result: dict[str, Any]) -> str:
    lines = [f"MLP epoch (train + validation) at batch {result['batch_size']} on "
             f"{result['device']}, {result['threads']} thread(s), torch {result['torch']}, "
             f"median of {result['reps']} interleaved reps:", "",
             "| augment | s / epoch | vs none |", "| --- | ---: | ---: |"]
    lines += [f"| {row['augment']} | {row['median_s']:.2f} | {row['ratio']:.2f}x |"
              for row in result["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = side_by_side.parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    set_cpu_threads(args.cpu_threads)
    result = run(data_dir=args.data_dir, device=args.device, reps=args.reps,
                 batch_size=args.batch_size,
                 allow_noncanonical_data=args.allow_noncanonical_data)
    side_by_side.publish(result, table(result), name="augment", args=args)


if __name__ == "__main__":
    main()
