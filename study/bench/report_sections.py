"""Markdown for each benchmark section and for the targets of the issue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Section = dict[str, Any]  # {"command", "measured_at", "load_1min", "seconds", "result"}

EPOCH_TARGET, THROUGHPUT_TARGET, TRACKING_TARGET_PCT = 8.0, 5.0, 5.0
PRUNING_SAVING_PCT, PRUNING_LOSS_PCT = 40.0, 1.0


def _f(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    return f"{value}{suffix}"


def _acc(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _header(title: str, section: Section) -> list[str]:
    before, after = section["load_1min"]
    return [f"## {title}", "",
            f"`{section['command']}` at {section['measured_at']}, {section['seconds']:.0f} s; "
            f"1-minute load average {before:.1f} before, {after:.1f} after.", ""]


def epochs(section: Section) -> list[str]:
    r = section["result"]
    hp = r["hyperparams"]
    lines = _header("1. Epoch time of the seed MLP", section) + [
        f"784-128-10 MLP (dropout {hp['dropout']}), SGD lr {hp['lr']} momentum "
        f"{hp['momentum']}; one epoch = a training pass over {r['train_images']:,} images + a "
        f"validation pass over {r['val_images']:,}. Median of the interleaved repetitions.", "",
        "| batch | path | threads | busy processes beside | s/epoch | every run (s) | "
        "conventional / this |",
        "| ---: | --- | ---: | ---: | ---: | --- | ---: |"]
    # Each row against the conventional path under the same threads and the same contention.
    conventional = {(row["batch_size"], row["threads"], row.get("busy", 0)): row["median_s"]
                    for row in r["rows"] if row["path"] == "conventional"}
    for row in r["rows"]:
        runs = ", ".join(f"{s:.2f}" for s in row["seconds"])
        same = conventional.get((row["batch_size"], row["threads"], row.get("busy", 0)))
        ratio = f"{same / row['median_s']:.1f}x" if same else "n/a"
        lines.append(f"| {row['batch_size']} | {row['variant']} | {row['threads']} | "
                     f"{row.get('busy', 0)} | {row['median_s']:.2f} | {runs} | {ratio} |")
    prep = r["data_prep"]
    lines += ["", f"One-time data preparation (not in the epoch times): project "
              f"{prep['project_s']:.1f} s (read, split, normalise, to the device once), "
              f"conventional {prep['conventional_s']:.1f} s (torchvision dataset).", ""]
    return lines


def _study_row(name: str, s: dict[str, Any]) -> str:
    gpu = f" / {s['peak_gpu_mb']:.0f}" if s.get("peak_gpu_mb") else ""
    return (f"| {name} | {s['trials']} | {s['search_s']:.1f} | {s['trials_per_min']:.2f} | "
            f"{s['epochs_trained']} | {_f(s['best_val_loss'], 4)} | {_acc(s['best_val_acc'])} | "
            f"{s['setup_s']:.1f} | {s['peak_rss_mb']:.0f}{gpu} |")


def throughput(section: Section) -> list[str]:
    r = section["result"]
    rows, full = r["rows"], r["project_full"]
    conv_full = r["conventional_full"]
    return _header("2. Study throughput", section) + [
        f"The reference study: TPE (seed {section['settings']['seed']}), median pruner, "
        f"{full['n_trials']} trials of at "
        f"most {full['max_epochs']} epochs. The project runs it as `mnist-study run` does "
        f"(SQLite storage, MLflow tracking on, leakage audit, test evaluation after); the "
        f"conventional objective (Optuna's PyTorch example adapted: DataLoader, data reloaded "
        f"per trial, in-memory storage, no tracking) was capped at "
        f"{r['conventional_budget_s']:.0f} s and finished {conv_full['finished']} trials. "
        f"{_compared(r['compared_trials'], full['n_trials'])} The shared sampler seed makes "
        f"both start from the same suggestions; from the first pruned or differently scored "
        f"trial on, each follows its own results.", "",
        "| path | trials | search wall (s) | trials/min | epochs | best val loss | "
        "best val acc | setup (s) | peak RSS (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        _study_row("project", rows["project"]),
        _study_row("conventional", rows["conventional"]), "",
        f"Throughput ratio: **{_f(r['speedup_trials_per_min'], 1, 'x')}** trials/minute; "
        f"{_per_epoch(rows['project'], rows['conventional'])} In "
        f"the {r['equal_time']['seconds']:.0f} s the conventional search took, the project "
        f"finished {r['equal_time']['project_trials']} trials, best val accuracy "
        f"{_acc(r['equal_time']['project_best_val_acc'])}. The "
        f"whole project study: {full['finished']} trials ({full['complete']} complete, "
        f"{full['pruned']} pruned) in {full['search_s']:.0f} s of search "
        f"({full['trials_per_min']:.1f} trials/min), best val accuracy "
        f"{_acc(full['best_val_acc'])}; setup {full['setup_s']:.0f} s, final test evaluation "
        f"and publishing {full['finalize_s']:.0f} s.", ""]


def _per_epoch(project: dict[str, Any], conv: dict[str, Any]) -> str:
    """The studies pruned differently, so trials/min also counts different work."""
    mine = project["search_s"] / project["epochs_trained"]
    theirs = conv["search_s"] / conv["epochs_trained"]
    return (f"per trained epoch {mine:.2f} s against {theirs:.2f} s (**{theirs / mine:.1f}x**), "
            f"as the two searches pruned differently ({project['epochs_trained']} and "
            f"{conv['epochs_trained']} epochs). Best val loss {project['best_val_loss']:.4f} "
            f"against {conv['best_val_loss']:.4f} "
            f"({100 * (project['best_val_loss'] / conv['best_val_loss'] - 1):+.1f}%).")


def _compared(n: int, n_trials: int) -> str:
    if n == n_trials:
        return f"Both ran all {n} trials and are compared over all of them."
    return f"Both are compared over the first {n} finished trials."


def tracking(section: Section) -> list[str]:
    r = section["result"]
    outside = r["outside_epochs_s"]
    lines = _header("3. Tracking overhead", section) + [
        "The reference study with MLflow on (SQLite store; per-epoch metrics written by a "
        "background thread, flushed before each trial's run is ended) and off (NullTracker), "
        f"{'the same trials and epochs in all' if r['same_trials'] else 'NOT the same trials'}"
        f", {len(r['on'])} of each, run in the order on, off, off, on so that a drifting load "
        f"hits both. The store itself was created beforehand ({r['store_creation_s']:.1f} s "
        f"once: import and schema migrations), as the default store outlives a study.", "",
        "| MLflow | search wall (s) | in epochs (s) | outside epochs (s) | total wall (s) | "
        "trials | epochs | peak RSS (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, runs in (("on", r["on"]), ("off", r["off"])):
        for s in runs:
            lines.append(f"| {name} | {s['search_s']:.1f} | {s['epoch_seconds']:.1f} | "
                         f"{s['search_s'] - s['epoch_seconds']:.1f} | {s['total_s']:.1f} | "
                         f"{s['finished']} | {s['epochs_trained']} | {s['peak_rss_mb']:.0f} |")
    lines += ["", "Overhead, three ways, summed over the repetitions: (a) search wall on vs off "
              f"{_f(r['search_overhead_pct'], 1, '%')}, which also carries the noise of other "
              f"processes on the machine (compare the epoch times, identical work); (b) time "
              f"outside the epochs on minus off ({outside['on']:.1f} s - {outside['off']:.1f} s)"
              f", over the untracked search: **{_f(r['outside_epochs_overhead_pct'], 1, '%')}** "
              f"(blind to "
              f"what the writer thread takes from the epochs, which (a) sees); (c) time "
              f"inside the per-trial tracker calls on the training thread: "
              f"{r['per_trial_calls_s']:.2f} s = {r['per_trial_calls_pct_of_search']:.1f}% of the "
              f"search. Total wall {_f(r['total_overhead_pct'], 1, '%')} (it includes logging "
              f"and registering the best model, which untracked runs skip).", "",
              "| tracker call (first tracked study) | count | total (s) | per call (ms) |",
              "| --- | ---: | ---: | ---: |"]
    for name, c in r["calls"].items():
        per_call = 1000 * c["seconds"] / c["count"] if c["count"] else 0.0
        lines.append(f"| {name} | {c['count']} | {c['seconds']:.2f} | {per_call:.1f} |")
    return lines + [""]


def pruning(section: Section) -> list[str]:
    rows = section["result"]["rows"]
    lines = _header("4. Pruning saving", section) + [
        f"The reference study (seed {section['settings']['seed']}) untracked, with each pruner as "
        "`mnist-study run` builds it "
        f"(median: 5 start-up trials; Hyperband: reduction 3; neither judges a trial before "
        f"epoch {section['result'].get('first_decision_epoch', 1)}).", "",
        "| pruner | finished | pruned | epochs trained | epochs saved | search wall (s) | "
        "wall saved | best val loss | vs none | best val acc | peak RSS (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, s in rows.items():
        lines.append(
            f"| {name} | {s['finished']} | {s['pruned']} | {s['epochs_trained']} | "
            f"{_f(s.get('epochs_saved_pct'), 0, '%')} | {s['search_s']:.1f} | "
            f"{_f(s.get('wall_saved_pct'), 0, '%')} | {_f(s['best_val_loss'], 4)} | "
            f"{_f(s.get('best_val_loss_vs_none_pct'), 1, '%')} | {_acc(s['best_val_acc'])} | "
            f"{s['peak_rss_mb']:.0f} |")
    return lines + [""]


def target(section: Section) -> list[str]:
    r = section["result"]
    s, hit = r["study"], r["hit"]
    if hit:
        found = (f"Reached in **{hit['seconds_since_start']:.0f} s** from the start of the "
                 f"study process's work ({hit['seconds_since_search']:.0f} s after the search "
                 f"began): trial {hit['trial']}, epoch {hit['epoch']}, val accuracy "
                 f"{_acc(hit['val_acc'])}.")
    else:
        found = (f"**Not reached** within the budget: best val accuracy of any trial "
                 f"{_acc(s['max_val_acc'])}.")
    return _header(f"5. Time to target (val accuracy >= {100 * r['target_acc']:.1f}%, MLP)",
                   section) + [
        f"The project study (TPE, median pruner, MLflow on) with up to {s['n_trials']} trials "
        f"of at most {s['max_epochs']} epochs and a budget of {r['budget_s']:.0f} s; the clock "
        f"stops at the first epoch of any trial whose validation accuracy reaches the target. "
        f"{found} The study ran {s['finished']} trials in {s['search_s']:.0f} s; peak RSS "
        f"{s['peak_rss_mb']:.0f} MB.", ""]


def profile(section: Section) -> list[str]:
    from study.bench.report_profile import render_profile

    return _header("6. Profile of one trial", section) + render_profile(section["result"])


RENDERERS: dict[str, Callable[[Section], list[str]]] = {
    "epochs": epochs, "throughput": throughput, "tracking": tracking, "pruning": pruning,
    "target": target, "profile": profile,
}
