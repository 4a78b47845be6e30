"""Markdown for the profile of one trial and the fixes it led to."""

from __future__ import annotations

from typing import Any


def render_profile(r: dict[str, Any]) -> list[str]:
    t = r["trial"]
    params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
    lines = [
        f"One real trial ({params}; {r['epochs']} epochs; SQLite Optuna storage, MLflow on), "
        f"run four times with the same parameters: a warm-up ({r['warmup']['total_s']:.1f} s; "
        f"the first trial of a fresh process also pays one-off costs, such as importing "
        f"torch._dynamo), then clocked, under torch.profiler, under cProfile.", "",
        "| where the trial's time went | seconds | share |", "| --- | ---: | ---: |"]
    for name, key in (("epochs (training + validation)", "epochs_s"),
                      ("MLflow tracker calls", "tracking_s"),
                      ("the rest: Optuna storage and sampler, model build, best-weights copy",
                       "other_s")):
        lines.append(f"| {name} | {t[key]:.2f} | {100 * t[key] / t['total_s']:.1f}% |")
    lines += [f"| whole trial | {t['total_s']:.2f} | 100% |", "",
              "Top torch ops by self CPU time (torch.profiler):", "",
              "| op | calls | self CPU (ms) | share | CPU total (ms) |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for op in r["top_ops"]:
        lines.append(f"| `{op['op']}` | {op['calls']} | {op['self_cpu_ms']:.1f} | "
                     f"{op['self_cpu_pct']:.1f}% | {op['cpu_total_ms']:.1f} |")
    lines += ["", "Top Python functions by own time (cProfile, which slows Python-heavy code "
              "more than torch kernels):", "",
              "| function | calls | own (s) | share | cumulative (s) |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for fn in r["top_functions"]:
        lines.append(f"| `{fn['function']}` | {fn['calls']} | {fn['self_s']:.3f} | "
                     f"{fn['self_pct']:.1f}% | {fn['cumulative_s']:.3f} |")
    fused = r["fused_optimizer"]
    timed = fused.get("timed", "one epoch")  # runs before the bench timed the steps alone
    runs = {name: ", ".join(f"{s:.2f}" for s in values)
            for name, values in fused["seconds"].items()}
    lines += ["", "Of what is ours, the optimizer step leads the op profile. Torch's default on "
              "the CPU is a Python loop of small ops per parameter (`_single_tensor_adam`); the "
              "project now builds fused optimizers (`aten::_fused_adam_` above). The two, "
              f"{timed} at batch {r['params']['batch_size']}, interleaved:", "",
              "| optimizer step | seconds (median) | every run (s) |", "| --- | ---: | --- |",
              f"| for-loop (torch default on CPU) | {fused['median_s']['for-loop']:.2f} | "
              f"{runs['for-loop']} |",
              f"| fused (project default) | {fused['median_s']['fused']:.2f} | {runs['fused']} |",
              "", f"Fused is {fused['speedup']:.2f}x the for-loop step's speed.", ""]
    return lines
