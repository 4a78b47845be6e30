from __future__ import annotations

import numpy as np
import pytest

from data_pipeline import DataError, Split, stratified_split


def _imbalanced_labels(seed: int = 0) -> np.ndarray:
    """1,000 shuffled labels with classes of very different sizes (10 to 190)."""
    labels = np.repeat(np.arange(10), [10 + 20 * k for k in range(10)])
    np.random.default_rng(seed).shuffle(labels)
    return labels


@pytest.mark.parametrize("val_fraction", [0.1, 0.25, 0.5])
def test_partition(val_fraction: float) -> None:
    labels = _imbalanced_labels()
    split = stratified_split(labels, val_fraction=val_fraction, seed=3)
    assert np.intersect1d(split.train, split.val).size == 0  # no image in both
    # Together they are every index exactly once.
    np.testing.assert_array_equal(
        np.sort(np.concatenate([split.train, split.val])), np.arange(len(labels))
    )
    assert np.all(np.diff(split.train) > 0)  # train indices sorted (and unique)
    assert np.all(np.diff(split.val) > 0)  # val indices sorted (and unique)
    assert split.train.dtype == np.int64 and split.val.dtype == np.int64  # index dtype
    assert len(split.val) == int(np.ceil(val_fraction * len(labels)))  # the requested size
    assert split.seed == 3 and split.val_fraction == val_fraction  # provenance recorded


@pytest.mark.parametrize("val_fraction", [0.1, 0.25, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_per_class(val_fraction: float, seed: int) -> None:
    labels = _imbalanced_labels()
    split = stratified_split(labels, val_fraction=val_fraction, seed=seed)
    val_counts = np.bincount(labels[split.val], minlength=10)
    full_counts = np.bincount(labels, minlength=10)
    # Each class is held out in proportion, off by at most one image.
    assert np.all(np.abs(val_counts - val_fraction * full_counts) <= 1.0)


def test_same_seed_same_split() -> None:
    labels = _imbalanced_labels()
    a = stratified_split(labels, val_fraction=0.2, seed=7)
    b = stratified_split(labels, val_fraction=0.2, seed=7)
    np.testing.assert_array_equal(a.train, b.train)  # reproducible for a seed
    np.testing.assert_array_equal(a.val, b.val)


def test_other_seed_other_split() -> None:
    labels = _imbalanced_labels()
    a = stratified_split(labels, val_fraction=0.2, seed=7)
    b = stratified_split(labels, val_fraction=0.2, seed=8)
    assert not np.array_equal(a.val, b.val)  # the seed really drives the draw


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
    swapped = Split(
        train=np.sort(np.concatenate([split.train[1:], split.val[:1]])),
        val=np.sort(np.concatenate([split.val[1:], split.train[:1]])),
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
