"""The leakage audit on synthetic data with planted exact and near duplicates across splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from data_pipeline import (
    DataError,
    DuplicatePair,
    Normalizer,
    find_mnist,
    prepare_audited_data,
    stratified_split,
    to_tensor_set,
)
from data_pipeline import duplicates as duplicates_module
from data_pipeline.audit import AuditReport, build_report, plan_drop
from data_pipeline.duplicates import Duplicates, Pairs, find_duplicates
from tests.planted import SEED, VAL_FRACTION, Key, Planted, write_planted_mnist

THRESHOLD = 0.01  # the default of --near-duplicate-threshold


def _keys(report: AuditReport, *, cross: bool) -> set[Key]:
    return {(p.kind, p.part_a, p.index_a, p.part_b, p.index_b) for p in report.duplicates
            if p.cross_split == cross}


def _audit(planted: Planted, near_threshold: float = THRESHOLD) -> AuditReport:
    files = find_mnist(planted.directory, verify=False)
    assert files is not None  # the planted IDX files are found
    train, test = files.load("train"), files.load("test")
    split = stratified_split(train.labels, val_fraction=VAL_FRACTION, seed=SEED)
    dups = find_duplicates(np.concatenate([train.images, test.images]),
                           near_threshold=near_threshold)
    return build_report(train_labels=train.labels, test_labels=test.labels,
                        parts=split.parts(), duplicates=dups,
                        near_threshold=near_threshold,
                        split={"data_fingerprint": "d", "split_fingerprint": "s"},
                        normalisation=[{"fitted_on": "train", "images": len(split.train[0]),
                                        "mean": 0.1, "std": 0.3}])


@pytest.fixture
def planted(tmp_path: Path) -> Planted:
    return write_planted_mnist(tmp_path / "planted")


def test_every_planted_duplicate_is_found_and_nothing_else(planted: Planted) -> None:
    report = _audit(planted)
    assert _keys(report, cross=True) == planted.cross  # all four cross-split plants, no others
    assert _keys(report, cross=False) == planted.within  # and the ones inside one part
    near = [p for p in report.duplicates if p.kind == "near"]
    assert all(p.distance <= THRESHOLD for p in near)  # near means within the threshold
    assert all(p.shift == (0, 0) for p in near)  # the plants are not shifted: none is reported


def test_threshold_zero_checks_exact_duplicates_only(planted: Planted) -> None:
    report = _audit(planted, near_threshold=0.0)
    assert {k for k in planted.cross | planted.within if k[0] == "exact"} == (
        _keys(report, cross=True) | _keys(report, cross=False))  # the exact plants, only
    assert report.hash_candidates == 0  # no perceptual search was run


def test_too_many_candidates_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(duplicates_module, "MAX_CANDIDATE_PAIRS", 10)
    blank_ish = np.zeros((20, 28, 28), np.uint8)
    blank_ish[:, 0, 0] = np.arange(20)  # all distinct, all hashing alike
    with pytest.raises(DataError, match="--near-duplicate-threshold 0"):
        find_duplicates(blank_ish, near_threshold=THRESHOLD)


def test_class_balance_and_disjointness_are_reported(planted: Planted) -> None:
    report = _audit(planted)
    sizes = {p.name: p.size for p in report.parts}
    assert sizes == {"train": 300, "val": 100, "test": 100}  # the split and the test file
    assert report.index_overlaps == {"train&val": 0}  # train and val share no index
    val = next(p for p in report.parts if p.name == "val")
    assert val.class_counts == (10,) * 10 and val.class_proportions == (0.1,) * 10  # stratified
    assert report.max_class_deviation == 0.0  # every class in proportion, exactly here


def test_overlapping_parts_are_not_disjoint() -> None:
    labels = np.arange(40) % 10
    dups = find_duplicates(np.zeros((0, 28, 28), np.uint8), near_threshold=0.0)
    report = build_report(train_labels=labels, test_labels=labels[:10],
                          parts={"train": np.arange(0, 30), "val": np.arange(25, 40)},
                          duplicates=dups, near_threshold=0.0,
                          split={"data_fingerprint": "d", "split_fingerprint": "s"},
                          normalisation=[])
    assert report.index_overlaps == {"train&val": 5}  # an overlap is counted, not hidden
    assert "**NOT disjoint**" in report.to_markdown()  # and said in plain words


def test_json_and_markdown_list_the_offending_pairs(planted: Planted) -> None:
    report = _audit(planted)
    data = json.loads(report.to_json())
    assert len(data["duplicates"]) == len(planted.cross) + len(planted.within)  # every pair
    assert data["pair_counts"]["train/val"] == {"exact": 1, "near": 1}  # counted per parts
    markdown = report.to_markdown()
    _, _, tr, _, va = next(k for k in planted.cross if k[0] == "exact" and k[3] == "val")
    assert f"train[{tr}]~val[{va}]" in markdown  # the pair is named, with both indices
    assert "**4 pairs cross the split**" in markdown  # the verdict, up front
    assert report.summary()["cross_split_exact"] == 2  # the compact digest for user attrs


def test_drop_plan_takes_training_images_only(planted: Planted) -> None:
    report = _audit(planted)
    dropped = plan_drop(report, droppable={"train"})
    expected = sorted(k[2] for k in planted.cross)  # the train member of every cross pair
    assert dropped.tolist() == expected  # never a val or test index


def test_drop_plan_between_folds_takes_the_later_folds_image() -> None:
    labels = np.arange(12) % 2
    no_pairs = Pairs(a=np.zeros(0, np.int64), b=np.zeros(0, np.int64), distance=np.zeros(0),
                     shift=np.zeros((0, 2), np.int8))
    dups = Duplicates(a=np.array([0, 7, 3]), b=np.array([7, 8, 12]),  # 12: test image 0
                      distance=np.array([0.0, 0.0, 0.01]), exact=np.array([True, True, False]),
                      shift=np.zeros((3, 2), np.int8), candidates=3, closest=no_pairs)
    report = build_report(train_labels=labels, test_labels=labels[:2],
                          parts={"fold1": np.arange(6), "fold2": np.arange(6, 12)},
                          duplicates=dups, near_threshold=THRESHOLD, split={}, normalisation=[])
    assert [(p.part_a, p.part_b) for p in report.cross_split()] == [
        ("fold1", "fold2"), ("fold1", "test")]  # 7~8 lie in one fold: not a leak
    dropped = plan_drop(report, droppable={"fold1", "fold2"})
    assert dropped.tolist() == [3, 7]  # fold2's image of the fold pair; the pool's, not test's


def test_closest_candidates_are_reported_when_none_is_flagged() -> None:
    labels = np.arange(12) % 2
    closest = Pairs(a=np.array([2, 5]), b=np.array([9, 12]),  # 12: test image 0
                    distance=np.array([0.03, 0.02]), shift=np.array([[1, 0], [0, -1]], np.int8))
    dups = Duplicates(a=np.zeros(0, np.int64), b=np.zeros(0, np.int64), distance=np.zeros(0),
                      exact=np.zeros(0, bool), shift=np.zeros((0, 2), np.int8), candidates=2,
                      closest=closest)
    report = build_report(train_labels=labels, test_labels=labels[:2],
                          parts={"train": np.arange(4, 12), "val": np.arange(4)},
                          duplicates=dups, near_threshold=THRESHOLD,
                          split={"data_fingerprint": "d", "split_fingerprint": "s"},
                          normalisation=[])
    assert report.closest == (  # closest first, in split order, as candidates not duplicates
        DuplicatePair("candidate", "train", 5, "test", 0, 0.02, (0, -1)),
        DuplicatePair("candidate", "train", 9, "val", 2, 0.03, (-1, 0)))  # swapped: shift too
    assert not report.cross_split()  # a candidate is no duplicate: `run` is not refused
    markdown = report.to_markdown()
    assert "No pair is flagged: the closest candidate pairs" in markdown  # says what they are
    assert "1. candidate train[5]~test[0]: distance 0.0200, aligned test moved by (0, -1)" in (
        markdown)  # numbered in the order of the picture


def test_val_test_duplicates_cannot_be_dropped_from_train(tmp_path: Path) -> None:
    planted = write_planted_mnist(tmp_path / "p")
    files = find_mnist(planted.directory, verify=False)
    assert files is not None  # the planted IDX files are found
    train, test = files.load("train"), files.load("test")
    split = stratified_split(train.labels, val_fraction=VAL_FRACTION, seed=SEED)
    test.images[50] = train.images[split.val[0][-1]]  # validation image leaked into test
    dups = find_duplicates(np.concatenate([train.images, test.images]),
                           near_threshold=THRESHOLD)
    report = build_report(train_labels=train.labels, test_labels=test.labels,
                          parts=split.parts(), duplicates=dups,
                          near_threshold=THRESHOLD, split={}, normalisation=[])
    with pytest.raises(DataError, match="between val and test .* cannot fix"):
        plan_drop(report, droppable={"train"})


def test_run_data_is_refused_with_cross_split_duplicates(planted: Planted) -> None:
    files = find_mnist(planted.directory, verify=False)
    assert files is not None  # the planted IDX files are found
    with pytest.raises(DataError, match=r"4 duplicate image pairs cross the split \(train/val: "
                                        r"1 exact \+ 1 near, train/test: 1 exact \+ 1 near"):
        prepare_audited_data(files, val_fraction=VAL_FRACTION, seed=SEED, cv_folds=None,
                             near_threshold=THRESHOLD, drop_duplicates=False,
                             device=torch.device("cpu"))


def test_drop_duplicates_removes_them_from_train_and_refits(planted: Planted) -> None:
    files = find_mnist(planted.directory, verify=False)
    assert files is not None  # the planted IDX files are found
    audited = prepare_audited_data(files, val_fraction=VAL_FRACTION, seed=SEED, cv_folds=None,
                                   near_threshold=THRESHOLD, drop_duplicates=True,
                                   device=torch.device("cpu"))
    dropped = sorted(k[2] for k in planted.cross)
    report, data = audited.report, audited.data
    assert list(report.dropped) == dropped  # the train side of each pair, nothing else
    assert not report.cross_split()  # the split that runs is clean
    assert data.k == 1  # holdout without --cv-folds
    fold = data.fold(0)
    assert len(fold.train) == 300 - 4 and len(fold.val) == 100  # val keeps every image
    clean = stratified_split(files.load("train").labels, val_fraction=VAL_FRACTION, seed=SEED)
    assert data.split_fingerprint != clean.fingerprint(data.data_fingerprint)  # a new split
    expected = Normalizer.fit(files.load("train").images[np.setdiff1d(clean.train[0], dropped)])
    assert report.normalisation[0]["mean"] == expected.mean  # refitted on the cleaned train
    assert report.split["split_fingerprint"] == data.split_fingerprint  # report = data


def test_cv_folds_are_normalised_on_their_own_train_part(planted: Planted) -> None:
    files = find_mnist(planted.directory, verify=False)
    assert files is not None  # the planted IDX files are found
    audited = prepare_audited_data(files, val_fraction=VAL_FRACTION, seed=SEED, cv_folds=3,
                                   near_threshold=0.0, drop_duplicates=True,
                                   device=torch.device("cpu"))
    data = audited.data
    assert data.k == 3  # --cv-folds gives folds, not a holdout split
    full = files.load("train")
    fold = data.fold(1)
    train, val = data.partition.train[1], data.partition.val[1]
    fitted = Normalizer.fit(full.images[train])
    assert fold.normalizer == fitted  # statistics of the fold's train part, never its val
    reference = to_tensor_set(full.images[val], full.labels[val], fitted, torch.device("cpu"))
    assert torch.equal(fold.val.x, reference.x)  # device slices equal the holdout transform
    assert audited.report.dropped  # exact duplicates across folds were dropped from the pool
