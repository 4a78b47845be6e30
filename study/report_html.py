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

from study.detectors import KINDS, Thresholds
from study.report_data import TOP_TRIALS, ReportData, findings_of, wilson_interval
from study.search_space import hyperparams_from_params

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
        ("validation accuracy", f"{best.user_attrs.get('best_val_acc', float('nan')):.2%}")]
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
    figure.update_layout(title="fANOVA importance for the validation loss (sums to 1)")
    return (f"<h2>Parameter importances</h2>{_figure(figure, height=120 + 24 * len(names))}")


def _questions(data: ReportData, t: Thresholds) -> str:
    return ("<h2>The seeds' questions, answered from this study</h2>"
            + _scheduler(data) + _batch_size(data, t) + _regularisation(data))


def _scheduler(data: ReportData) -> str:
    import plotly.graph_objects as go

    by_scheduler: dict[str, list[FrozenTrial]] = defaultdict(list)
    for trial in data.finished:
        by_scheduler[str(trial.params.get("scheduler", "?"))].append(trial)
    if not by_scheduler:
        return "<h3>Did the learning-rate strategy matter?</h3><p>No finished trial yet.</p>"
    figure = go.Figure()
    rows = []
    bests, spreads = [], []
    for name, trials in sorted(by_scheduler.items()):
        complete = [tr for tr in trials if tr.values]
        best = min(complete, key=lambda tr: tr.values[0], default=None)
        if best is not None and best.intermediate_values:
            steps = sorted(best.intermediate_values.items())
            figure.add_trace(go.Scatter(x=[s for s, _ in steps], y=[v for _, v in steps],
                                        mode="lines+markers", name=f"{name} (#{best.number})"))
        values = [tr.values[0] for tr in complete]
        if values:
            bests.append(min(values))
            spreads.append(max(values) - min(values))
        rows.append((name, len(trials), min(values) if values else "-",
                     statistics.median(values) if values else "-",
                     max(values) - min(values) if len(values) > 1 else "-"))
    figure.update_layout(title="validation loss of the best trial per scheduler",
                         xaxis_title="epoch", yaxis_title="val loss", yaxis_type="log")
    importance = (data.importances or {}).get("scheduler")
    answer = ("the scheduler was not searched, or importances are unavailable"
              if importance is None else
              f"the scheduler's fANOVA importance is {importance:.2f} of the total (rank "
              f"{list(data.importances or {}).index('scheduler') + 1} of "
              f"{len(data.importances or {})} varied parameters)")
    if len(bests) > 1 and any(spreads):
        answer += (f". The schedulers' best trials lie {max(bests) - min(bests):.4f} apart; "
                   f"trials of one scheduler spread up to {max(spreads):.4f} (its own "
                   f"parameters and each trial's seed): a gap smaller than that spread is "
                   f"not a difference this study can tell")
    return ("<h3>Did the learning-rate strategy matter?</h3>"
            f'<p class="answer">{html.escape(answer)}.</p>'
            + _table(("scheduler", "trials", "best val loss", "median val loss",
                      "spread (max - min)"), rows)
            + _figure(figure))


def _batch_size(data: ReportData, t: Thresholds) -> str:
    import plotly.graph_objects as go

    points = [(int(tr.params["batch_size"]), float(tr.user_attrs["fluctuation_ratio"]),
               tr.number) for tr in data.finished
              if "batch_size" in tr.params and "fluctuation_ratio" in tr.user_attrs]
    title = "<h3>Does batch size change the noise?</h3>"
    if not points:
        return title + (f"<p>No trial has a fluctuation ratio: it needs "
                        f"{t.fluctuation_window} epochs or more, and trials recorded with "
                        f"findings (older trials have none).</p>")
    sizes = sorted({b for b, _, _ in points})
    figure = go.Figure()
    rows = []
    for size in sizes:
        ratios = [r for b, r, _ in points if b == size]
        figure.add_trace(go.Box(y=ratios, name=str(size), boxpoints="all",
                                text=[f"trial {n}" for b, _, n in points if b == size]))
        rows.append((size, len(ratios), statistics.median(ratios),
                     sum(r > t.fluctuation_ratio for r in ratios)))
    figure.add_hline(y=1.0, line_dash="dot", annotation_text="binomial noise alone")
    figure.add_hline(y=t.fluctuation_ratio, line_dash="dash",
                     annotation_text="fluctuation finding")
    figure.update_layout(title=f"val accuracy wobble over the last {t.fluctuation_window} "
                               f"epochs, in binomial standard errors", xaxis_title="batch size",
                         yaxis_title="sd / binomial se", showlegend=False)
    return (title + '<p class="answer">A ratio near 1 is what the validation set\'s size '
            "alone explains; above the dashed line the wobble is real.</p>"
            + _table(("batch size", "trials", "median ratio", "beyond noise"), rows)
            + _figure(figure))


def _regularisation(data: ReportData) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    trials = [tr for tr in data.finished if "final_gap" in tr.user_attrs]
    title = "<h3>How do dropout and weight decay relate to the overfitting gap?</h3>"
    if not trials:
        return title + ("<p>No finished trial with a final gap yet (trials recorded with "
                        "findings; older trials have none).</p>")
    figure = make_subplots(rows=1, cols=2, subplot_titles=("dropout", "weight decay"))
    overfit = ["overfitting" in tr.user_attrs.get("findings", "") for tr in trials]
    colours = ["#d62728" if o else "#1f77b4" for o in overfit]
    text = [f"trial {tr.number}" + (" (overfitting)" if o else "")
            for tr, o in zip(trials, overfit, strict=True)]
    gaps = [tr.user_attrs["final_gap"] for tr in trials]
    for col, param in ((1, "dropout"), (2, "weight_decay")):
        figure.add_trace(go.Scatter(x=[tr.params.get(param, 0.0) for tr in trials], y=gaps,
                                    mode="markers", marker={"color": colours}, text=text,
                                    showlegend=False), row=1, col=col)
    figure.update_xaxes(type="log", row=1, col=2)
    figure.update_yaxes(title_text="val - train loss at the last epoch", row=1, col=1)
    figure.update_layout(title="final gap per trial (red: overfitting found)")
    return (title + f'<p class="answer">{sum(overfit)} of {len(trials)} trials overfit; a '
            "gap that shrinks as dropout or weight decay grows is regularisation at work.</p>"
            + _figure(figure))


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
        for finding in findings_of(trials[number]):
            val = dict(curves.get("val_loss", []))
            y = val.get(finding["epoch"])
            figure.add_trace(go.Scatter(
                x=[finding["epoch"]], y=[y if y is not None else 0], mode="markers+text",
                marker={"symbol": "x", "size": 11, "color": "#d62728"},
                text=[finding["kind"]], textposition="top center",
                hovertext=[finding["summary"]], hoverinfo="text", showlegend=False),
                row=row, col=col)
    figure.update_yaxes(type="log")
    figure.update_xaxes(title_text="epoch")
    listing = "".join(
        f"<li><b>trial {n}</b>: {html.escape(f['summary'])}</li>"
        for n in data.shown for f in findings_of(trials[n]))
    return (title + '<p class="note">Train loss (blue) is the epoch\'s running mean with '
            "dropout and augmentation on; validation loss (orange) is measured after the "
            "epoch. A red x marks each finding at its epoch; hover for the evidence.</p>"
            + _figure(figure, height=300 * rows) + (f"<ul>{listing}</ul>" if listing else ""))


def _top_count(data: ReportData) -> int:
    complete = {tr.number for tr in data.complete}
    return sum(1 for n in data.shown[:TOP_TRIALS] if n in complete)


def _curve_title(trial: FrozenTrial, top: bool) -> str:
    kinds = trial.user_attrs.get("findings", "none")
    value = f"{trial.values[0]:.4f}" if trial.values else trial.state.name.lower()
    return " ".join([f"#{trial.number}", *(["top"] if top else []), value]) + (
        f": {kinds}" if kinds != "none" else "")


def _findings(data: ReportData, t: Thresholds) -> str:
    finished = data.finished + [tr for tr in data.trials if tr.state.name == "FAIL"]
    rows = []
    for kind in KINDS:
        flagged = [tr for tr in finished if any(f["kind"] == kind for f in findings_of(tr))]
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
            f"parts: {audit.get('max_class_deviation', float('nan')):.4f}. Test set: "
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
