"""The issue's targets, each judged from the measured numbers (never from constants)."""

from __future__ import annotations

from typing import Any

from study.bench.report_sections import (
    EPOCH_TARGET,
    PRUNING_LOSS_PCT,
    PRUNING_SAVING_PCT,
    THROUGHPUT_TARGET,
    TRACKING_TARGET_PCT,
    Section,
)


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def targets(sections: dict[str, Section], machine: dict[str, Any]) -> list[str]:
    return ["## Targets", "", "| target | measured | met |", "| --- | --- | --- |",
            *target_rows(sections, machine), ""]


def target_rows(sections: dict[str, Section], machine: dict[str, Any]) -> list[str]:
    rows = [_epochs(sections.get("epochs")), _throughput(sections.get("throughput")),
            _tracking(sections.get("tracking")), *_pruning(sections.get("pruning")),
            _target(sections.get("target"))]
    if machine["device"] != "cuda":
        rows.append("| GPU benchmark | not measured: no GPU was available on this machine "
                    "(bf16 autocast and torch.compile run in CPU tests only) | n/a |")
    return rows


def _epochs(section: Section | None) -> str:
    if section is None:
        return "| epoch time, batch 64: >= 8x faster | not run | n/a |"
    ratio = section["result"]["speedup_vs_conventional"].get("64")
    return (f"| epoch time, batch 64: >= {EPOCH_TARGET:.0f}x faster than the DataLoader path | "
            f"{ratio:.1f}x (same threads for both) | {_met(ratio >= EPOCH_TARGET)} |"
            if ratio is not None else "| epoch time, batch 64 | batch 64 not measured | n/a |")


def _throughput(section: Section | None) -> str:
    if section is None:
        return "| study throughput: >= 5x trials/min | not run | n/a |"
    r = section["result"]
    ratio = r["speedup_trials_per_min"]
    project, conv = r["rows"]["project"], r["rows"]["conventional"]
    acc_ok = (project["best_val_acc"] is not None and conv["best_val_acc"] is not None
              and project["best_val_acc"] >= conv["best_val_acc"])
    ok = ratio is not None and ratio >= THROUGHPUT_TARGET and acc_ok
    acc = (f"best val acc {100 * (project['best_val_acc'] or 0):.2f}% vs "
           f"{100 * (conv['best_val_acc'] or 0):.2f}%")
    if project["best_val_loss"] and conv["best_val_loss"]:  # the objective itself, for honesty
        acc += f" (best val loss {_pct_text(project['best_val_loss'], conv['best_val_loss'])})"
    ratio_text = f"{ratio:.1f}x" if ratio is not None else "n/a"
    return (f"| study throughput: >= {THROUGHPUT_TARGET:.0f}x trials/min at equal or better best "
            f"val accuracy | {ratio_text} over {r['compared_trials']} trials, {acc} | "
            f"{_met(ok)} |")


def _pct_text(value: float, reference: float) -> str:
    return f"{100 * (value / reference - 1):+.1f}%"


def _tracking(section: Section | None) -> str:
    if section is None:
        return "| tracking overhead < 5% | not run | n/a |"
    r = section["result"]
    wall, outside = r["search_overhead_pct"], r["outside_epochs_overhead_pct"]
    calls = r["per_trial_calls_pct_of_search"]
    # Judged on the noise-free measure; the raw wall difference is shown beside it.
    ok = outside < TRACKING_TARGET_PCT
    return (f"| tracking overhead < {TRACKING_TARGET_PCT:.0f}% of study wall time | "
            f"{outside:+.1f}% outside the epochs (wall {wall:+.1f}%, in-call {calls:.1f}%) | "
            f"{_met(ok)} |")


def _pruning(section: Section | None) -> list[str]:
    if section is None:
        return ["| pruning saves >= 40% of epochs | not run | n/a |"]
    out = []
    for name in ("median", "hyperband"):
        s = section["result"]["rows"][name]
        saved, loss = s["epochs_saved_pct"], s["best_val_loss_vs_none_pct"]
        ok = saved >= PRUNING_SAVING_PCT and loss is not None and loss <= PRUNING_LOSS_PCT
        out.append(f"| pruning ({name}): >= {PRUNING_SAVING_PCT:.0f}% fewer epochs, best val "
                   f"loss within {PRUNING_LOSS_PCT:.0f}% of no pruning | {saved:.0f}% fewer, "
                   f"best val loss {loss:+.1f}% | {_met(ok)} |"
                   if loss is not None else f"| pruning ({name}) | no complete trial | **no** |")
    return out


def _target(section: Section | None) -> str:
    if section is None:
        return "| time to 98% val accuracy | not run | n/a |"
    r = section["result"]
    hit = r["hit"]
    measured = (f"{hit['seconds_since_start']:.0f} s (trial {hit['trial']}, epoch "
                f"{hit['epoch']})" if hit else f"not reached in {r['budget_s']:.0f} s")
    return (f"| time to {100 * r['target_acc']:.1f}% val accuracy (reported, no target) | "
            f"{measured} | {'reached' if hit else 'not reached'} |")
