"""The time-budget section of docs/benchmarks.md, rendered from budget_benchmarks.json that
`python -m study.bench.budget --out docs` writes. Pure Python, below the bench that runs it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SIDES = ("budgeted", "conventional", "previous", "hand", "tpe-independent", "random")
BUDGET_NAME = "budget_benchmarks.json"


def table(result: dict[str, Any]) -> str:
    """Markdown: one row per side and seed, then each side's mean test accuracy."""
    lines = ["| side | seed | test acc | best val loss | trials | epochs | first 98% val |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in result["rows"]:
        first = "never" if r["first_98_s"] is None else f"{r['first_98_s']:.0f} s"
        if r.get("first_98_search_s") is not None:
            first += f" ({r['first_98_search_s']:.0f} s into the search)"
        lines.append(f"| {r['side']} | {r['seed']} | {r['test_acc']:.2%} | "
                     f"{r['best_val_loss']:.4f} | {r['trials']} | {r['epochs']} | {first} |")
    lines += ["", "| side | mean test acc | lowest | seeds |", "| --- | ---: | ---: | ---: |"]
    for side in SIDES:
        accs = [r["test_acc"] for r in result["rows"] if r["side"] == side]
        if accs:
            lines.append(f"| {side} | {sum(accs) / len(accs):.2%} | {min(accs):.2%} | "
                         f"{len(accs)} |")
    return "\n".join(lines)


def budget_sections(out_dir: Path) -> list[str]:
    """The markdown section of OUT_DIR/budget_benchmarks.json (none: no lines)."""
    path = out_dir / BUDGET_NAME
    if not path.exists():
        return []
    from study.search.plan import format_duration

    result = json.loads(path.read_text())
    commands = result.get("commands", [result.get("command")])
    return [f"## A time budget: {format_duration(result['budget_s'])} per side, one core each",
            "",
            f"{', then '.join(f'`{c}`' for c in commands)} (`{BUDGET_NAME}`; torch "
            f"{result['versions']['torch']}, Optuna {result['versions']['optuna']}). Two sides "
            "at a time, each pinned to its own core: budgeted with conventional, previous with "
            "hand, tpe-independent with random. First 98% val: "
            "seconds from the process's start to the first epoch at 98.0% validation "
            "accuracy.", "", table(result), ""]
