"""The partition of the training file: one stratified holdout fold, or K stratified folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_pipeline import (
    DataError,
    Partition,
    find_mnist,
    make_partition,
    stratified_folds,
    stratified_split,
)


def _imbalanced_labels(seed: int = 0) -> np.ndarray:
    """1,000 shuffled labels with classes of very different sizes (10 to 190)."""
    labels = np.repeat(np.arange(10), [10 + 20 * k for k in range(10)])
    np.random.default_rng(seed).shuffle(labels)
    return labels


@pytest.mark.parametrize("val_fraction", [0.1, 0.25, 0.5])
def test_partition(val_fraction: float) -> None:
    labels = _imbalanced_labels()
    split = stratified_split(labels, val_fraction=val_fraction, seed=3)
    assert split.k == 1 and split.val_fraction == val_fraction  # holdout is one fold
    train, val = split.train[0], split.val[0]
    assert np.intersect1d(train, val).size == 0  # no image in both
    # Together they are every index exactly once.
    np.testing.assert_array_equal(
        np.sort(np.concatenate([train, val])), np.arange(len(labels))
    )
    assert np.all(np.diff(train) > 0)  # train indices sorted (and unique)
    assert np.all(np.diff(val) > 0)  # val indices sorted (and unique)
    assert train.dtype == np.int64 and val.dtype == np.int64  # index dtype
    assert len(val) == int(np.ceil(val_fraction * len(labels)))  # the requested size
    assert split.seed == 3  # provenance recorded


@pytest.mark.parametrize("val_fraction", [0.1, 0.25, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_per_class(val_fraction: float, seed: int) -> None:
    labels = _imbalanced_labels()
    split = stratified_split(labels, val_fraction=val_fraction, seed=seed)
    val_counts = np.bincount(labels[split.val[0]], minlength=10)
    full_counts = np.bincount(labels, minlength=10)
    # Each class is held out in proportion, off by at most one image.
    assert np.all(np.abs(val_counts - val_fraction * full_counts) <= 1.0)


def test_same_seed_same_split() -> None:
    labels = _imbalanced_labels()
    a = stratified_split(labels, val_fraction=0.2, seed=7)
    b = stratified_split(labels, val_fraction=0.2, seed=7)
    np.testing.assert_array_equal(a.train[0], b.train[0])  # reproducible for a seed
    np.testing.assert_array_equal(a.val[0], b.val[0])


def test_other_seed_other_split() -> None:
    labels = _imbalanced_labels()
    a = stratified_split(labels, val_fraction=0.2, seed=7)
    b = stratified_split(labels, val_fraction=0.2, seed=8)
    assert not np.array_equal(a.val[0], b.val[0])  # the seed really drives the draw


def _fingerprint(seed: int = 0, val_fraction: float = 0.2, data: str = "data-a") -> str:
    return stratified_split(_imbalanced_labels(), val_fraction=val_fraction,
                            seed=seed).fingerprint(data)


def test_fingerprint_equal_for_equal_split() -> None:
    # Two computations of the same split of the same data agree.
    assert _fingerprint() == _fingerprint()
    assert len(_fingerprint()) == 16  # a short hex name


@pytest.mark.parametrize(
    "other", [{"seed": 1}, {"val_fraction": 0.3}, {"data": "data-b"}],
    ids=["seed", "val_fraction", "data"],
)
def test_fingerprint_differs(other: dict[str, object]) -> None:
    # Another seed, fraction or data set is another split.
    assert _fingerprint(**other) != _fingerprint()  # type: ignore[arg-type]


def test_fingerprint_covers_indices() -> None:
    split = stratified_split(_imbalanced_labels(), val_fraction=0.2, seed=0)
    train, val = split.train[0], split.val[0]
    swapped = Partition(
        train=(np.sort(np.concatenate([train[1:], val[:1]])),),
        val=(np.sort(np.concatenate([val[1:], train[:1]])),),
        seed=split.seed, val_fraction=split.val_fraction,
    )
    # Same metadata but other indices: the fingerprint tells them apart.
    assert swapped.fingerprint("d") != split.fingerprint("d")


@pytest.mark.parametrize("val_fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_invalid_val_fraction(val_fraction: float) -> None:
    # Outside (0, 1) is refused and the value is shown.
    with pytest.raises(DataError, match=r"val_fraction must be in \(0, 1\), but got val_fraction="):
        stratified_split(_imbalanced_labels(), val_fraction=val_fraction, seed=0)


@pytest.mark.parametrize(
    ("n", "val_fraction"), [(10, 0.5), (30, 0.1), (30, 0.9), (19, 0.5)],
)
def test_too_few_samples(n: int, val_fraction: float) -> None:
    labels = np.arange(n) % 10
    # Either side would miss a class: refused with the counts in the message.
    with pytest.raises(DataError, match=f"{n} images cannot be split"):
        stratified_split(labels, val_fraction=val_fraction, seed=0)


def test_class_with_one_member() -> None:
    labels = np.array([0] * 50 + [1] * 50 + [2])
    # A class too small to appear on both sides is a DataError, like any other bad split.
    with pytest.raises(DataError, match="class 2 has 1 image"):
        stratified_split(labels, val_fraction=0.1, seed=0)


def test_folds_cover_the_training_file_once_each_stratified() -> None:
    labels = np.repeat(np.arange(10), 30)
    folds = stratified_folds(labels, k=3, seed=0)
    assert folds.k == 3 and folds.val_fraction is None
    np.testing.assert_array_equal(np.sort(np.concatenate(folds.val)), np.arange(300))  # cover
    assert sum(len(v) for v in folds.val) == 300  # and each index once: disjoint
    for k in range(3):
        assert np.bincount(labels[folds.val[k]]).tolist() == [10] * 10  # stratified
        assert np.intersect1d(folds.train[k], folds.val[k]).size == 0
        others = np.sort(np.concatenate([v for i, v in enumerate(folds.val) if i != k]))
        np.testing.assert_array_equal(folds.train[k], others)  # trains on the other folds
    assert list(folds.parts()) == ["fold1", "fold2", "fold3"]
    assert folds.trained_parts() == {"fold1", "fold2", "fold3"}  # each trains another fold


@pytest.mark.parametrize("k", [1, 11])
def test_impossible_fold_counts_are_refused(k: int) -> None:
    with pytest.raises(DataError, match="cv_folds"):
        stratified_folds(np.repeat(np.arange(10), 10), k=k, seed=0)


def test_holdout_parts_and_what_may_be_dropped() -> None:
    split = stratified_split(_imbalanced_labels(), val_fraction=0.2, seed=0)
    assert list(split.parts()) == ["train", "val"]
    assert split.trained_parts() == {"train"}  # a validation image is never dropped
    dropped = np.array([split.train[0][0], split.val[0][0]])
    smaller = split.without(dropped)
    assert len(smaller.train[0]) == len(split.train[0]) - 1
    assert len(smaller.val[0]) == len(split.val[0]) - 1
    assert smaller.fingerprint("d") != split.fingerprint("d")


def test_partition_picks_folds_only_when_asked() -> None:
    labels = _imbalanced_labels()
    assert make_partition(labels, seed=0, val_fraction=0.2, cv_folds=None).k == 1
    assert make_partition(labels, seed=0, val_fraction=0.2, cv_folds=4).k == 4


# Fingerprints of partitions made before holdout became one fold (commit 995b7b7's
# data_pipeline/split.py and folds.py): a study created then must still match when resumed.
@pytest.mark.parametrize(("cv_folds", "dropped", "expected"), [
    (None, [], "b7dbc9e4132d8706"), (3, [], "1b5c4db756a278df"),
    (None, [0, 8], "f2f53e4ffdf58c8f"), (3, [0, 12], "27f443afae623306"),
])
def test_fingerprints_of_earlier_releases_are_unchanged(cv_folds: int | None,
                                                        dropped: list[int],
                                                        expected: str) -> None:
    folds = make_partition(np.arange(300) % 10, seed=7, val_fraction=0.2, cv_folds=cv_folds)
    assert folds.without(np.array(dropped, np.int64)).fingerprint("abc") == expected


@pytest.mark.slow
def test_real_mnist_fingerprints_are_unchanged(real_mnist_dir: Path) -> None:
    files = find_mnist(real_mnist_dir)
    assert files is not None
    labels, data = files.load("train").labels, files.fingerprint()
    assert data == "ba1b595976fb7268"
    # The defaults (seed 0, val_fraction 0.1) and 5 folds, as computed before the change.
    assert stratified_split(labels, val_fraction=0.1, seed=0).fingerprint(data) == \
        "cffcf8d455406a56"
    assert stratified_folds(labels, k=5, seed=0).fingerprint(data) == "19a187bb75114272"
