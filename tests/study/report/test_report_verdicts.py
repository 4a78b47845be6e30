"""Each of the report's questions ends with one sentence: the answer, its evidence, how sure."""

from __future__ import annotations

import pytest

from study.report.verdicts import (
    batch_size_verdict,
    regularisation_verdict,
    scheduler_verdict,
    spearman,
)


def test_a_scheduler_gap_beyond_the_spread_of_its_best_trials_is_a_yes() -> None:
    verdict = scheduler_verdict({"cosine": [0.040, 0.041, 0.042, 0.060, 0.050],
                                 "step": [0.050, 0.051, 0.052, 0.070, 0.090],
                                 "plateau": [0.045]})
    # Gap 0.010 between the two best; their best three spread 0.002 each.
    assert verdict.startswith("Yes: cosine's best trial (0.0400) beats step's (0.0500) by "
                              "0.0100, more than the spread among either one's 3 best trials "
                              "(0.0020)")
    assert verdict.endswith("complete trials per scheduler: cosine 5, step 5, plateau 1.")


def test_a_scheduler_gap_within_the_spread_is_a_no_and_few_trials_a_hint() -> None:
    no = scheduler_verdict({"cosine": [0.040, 0.045, 0.050], "step": [0.041, 0.046, 0.049]})
    assert no.startswith("No: the best schedulers, cosine and step, lie 0.0010 apart, within "
                         "the spread among either one's 3 best trials (0.0100)")
    hint = scheduler_verdict({"cosine": [0.01, 0.011, 0.012], "step": [0.05, 0.051, 0.052]})
    assert hint.startswith("Yes: ") and hint.endswith("a hint rather than a finding.")


def test_one_scheduler_with_enough_trials_is_too_few_to_tell() -> None:
    verdict = scheduler_verdict({"cosine": [0.04] * 13, "plateau": [0.05, 0.06],
                                 "step": [0.07]})
    assert verdict == ("Too few trials to tell: two schedulers need 3 complete trials each "
                       "(complete trials per scheduler: cosine 13, plateau 2, step 1).")
    assert scheduler_verdict({}).startswith("Too few trials to tell")


def test_batch_size_noise_verdicts() -> None:
    assert batch_size_verdict({32: [2.5, 3.0, 2.8], 256: [1.0, 1.1, 0.9]},
                              threshold=2.0).startswith(
        "Yes: the median wobble is beyond noise at batch 32 and within it at 256 "
        "(1.0-2.8 standard errors")
    assert batch_size_verdict({64: [1.0, 1.2, 1.1], 512: [0.9, 1.3, 1.0]},
                              threshold=2.0).startswith("No: at every batch size")
    assert batch_size_verdict({64: [3.0, 3.2, 3.1], 512: [2.9, 3.3, 3.0]},
                              threshold=2.0).startswith("No: the median wobble is beyond noise "
                                                        "at every batch size")
    # A single trial at a size says nothing about that size.
    assert batch_size_verdict({32: [5.0], 64: [1.0, 1.1, 1.2]}, threshold=2.0) == (
        "Too few trials to tell: two batch sizes need 3 trials each (trials per batch size: "
        "32 1, 64 3).")


def test_spearman_ranks_ties_and_constants() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Ties share their mean rank: x ranks 1.5, 1.5, 3, 4 against y's 1, 2, 3, 4.
    assert spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert spearman([0.1] * 4, [1, 2, 3, 4]) is None  # a parameter held fixed


def test_regularisation_verdicts() -> None:
    dropout = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.1, 0.3]
    gaps = [0.09, 0.08, 0.06, 0.05, 0.03, 0.02, 0.07, 0.04]  # falls as dropout grows
    decay = [1e-4, 1e-6, 1e-5, 1e-3, 1e-6, 1e-4, 1e-3, 1e-5]  # unrelated
    verdict = regularisation_verdict(gaps, {"dropout": dropout, "weight decay": decay})
    assert verdict.startswith("Yes: the gap shrinks as dropout grows (Spearman rho -0.99)")
    assert "weight decay: no relation beyond chance" in verdict
    assert verdict.endswith("n = 8 complete trials, chance alone reaches rho ±0.74.")
    assert regularisation_verdict(gaps[:5], {"dropout": dropout[:5]}) == (
        "Too few trials to tell: a correlation needs 8 complete trials, this study has 5.")
    held = regularisation_verdict(gaps, {"dropout": [0.2] * 8})
    assert held.startswith("No: dropout was not varied")
