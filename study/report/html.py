"""The study report: one self-contained HTML file that opens offline.

plotly.js is embedded once in the head (4.8 MB); every figure is a div drawn by it, and the
audit's picture is inline base64. Sections, in order: summary, optimisation history,
parameter importances, the seeds' questions (scheduler, batch size, regularisation), learning
curves with their findings marked, the table of findings, the leakage audit.
"""

from __future__ import annotations

import base64
import html
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial

from study.diagnose.detectors import KINDS, Thresholds
from study.report.data import TOP_TRIALS, ReportData, kinds_of, wilson_interval
from study.report.verdicts import (
    TOP,
    batch_size_verdict,
    regularisation_verdict,
    scheduler_verdict,
    top_spread,
)
from study.search.search_space import hyperparams_from_params
from study.store.record import (
    BEST_VAL_ACC_ATTR,
    EPOCHS_TRAINED_ATTR,
    FINAL_GAP_ATTR,
    FLUCTUATION_RATIO_ATTR,
)

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

SECTIONS = ("summary", "history", "importances", "questions", "curves", "findings", "audit")
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:left;font-size:.92em;vertical-align:top}th{background:#f4f4f4}
.note{color:#666;font-size:.9em}.answer{background:#f6f8fa;border-left:3px solid #4a7;
padding:.4em .8em}.num{text-align:right;font-variant-numeric:tabular-nums}
"""


def render(data: ReportData, *, thresholds: Thresholds = Thresholds()) -> str:
    """The whole report as one HTML document."""
    from plotly.offline import get_plotlyjs

    sections: dict[str, Callable[[ReportData, Thresholds], str]] = {
        "summary": _summary, "history": _history, "importances": _importances,
        "questions": _questions, "curves": _curves, "findings": _findings, "audit": _audit,
    }
    body = "\n".join(f'<section id="{name}">{sections[name](data, thresholds)}</section>'
                     for name in SECTIONS)
    title = html.escape(f"mnist-study report: {data.study.study_name}")
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in data.notes)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>{_STYLE}</style>"
            f"<script>{get_plotlyjs()}</script></head><body><h1>{title}</h1>"
            f"<p class=\"note\">{len(data.trials)} trials in {html.escape(data.storage)}; "
            f"written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>{notes}{body}</body></html>\n")


def _figure(figure: Figure, *, height: int = 380) -> str:
    figure.update_layout(height=height, margin={"l": 60, "r": 20, "t": 50, "b": 50},
                         template="plotly_white")
    # No plotly.js here (the head has it once), no CDN, no MathJax: it opens offline.
    return str(figure.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False,
                              config={"displaylogo": False}))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = ("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
            if any(header) else "")
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table>{head}{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _summary(data: ReportData, t: Thresholds) -> str:
    best = data.best
    if best is None:
        return "<h2>Summary</h2><p>No trial is complete yet.</p>"
    rows: list[Sequence[Any]] = [
        ("best trial", f"#{best.number}"),
        ("validation loss", best.values[0]),
        ("validation accuracy", f"{best.user_attrs.get(BEST_VAL_ACC_ATTR, float('nan')):.2%}")]
    result = data.result
    if result and result.get("best_trial") == best.number:
        test = result["test"]
        n = int(test.get("test_size", 0))
        interval = (" (95% CI {:.2%} to {:.2%}, Wilson, n = {:,})".format(
            *wilson_interval(test["test_acc"], n), n) if n else "")
        rows.append(("TEST accuracy", f"{test['test_acc']:.2%}{interval}; test set read once"))
    else:
        rows.append(("TEST accuracy", "not evaluated yet: `mnist-study run` evaluates the "
                                      "best trial when the study is finished"))
    if data.baseline:
        rows.append(("seed recipe (baseline)",
                     f"val accuracy {data.baseline['val_acc']:.2%}, val loss "
                     f"{data.baseline['val_loss']:.4f} (SGD lr 0.05, StepLR 5/0.5, batch 64)"))
    params = sorted(_shown(best).items())
    counts = Counter(trial.state.name for trial in data.trials)
    states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return (f"<h2>Summary</h2><p>{html.escape(states)}.</p>{_table(('', ''), rows)}"
            f"<h3>Its parameters</h3>{_table(('parameter', 'value'), params)}")


def _history(data: ReportData, t: Thresholds) -> str:
    from optuna.visualization import plot_optimization_history

    if not data.complete:
        return "<h2>Optimisation history</h2><p>No complete trial yet.</p>"
    figure = plot_optimization_history(data.study)
    figure.update_layout(title="best validation loss over trials")
    return f"<h2>Optimisation history</h2>{_figure(figure)}"


def _importances(data: ReportData, t: Thresholds) -> str:
    import plotly.graph_objects as go

    if not data.importances:
        return "<h2>Parameter importances</h2><p>Not available (see the note above).</p>"
    names = list(data.importances)[::-1]  # plotly draws bars bottom-up
    figure = go.Figure(go.Bar(x=[data.importances[n] for n in names], y=names,
                              orientation="h"))
    figure.update_layout(title="PED-ANOVA importance for the validation loss (sums to 1), "
                               "as optuna-dashboard computes it")
    return (f"<h2>Parameter importances</h2>{_figure(figure, height=120 + 24 * len(names))}")


def _questions(data: ReportData, t: Thresholds) -> str:
    return ("<h2>The seeds' questions, answered from this study</h2>"
            + _scheduler(data) + _batch_size(data, t) + _regularisation(data))


def _scheduler(data: ReportData) -> str:
    import plotly.graph_objects as go

    title = "<h3>Did the learning-rate strategy matter?</h3>"
    # Like with like: complete trials trained to the end (or stopped early on their own); a
    # pruned trial's loss is from its rung's epoch, which no complete trial is judged at.
    complete: dict[str, list[FrozenTrial]] = defaultdict(list)
    pruned: Counter[str] = Counter()
    for trial in data.finished:
        name = str(trial.params.get("scheduler", "?"))
        if trial.state.name == "COMPLETE":
            complete[name].append(trial)
        else:
            pruned[name] += 1
    if not complete and not pruned:
        return title + "<p>No finished trial yet.</p>"
    figure = go.Figure()
    rows = []
    losses = {name: [tr.values[0] for tr in trials] for name, trials in complete.items()}
    for name in sorted(set(complete) | set(pruned)):
        values = losses.get(name, [])
        best = min(complete[name], key=lambda tr: tr.values[0], default=None)
        if best is not None and best.intermediate_values:
            steps = sorted(best.intermediate_values.items())
            figure.add_trace(go.Scatter(x=[s for s, _ in steps], y=[v for _, v in steps],
                                        mode="lines+markers", name=f"{name} (#{best.number})"))
        rows.append((name, len(values), pruned[name], min(values) if values else "-",
                     statistics.median(values) if values else "-",
                     top_spread(values) if len(values) >= TOP else "-"))
    figure.update_layout(title="validation loss of the best complete trial per scheduler",
                         xaxis_title="epoch", yaxis_title="val loss", yaxis_type="log")
    left_out = sum(pruned.values())
    note = (f"{_count(left_out, 'pruned trial')} left out: a pruned trial's loss is from "
            f"the epoch it was stopped at, not comparable with a complete trial's best. "
            if left_out else "")
    importance = (data.importances or {}).get("scheduler")
    if importance is not None:
        note += (f"The scheduler's importance is {importance:.2f} of the total (rank "
                 f"{list(data.importances or {}).index('scheduler') + 1} of "
                 f"{len(data.importances or {})}).")
    return (title + (f'<p class="note">{html.escape(note)}</p>' if note else "")
            + _table(("scheduler", "complete trials", "pruned (left out)", "best val loss",
                      "median val loss", f"spread of its {TOP} best"), rows)
            + (_figure(figure) if figure.data else "")
            + f'<p class="answer">{html.escape(scheduler_verdict(losses))}</p>')


def _batch_size(data: ReportData, t: Thresholds) -> str:
    import plotly.graph_objects as go

    title = "<h3>Does batch size change the noise?</h3>"
    measured, short, diverging = [], 0, 0
    for tr in data.finished:
        if "batch_size" not in tr.params:
            continue
        if "fluctuation_ratio" not in tr.user_attrs:
            short += 1  # fewer epochs than the window: no wobble to measure
        elif "divergence" in kinds_of(tr):
            diverging += 1  # its wobble is the blow-up, not batch noise
        else:
            measured.append((int(_shown(tr)["batch_size"]),
                             float(tr.user_attrs[FLUCTUATION_RATIO_ATTR]), tr.number))
    left_out = ", ".join(part for part in (
        f"{short} trained fewer than {t.fluctuation_window} epochs" if short else "",
        f"{diverging} diverging" if diverging else "") if part)
    note = (f'<p class="note">{len(measured)} of {len(measured) + short + diverging} '
            f"finished trials measured; left out: {html.escape(left_out)}.</p>"
            if left_out else "")
    if not measured:
        verdict = batch_size_verdict({}, threshold=t.fluctuation_ratio)
        return title + note + (f"<p>No trial has a fluctuation ratio: it needs "
                               f"{t.fluctuation_window} epochs or more.</p>"
                               f'<p class="answer">{html.escape(verdict)}</p>')
    ratios: dict[int, list[float]] = defaultdict(list)
    for size, ratio, _ in measured:
        ratios[size].append(ratio)
    figure = go.Figure()
    rows = []
    for size in sorted(ratios):
        figure.add_trace(go.Box(y=ratios[size], name=str(size), boxpoints="all",
                                text=[f"trial {n}" for b, _, n in measured if b == size]))
        rows.append((size, len(ratios[size]), statistics.median(ratios[size]),
                     sum(r > t.fluctuation_ratio for r in ratios[size])))
    figure.add_hline(y=1.0, line_dash="dot", annotation_text="binomial noise alone")
    figure.add_hline(y=t.fluctuation_ratio, line_dash="dash",
                     annotation_text="fluctuation finding")
    figure.update_layout(title=f"val accuracy wobble over the last {t.fluctuation_window} "
                               f"epochs, in binomial standard errors", xaxis_title="batch size",
                         yaxis_title="sd / binomial se", showlegend=False)
    verdict = batch_size_verdict(ratios, threshold=t.fluctuation_ratio)
    return (title + note + '<p class="note">A ratio near 1 is what the validation set\'s size '
            "alone explains; above the dashed line the wobble is real.</p>"
            + _table(("batch size", "trials", "median ratio", "beyond noise"), rows)
            + _figure(figure) + f'<p class="answer">{html.escape(verdict)}</p>')


def _regularisation(data: ReportData) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    title = "<h3>How do dropout and weight decay relate to the overfitting gap?</h3>"
    # Like with like: a pruned trial's gap is from an earlier epoch than a complete one's.
    trials = [tr for tr in data.complete if "final_gap" in tr.user_attrs]
    if not trials:
        return title + "<p>No complete trial with a final gap yet.</p>"
    left_out = sum(1 for tr in data.finished if tr.state.name == "PRUNED")
    figure = make_subplots(rows=1, cols=2, subplot_titles=("dropout", "weight decay"))
    overfit = ["overfitting" in kinds_of(tr) for tr in trials]
    colours = ["#d62728" if o else "#1f77b4" for o in overfit]
    text = [f"trial {tr.number}" + (" (overfitting)" if o else "")
            for tr, o in zip(trials, overfit, strict=True)]
    gaps = [float(tr.user_attrs[FINAL_GAP_ATTR]) for tr in trials]
    values = {param: [float(_shown(tr).get(param, 0.0)) for tr in trials]
              for param in ("dropout", "weight_decay")}
    for col, param in ((1, "dropout"), (2, "weight_decay")):
        figure.add_trace(go.Scatter(x=values[param], y=gaps, mode="markers",
                                    marker={"color": colours}, text=text, showlegend=False),
                         row=1, col=col)
    figure.update_xaxes(type="log", row=1, col=2)
    figure.update_yaxes(title_text="val - train loss at the last epoch", row=1, col=1)
    figure.update_layout(title="final gap per complete trial (red: overfitting found)")
    verdict = regularisation_verdict(gaps, {"dropout": values["dropout"],
                                            "weight decay": values["weight_decay"]})
    note = (f"{sum(overfit)} of {len(trials)} complete trials overfit"
            + (f"; {_count(left_out, 'pruned trial')} left out (a pruned trial's gap is "
               f"from an earlier epoch)" if left_out else "") + ".")
    return (title + f'<p class="note">{html.escape(note)}</p>' + _figure(figure)
            + f'<p class="answer">{html.escape(verdict)}</p>')


def _curves(data: ReportData, t: Thresholds) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    title = "<h2>Learning curves, with findings marked</h2>"
    if not data.shown:
        return title + "<p>No trial to show yet.</p>"
    trials = {tr.number: tr for tr in data.trials}
    cols = 3
    rows = -(-len(data.shown) // cols)
    names = [_curve_title(trials[n], i < _top_count(data)) for i, n in enumerate(data.shown)]
    figure = make_subplots(rows=rows, cols=cols, subplot_titles=names)
    for i, number in enumerate(data.shown):
        row, col = i // cols + 1, i % cols + 1
        curves = data.curves.get(number, {})
        for metric, colour in (("train_loss", "#1f77b4"), ("val_loss", "#ff7f0e")):
            points = curves.get(metric, [])
            if points:
                figure.add_trace(go.Scatter(
                    x=[s for s, _ in points], y=[v for _, v in points], mode="lines",
                    line={"color": colour}, name=metric, legendgroup=metric,
                    showlegend=i == 0), row=row, col=col)
        for finding in data.findings.get(number, []):
            val = dict(curves.get("val_loss", []))
            y = val.get(finding["epoch"])
            # Unclipped: a label near a plot's edge is drawn whole, not cut to "underfittir".
            figure.add_trace(go.Scatter(
                x=[finding["epoch"]], y=[y if y is not None else 0], mode="markers+text",
                marker={"symbol": "x", "size": 11, "color": "#d62728"},
                text=[finding["kind"]], textposition="top center", cliponaxis=False,
                hovertext=[finding["summary"]], hoverinfo="text", showlegend=False),
                row=row, col=col)
    figure.update_yaxes(type="log")
    figure.update_xaxes(title_text="epoch")
    listing = "".join(
        f"<li><b>trial {n}</b>: {html.escape(f['summary'])}</li>"
        for n in data.shown for f in data.findings.get(n, []))
    return (title + '<p class="note">Train loss (blue) is the epoch\'s running mean with '
            "dropout and augmentation on; validation loss (orange) is measured after the "
            "epoch. A red x marks each finding at its epoch; hover for the evidence.</p>"
            + _figure(figure, height=300 * rows) + (f"<ul>{listing}</ul>" if listing else ""))


def _top_count(data: ReportData) -> int:
    complete = {tr.number for tr in data.complete}
    return sum(1 for n in data.shown[:TOP_TRIALS] if n in complete)


def _curve_title(trial: FrozenTrial, top: bool) -> str:
    """'#4 top 0.0412', '#9 pruned at epoch 2', '#11 failed: divergence'."""
    kinds = ", ".join(kinds_of(trial))
    if trial.state.name == "COMPLETE":
        what = ("top " if top else "") + f"{trial.values[0]:.4f}"
    elif trial.state.name == "PRUNED":
        epochs = trial.user_attrs.get(EPOCHS_TRAINED_ATTR)
        what = f"pruned at epoch {epochs}" if epochs else "pruned"
    else:
        what = trial.state.name.lower()
    return f"#{trial.number} {what}" + (f": {kinds}" if kinds else "")


def _findings(data: ReportData, t: Thresholds) -> str:
    finished = data.finished + [tr for tr in data.trials if tr.state.name == "FAIL"]
    rows = []
    for kind in KINDS:
        flagged = [tr for tr in finished if kind in kinds_of(tr)]
        rows.append((kind, len(flagged), f"{len(flagged) / max(len(finished), 1):.0%}",
                     _ranges(flagged)))
    return ("<h2>Findings across the study</h2>"
            f"<p>{len(finished)} finished or failed trials; each finding's thresholds are the "
            "study's [diagnosis] table (README, Diagnosis).</p>"
            + _table(("finding", "trials", "share", "where (their hyperparameters)"), rows))


def _ranges(trials: Sequence[FrozenTrial]) -> str:
    if not trials:
        return ""
    parts = []
    shown = [_shown(tr) for tr in trials]
    for name in ("lr", "batch_size", "dropout", "weight_decay", "optimizer", "scheduler"):
        values = [params[name] for params in shown if name in params]
        if not values:
            continue
        if all(isinstance(v, (int, float)) for v in values) and name != "batch_size":
            low, high = min(values), max(values)
            parts.append(f"{name} {low:.3g}" if low == high else
                         f"{name} {low:.3g}-{high:.3g}")
        else:  # batch sizes as numbers, in their order: 64, 512, not 0064, 0512
            parts.append(f"{name} {', '.join(str(v) for v in sorted(set(values)))}")
    return "; ".join(parts)


def _count(n: int, noun: str) -> str:
    """'1 pruned trial', '3 pruned trials'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _shown(trial: FrozenTrial) -> dict[str, Any]:
    """TRIAL's parameters as the console prints them: batch sizes as numbers (Optuna stores
    them as equal-width labels), the learning rate as `lr` whatever the optimizer."""
    try:
        return dict(hyperparams_from_params(trial.params).as_params())
    except (KeyError, ValueError):  # a trial of another shape (a test's, an old study's)
        return dict(trial.params)


def _audit(data: ReportData, t: Thresholds) -> str:
    title = "<h2>Leakage audit</h2>"
    if data.audit is None:
        return title + "<p>No audit found in the study's MLflow runs.</p>"
    audit = data.audit
    rows = [(k, v) for k, v in audit.get("index_overlaps", {}).items()]
    duplicates = audit.get("duplicates", [])
    cross = [d for d in duplicates if d.get("part_a") != d.get("part_b")]
    text = (f"Index overlaps between the split's parts: "
            f"{'none' if not any(v for _, v in rows) else rows}. Duplicate pairs: "
            f"{len(duplicates)}, {len(cross)} across the split (near-duplicate threshold "
            f"{audit.get('near_threshold')}). Largest class-share deviation between the "
            f"parts: {audit.get('max_class_deviation', float('nan')):.4%}. Test set: "
            f"{audit.get('test_access', '')}")
    picture = ""
    if data.audit_picture:
        encoded = base64.b64encode(data.audit_picture).decode("ascii")
        picture = (f'<p>The closest pairs (each: image a | image b | where they differ), '
                   f'numbered as in audit.md:</p><img alt="closest pairs" '
                   f'src="data:image/png;base64,{encoded}">')
    return title + f"<p>{html.escape(text)}</p>{picture}"


def write_report(data: ReportData, path: Path, *, thresholds: Thresholds = Thresholds()) -> int:
    """Render DATA into the file PATH; its size in bytes."""
    text = render(data, thresholds=thresholds)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return len(text.encode("utf-8"))
