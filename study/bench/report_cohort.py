"""The cohort sections of docs/benchmarks.md, rendered from their own JSON files.

`python -m study.bench.cohort --out docs` writes cohort_benchmarks_DEVICE_Nt.json (one per
device and thread count: the CPU ones and the GPU one live side by side) and
`python -m study.bench.cohort_study --out docs` writes cohort_study_benchmarks.json. Each
re-renders docs/benchmarks.md, and so does `python -m study.bench`, so no run of one bench
loses another's tables. Pure Python: the GPU machine renders them with torch alone.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

ENGINE_GLOB = "cohort_benchmarks_*.json"
STUDY_NAME = "cohort_study_benchmarks.json"


def cohort_sections(out_dir: Path) -> list[str]:
    """Markdown lines for every cohort result in OUT_DIR (none: no lines)."""
    lines: list[str] = []
    for path in sorted(out_dir.glob(ENGINE_GLOB)):
        result = json.loads(path.read_text())
        lines += [f"## Cohorts: {result['device']}, {result['threads']} threads", "",
                  f"`{result.get('command', 'python -m study.bench.cohort')}` "
                  f"(`{path.name}`)", "", engine_table(result), ""]
    study = out_dir / STUDY_NAME
    if study.exists():
        result = json.loads(study.read_text())
        lines += ["## Cohorts: the reference study", "",
                  f"`{result.get('command', 'python -m study.bench.cohort_study')}` "
                  f"(`{STUDY_NAME}`)", "", study_table(result), ""]
    return lines


def engine_table(result: dict[str, Any]) -> str:
    """Trial-epochs per second of a cohort of K against a lone trial (train(), a cohort of one)."""
    lines = [f"device {result['device']} ({result['gpu'] or result['machine']}), torch "
             f"{result['torch']}, {result['threads']} threads, median of {result['reps']} "
             f"interleaved repetitions; the one trial runs at the same amp", "",
             "| model | batch | K | amp | CUDA graph | trial-epochs/s | one trial | speedup | "
             "peak MiB | val loss vs eager |",
             "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        rate = (f"{r['trial_epochs_per_s']:.3g}" if r.get("error") is None
                else f"failed: {r['error']}")
        diff = r.get("max_rel_diff_vs_eager")
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['k']} | "
                     f"{r.get('amp', result.get('amp', 'none'))} | "
                     f"{'on' if r.get('cuda_graph') else 'off'} | {rate} | "
                     f"{r['solo_trial_epochs_per_s']:.3g} | {r['speedup']:.2f}x | "
                     f"{r['peak_bytes'] / 2**20:.0f} | "
                     f"{'-' if diff is None else f'{diff:.1e}'} |")
    return "\n".join(lines)


def study_table(result: dict[str, Any]) -> str:
    """The reference study one trial at a time against in cohorts, per seed."""
    lines = [f"{result['n_trials']} trials, up to {result['max_epochs']} epochs, TPE + median "
             f"pruner, untracked, {result['device']}, {result['cpu_threads']} threads, torch "
             f"{result['torch']}", "",
             "| seed | K | search s | vs one at a time | trial-epochs | per s | pruned | "
             "best val loss | epochs by batch size |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    solo = {r["seed"]: r for r in result["rows"] if r["cohort_size"] == 1}
    for r in result["rows"]:
        ratio = r["search_s"] / solo[r["seed"]]["search_s"] if r["seed"] in solo else None
        best = f"{r['best_val_loss']:.4f}" if r["best_val_loss"] is not None else "-"
        lines.append(f"| {r['seed']} | {r['cohort_size']} | {r['search_s']:.0f} | "
                     f"{'-' if ratio is None else f'{ratio:.0%}'} | {r['trial_epochs']} | "
                     f"{r['trial_epochs'] / r['search_s']:.2f} | {r['pruned']} | {best} | "
                     f"{_by_size(r.get('epochs_by_batch_size'))} |")
    lines.append("")
    walls = {}
    for size in sorted({r["cohort_size"] for r in result["rows"]}):
        rows = [r for r in result["rows"] if r["cohort_size"] == size]
        losses = [r["best_val_loss"] for r in rows if r["best_val_loss"] is not None]
        spread = (f" ± {statistics.stdev(losses):.4f}" if len(losses) > 1 else "")
        mean_loss = f"{statistics.mean(losses):.4f}{spread}" if losses else "-"
        walls[size] = sum(r["search_s"] for r in rows)
        share = f" ({walls[size] / walls[1]:.0%} of one at a time)" if 1 in walls else ""
        lines.append(f"- K = {size}: search {walls[size]:.0f} s over {len(rows)} seeds{share}, "
                     f"best val loss {mean_loss} (mean ± sd)")
    return "\n".join(lines)


def _by_size(epochs: dict[str, int] | None) -> str:
    if not epochs:
        return "-"
    return ", ".join(f"{size}: {count}" for size, count in epochs.items())
