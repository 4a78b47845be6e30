"""The report's arithmetic and choices, on hand-made trials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from study.diagnose.detectors import Thresholds
from study.report.data import DIAGNOSED_TRIALS, TOP_TRIALS, shown_trials, wilson_interval


def test_the_wilson_interval_of_a_test_accuracy() -> None:
    low, high = wilson_interval(0.98, 10_000)
    assert (low, high) == pytest.approx((0.97707, 0.98257), abs=1e-5)  # by hand
    low, high = wilson_interval(1.0, 100)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.96300, abs=1e-5)  # never > 1


def _trial(number: int, value: float | None, kinds: list[str]) -> optuna.trial.FrozenTrial:
    attrs: dict[str, Any] = {"findings": ", ".join(kinds) or "none",
                             "findings_detail": [{"kind": k, "epoch": 1, "summary": k}
                                                 for k in kinds]}
    trial = optuna.trial.create_trial(
        state=TrialState.COMPLETE if value is not None else TrialState.PRUNED,
        value=value, user_attrs=attrs, intermediate_values={1: value or 1.0})
    trial.number = number
    return trial


def test_the_curves_shown_are_the_top_trials_then_one_per_finding_kind_first() -> None:
    trials = [_trial(0, 0.5, ["overfitting"]), _trial(1, 0.1, []), _trial(2, 0.2, []),
              _trial(3, 0.3, []), _trial(4, None, ["overfitting"]), _trial(5, 0.9, ["spike"]),
              *(_trial(n, 0.8, ["overfitting"]) for n in range(6, 12))]
    shown = shown_trials(trials)
    assert shown[:TOP_TRIALS] == [1, 2, 3]  # the best complete trials first
    assert shown[TOP_TRIALS:TOP_TRIALS + 2] == [0, 5]  # then a first trial of each kind
    assert len(shown) == TOP_TRIALS + DIAGNOSED_TRIALS  # then others, up to the cap


def test_without_mlflow_the_report_says_so_and_draws_validation_curves() -> None:
    from study.report.data import collect
    from study.report.html import SECTIONS, render

    study = optuna.create_study()
    for trial in (_trial(0, 0.2, []), _trial(1, 0.1, ["overfitting"])):
        study.add_trial(trial)
    data = collect(study, storage="sqlite:///x.db", client=None)
    assert data.curves[1] == {"val_loss": [(1, 0.1)]}  # Optuna's intermediate values
    assert any("no MLflow store" in note for note in data.notes)  # said, not silent
    page = render(data)
    assert all(f'<section id="{s}">' in page for s in SECTIONS)
    assert "No audit found" in page and "not evaluated yet" in page


def test_a_trial_the_mlflow_store_has_no_curves_of_is_said_and_drawn_from_optuna(
    tmp_path: Path,
) -> None:
    from mlflow import MlflowClient

    from study.report.data import collect

    study = optuna.create_study()
    trial = _trial(0, 0.1, [])
    trial.user_attrs["mlflow_run_id"] = "0" * 32  # a run this store never had
    study.add_trial(trial)
    data = collect(study, storage="sqlite:///x.db",
                   client=MlflowClient(f"sqlite:///{tmp_path}/mlflow.db"))
    assert any(note.startswith("trial 0: no curves in the MLflow store") for note in data.notes)
    assert data.curves == {0: {"val_loss": [(1, 0.1)]}}  # from the Optuna storage


def test_the_report_shows_batch_sizes_as_numbers_and_the_rate_as_lr() -> None:
    import optuna

    from study.report.html import _ranges, _shown

    def trial(batch: str, lr: float) -> optuna.trial.FrozenTrial:
        params: dict[str, str | float] = {
            "optimizer": "adamw", "lr_adamw": lr, "batch_size": batch, "dropout": 0.1,
            "weight_decay": 1e-5, "scheduler": "cosine"}
        dists: dict[str, optuna.distributions.BaseDistribution] = {
            k: optuna.distributions.CategoricalDistribution([v]) for k, v in params.items()}
        return optuna.trial.create_trial(params=params, distributions=dists, value=0.1)

    trials = [trial("0512", 0.01), trial("0064", 0.02)]
    assert _shown(trials[0])["batch_size"] == 512 and _shown(trials[0])["lr"] == 0.01
    assert "batch_size 64, 512" in _ranges(trials)  # as the console says, in numeric order
    assert "lr 0.01-0.02" in _ranges(trials)  # whatever the optimizer's own rate is called


def _scheduled(number: int, scheduler: str, value: float, *, pruned_at: int | None = None,
               kinds: str = "none") -> optuna.trial.FrozenTrial:
    params: dict[str, str | float] = {"scheduler": scheduler, "dropout": 0.1 * (number % 5)}
    dists: dict[str, optuna.distributions.BaseDistribution] = {
        "scheduler": optuna.distributions.CategoricalDistribution(["cosine", "plateau"]),
        "dropout": optuna.distributions.FloatDistribution(0.0, 0.5)}
    trial = optuna.trial.create_trial(
        state=TrialState.PRUNED if pruned_at else TrialState.COMPLETE, value=value,
        params=params, distributions=dists, intermediate_values={pruned_at or 8: value},
        user_attrs={"findings": kinds, "final_gap": 0.01 * number,
                    "epochs_trained": pruned_at or 8})
    trial.number = number
    return trial


def test_the_scheduler_question_compares_complete_trials_and_ends_with_a_verdict() -> None:
    from study.report.data import collect
    from study.report.html import _curve_title, render

    study = optuna.create_study()
    trials = [_scheduled(0, "cosine", 0.04), _scheduled(1, "cosine", 0.05),
              _scheduled(2, "cosine", 0.06),
              _scheduled(3, "plateau", 2.03, pruned_at=2, kinds="overfitting")]
    for trial in trials:
        study.add_trial(trial)
    page = render(collect(study, storage="sqlite:///x.db", client=None))
    questions = page.split('<section id="questions">', 1)[1].split("</section>", 1)[0]
    # Plateau's only trial was pruned at epoch 2: its loss is left out, and said to be.
    assert "1 pruned trial left out" in questions and "2.03" not in questions
    assert questions.count('<p class="answer">') == 3  # every question ends with a verdict
    assert "Too few trials to tell: two schedulers need 3 complete trials each " \
           "(complete trials per scheduler: cosine 3)." in questions
    assert _curve_title(study.trials[3], top=False) == "#3 pruned at epoch 2: overfitting"
    assert _curve_title(study.trials[0], top=True) == "#0 top 0.0400"


def _batched(number: int, batch: int, ratio: float | None, kinds: str = "none",
             ) -> optuna.trial.FrozenTrial:
    attrs: dict[str, Any] = {"findings": kinds, "epochs_trained": 8 if ratio else 3}
    if ratio is not None:
        attrs["fluctuation_ratio"] = ratio
    trial = optuna.trial.create_trial(
        value=0.05, params={"batch_size": batch}, user_attrs=attrs,
        distributions={"batch_size": optuna.distributions.CategoricalDistribution([32, 128])},
        intermediate_values={8: 0.05})
    trial.number = number
    return trial


def test_the_batch_size_question_says_which_trials_it_left_out_and_why() -> None:
    from study.report.data import collect
    from study.report.html import render

    study = optuna.create_study()
    trials = [*(_batched(n, 128, 0.9 + 0.1 * n) for n in range(3)),
              _batched(3, 32, 7.5, kinds="divergence, spike"),  # its wobble is the blow-up
              _batched(4, 32, None)]  # 3 epochs: under the 5-epoch window
    for trial in trials:
        study.add_trial(trial)
    page = render(collect(study, storage="sqlite:///x.db", client=None))
    question = page.split("<h3>Does batch size change the noise?</h3>", 1)[1].split("<h3>")[0]
    # Not silently dropped: the count and the reasons are on the page.
    assert "3 of 5 finished trials measured; left out: 1 trained fewer than 5 epochs, " \
           "1 diverging." in question
    # The diverging trial is no evidence of noise at batch 32: the table has no row for 32.
    assert "<td>32</td>" not in question and "<td>128</td>" in question
    assert "Too few trials to tell" in question and "trials per batch size: 128 3" in question


def test_the_audit_deviation_reads_in_percent_as_the_audit_command_prints_it() -> None:
    from study.report.data import collect
    from study.report.html import _audit

    data = collect(optuna.create_study(), storage="sqlite:///x.db", client=None)
    data.audit = {"index_overlaps": {}, "duplicates": [], "max_class_deviation": 8.3e-5}
    assert "parts: 0.0083%." in _audit(data, Thresholds())
