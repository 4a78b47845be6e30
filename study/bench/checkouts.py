"""Before and after: one epoch timed in two checkouts of this project, interleaved.

    python -m study.bench.checkouts --before ../old-checkout --data-dir ../shared/data --reps 7

An engine change must not slow anyone down, and only timing the code before and after side
by side says so on a noisy machine. Each repetition runs one fresh process per checkout (in
alternating order), which imports that checkout's own engine (study/bench/cohort.py's
time_solo and time_cohort, both checkouts' own) and times, after an untimed epoch, the
median of three epochs of a lone trial (--k 1) or a cohort of K, MLP, one thread, at batch 64
on a slice of --images training images and at batch 256 on twice as many. Prints each side's
median epoch over the repetitions, scaled to 54,000 images, and after/before as a speed
ratio. Needs torch alone; a checkout older than the bench's time_solo cannot take part.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

# Run inside each checkout's own process: its engine, its bench helpers.
_ONE = """
import json, sys, torch
from pathlib import Path
from study.bench.cohort import FULL_EPOCH_IMAGES, Case, load_fold, time_cohort, time_solo
from study.train.engine_types import TrainOptions
torch.set_num_threads(1)
data_dir, k, images, verify = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cpu = torch.device("cpu")
out = {}
for batch, n in ((64, images), (256, 2 * images)):
    fold = load_fold(data_dir, n, cpu, verify=verify == "verify")
    case = Case(model="mlp", batch_size=batch, ks=(k,), images=n)
    def once():
        if k == 1:
            return time_solo(fold, case, cpu, TrainOptions())
        return time_cohort(fold, case, k, cpu, TrainOptions())[0]
    out[str(batch)] = sorted(once() for _ in range(3))[1] * FULL_EPOCH_IMAGES / n
print(json.dumps(out))
"""


def _epochs(checkout: Path, data_dir: Path, *, k: int, images: int,
            verify: bool) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, "-c", _ONE, str(data_dir), str(k), str(images),
                           "verify" if verify else "no"], cwd=checkout, env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"timing in {checkout} failed: {done.stderr.strip().splitlines()[-1]}")
    times: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.bench.checkouts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", type=Path, required=True, help="the checkout before the change")
    p.add_argument("--after", type=Path, default=Path.cwd(), help="(default: this one)")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--k", type=int, default=1, help="1: a lone trial; else a cohort of K")
    p.add_argument("--images", type=int, default=6400,
                   help="the slice timed at batch 64 (twice as many at 256)")
    p.add_argument("--allow-noncanonical-data", action="store_true")
    args = p.parse_args(argv)
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    seen: dict[str, dict[str, list[float]]] = {side: {} for side in sides}
    for rep in range(args.reps):
        for side in (list(sides) if rep % 2 == 0 else list(sides)[::-1]):
            for batch, seconds in _epochs(sides[side], args.data_dir.resolve(), k=args.k,
                                          images=args.images,
                                          verify=not args.allow_noncanonical_data).items():
                seen[side].setdefault(batch, []).append(seconds)
    for batch in seen["before"]:
        before, after = (statistics.median(seen[side][batch]) for side in sides)
        print(f"K = {args.k}, batch {batch}: before {before:.3f} s, after {after:.3f} s a "
              f"54,000-image epoch (medians of {args.reps}); after runs at {before / after:.2f}x")
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
