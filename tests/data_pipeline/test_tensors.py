from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from data_pipeline import (
    MnistFiles,
    Normalizer,
    SearchData,
    find_mnist,
    prepare_search_data,
    prepare_test_data,
    shuffled_batches,
    stratified_split,
    to_tensor_set,
    write_idx,
)
from tests.synthetic import write_synthetic_mnist

CPU = torch.device("cpu")
VAL_FRACTION = 0.25
SEED = 5


def test_normalizer_fit_stats() -> None:
    images = np.array([[[0, 255]], [[255, 255]]], dtype=np.uint8)  # pixels 0, 1, 1, 1
    normalizer = Normalizer.fit(images)
    assert normalizer.mean == pytest.approx(0.75)  # mean of pixels scaled to [0, 1]
    assert normalizer.std == pytest.approx(np.sqrt(0.1875))  # population std, same scale


def test_normalizer_fit_from_the_histogram_equals_the_pixelwise_moments() -> None:
    images = np.random.default_rng(1).integers(0, 256, size=(500, 28, 28), dtype=np.uint8)
    scaled = images.astype(np.float64) / 255.0
    normalizer = Normalizer.fit(images)
    assert normalizer.mean == pytest.approx(scaled.mean(), rel=1e-12)
    assert normalizer.std == pytest.approx(scaled.std(), rel=1e-12)
    with pytest.raises(ValueError, match="uint8"):  # the histogram has 256 levels only
        Normalizer.fit(scaled)


def test_normalizer_apply() -> None:
    images = np.random.default_rng(0).integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    normalizer = Normalizer.fit(images)
    x = normalizer.apply(images, CPU)
    assert x.shape == (6, 1, 28, 28) and x.dtype == torch.float32  # [N, 1, 28, 28] float32
    expected = (images.astype(np.float64) / 255.0 - normalizer.mean) / normalizer.std
    np.testing.assert_allclose(x[:, 0].numpy(), expected, atol=1e-5)  # (x/255 - mean) / std
    # Normalising with its own statistics gives zero mean and unit std.
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(x.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)


@pytest.fixture
def skewed_files(tmp_path: Path) -> MnistFiles:
    """A training set whose validation images are bright and train images dark.

    The split depends only on labels, seed and fraction, so it can be computed first and
    the pixels chosen so that train, val and full statistics differ clearly.
    """
    directory = write_synthetic_mnist(tmp_path / "mnist")
    labels = np.random.default_rng(1).permutation(np.arange(400) % 10).astype(np.uint8)
    split = stratified_split(labels.astype(np.int64), val_fraction=VAL_FRACTION, seed=SEED)
    rng = np.random.default_rng(2)
    images = np.empty((400, 28, 28), dtype=np.uint8)
    train, val = split.train[0], split.val[0]
    images[train] = rng.integers(0, 40, size=(len(train), 28, 28))
    images[val] = rng.integers(200, 256, size=(len(val), 28, 28))
    write_idx(images, directory / "train-images-idx3-ubyte.gz", compress=True)
    write_idx(labels, directory / "train-labels-idx1-ubyte.gz", compress=True)
    files = find_mnist(directory, verify=False)
    assert files is not None
    return files


@pytest.fixture
def skewed(skewed_files: MnistFiles) -> SearchData:
    return prepare_search_data(skewed_files, val_fraction=VAL_FRACTION, seed=SEED, device=CPU)


def test_normalizer_fitted_on_train_split_only(
    skewed_files: MnistFiles, skewed: SearchData
) -> None:
    full = skewed_files.load("train")
    from_train = Normalizer.fit(full.images[skewed.partition.train[0]])
    from_full = Normalizer.fit(full.images)
    from_val = Normalizer.fit(full.images[skewed.partition.val[0]])
    normalizer = skewed.fold(0).normalizer
    assert normalizer == skewed.normalizers[0] == from_train  # the train split's, exactly
    assert abs(normalizer.mean - from_full.mean) > 0.1  # not the whole training set
    assert abs(normalizer.mean - from_val.mean) > 0.5  # and not the validation split


def test_val_normalised_with_train_stats(skewed_files: MnistFiles, skewed: SearchData) -> None:
    full = skewed_files.load("train")
    fold = skewed.fold(0)
    mean, std = fold.normalizer.mean, fold.normalizer.std
    for tensors, index in ((fold.train, skewed.partition.train[0]),
                           (fold.val, skewed.partition.val[0])):
        expected = (full.images[index].astype(np.float64) / 255.0 - mean) / std
        # Both sides use the train statistics, in split order.
        np.testing.assert_allclose(tensors.x[:, 0].numpy(), expected, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(tensors.y.numpy(), full.labels[index])  # labels aligned
    assert float(fold.val.x.mean()) > 5.0  # bright val images stay far from zero mean


def test_search_data_shapes(search_data: SearchData) -> None:
    fold = search_data.fold(0)
    assert search_data.k == 1  # holdout: one fold
    assert len(fold.train) == 300 and len(fold.val) == 100  # 400 split 3:1
    assert search_data.images.dtype == torch.uint8  # the file on the device once, as bytes
    for tensors in (fold.train, fold.val):
        assert tensors.x.shape == (len(tensors), 1, 28, 28)  # [N, 1, 28, 28]
        assert tensors.x.dtype == torch.float32  # float32 inputs
        assert tensors.y.dtype == torch.int64  # int64 class labels for cross-entropy
        assert tensors.x.device == CPU and tensors.y.device == CPU  # on the requested device
    assert search_data.split_fingerprint == search_data.partition.fingerprint(
        search_data.data_fingerprint
    )  # the split is named against the data it splits


def test_a_fold_is_sliced_once_and_kept(search_data: SearchData) -> None:
    assert search_data.fold(0) is search_data.fold(0)  # a holdout study slices once
    folds = dataclasses.replace(search_data)  # a fresh copy keeps no slice of the original
    assert folds.fold(0) is not search_data.fold(0)


def test_prepare_test_data_uses_each_given_normalizer(synthetic_files: MnistFiles) -> None:
    normalizers = (Normalizer(mean=0.5, std=0.25), Normalizer(mean=0.1, std=0.5))
    tests = prepare_test_data(synthetic_files, normalizers=normalizers, device=CPU)
    raw = synthetic_files.load("test")
    assert len(tests) == 2  # one view of the test set per fold model
    for test, z in zip(tests, normalizers, strict=True):
        expected = (raw.images.astype(np.float64) / 255.0 - z.mean) / z.std
        assert test.x.shape == (100, 1, 28, 28) and test.x.dtype == torch.float32  # layout
        np.testing.assert_allclose(test.x[:, 0].numpy(), expected, atol=1e-5)  # its stats
        np.testing.assert_array_equal(test.y.numpy(), raw.labels)  # all labels, in order


def test_to_tensor_set_len() -> None:
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    tensors = to_tensor_set(images, np.array([1, 2, 3]), Normalizer(0.0, 1.0), CPU)
    assert len(tensors) == 3  # len counts examples
    assert tensors.y.dtype == torch.int64  # labels widened whatever came in


@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (12, 4), (5, 8), (1, 1), (100, 32)])
def test_shuffled_batches_cover_once(n: int, batch_size: int) -> None:
    generator = torch.Generator().manual_seed(0)
    batches = list(shuffled_batches(n, batch_size, generator, CPU))
    everything = torch.cat(batches)
    assert sorted(everything.tolist()) == list(range(n))  # every index exactly once
    assert all(len(b) == batch_size for b in batches[:-1])  # full batches...
    assert len(batches[-1]) == (n % batch_size or batch_size)  # ...and a short last one
    assert everything.dtype == torch.int64  # usable as an index tensor


def test_shuffled_batches_deterministic() -> None:
    def order(seed: int) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        return torch.cat(list(shuffled_batches(50, 7, generator, CPU))).tolist()

    assert order(3) == order(3)  # same seed, same order
    assert order(3) != order(4)  # another seed, another order
    assert order(3) != list(range(50))  # actually shuffled


def test_shuffled_batches_advance_generator() -> None:
    generator = torch.Generator().manual_seed(0)
    first = torch.cat(list(shuffled_batches(50, 7, generator, CPU))).tolist()
    second = torch.cat(list(shuffled_batches(50, 7, generator, CPU))).tolist()
    # Consecutive epochs on one generator see different orders.
    assert first != second
