"""Near-duplicate matching: invariant to brightness, contrast, noise and one-pixel shifts.

Recall is measured on planted pairs of each kind: on synthetic pen-drawn digits here, and on
the real MNIST in the test marked slow. A copy must be found at the default threshold; two
digits with different labels must never be.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_pipeline import find_mnist
from data_pipeline.duplicates import (
    SHIFTS,
    aligned_distance,
    find_duplicates,
    normalise_intensity,
    shifted,
)
from study.config import StudyConfig

THRESHOLD = StudyConfig().near_duplicate_threshold
NOISE_SIGMA = 8.0  # grey levels of the additive Gaussian noise planted
MIN_RECALL = 0.95
MOVES = [shift for shift in SHIFTS if shift != (0, 0)]  # the 8 one-pixel directions

# Each digit as pen strokes through control points in a unit box (x right, y down).
_RING = [(0.5 + 0.4 * np.sin(t), 0.5 - 0.5 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 17)]
_STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [_RING],
    1: [[(0.55, 0.0), (0.45, 1.0)]],
    2: [[(0.1, 0.25), (0.35, 0.0), (0.75, 0.05), (0.85, 0.35), (0.1, 1.0), (0.95, 1.0)]],
    3: [[(0.1, 0.1), (0.8, 0.05), (0.4, 0.45), (0.9, 0.7), (0.5, 1.0), (0.1, 0.9)]],
    4: [[(0.7, 1.0), (0.7, 0.0), (0.05, 0.65), (0.95, 0.65)]],
    5: [[(0.9, 0.0), (0.2, 0.0), (0.15, 0.45), (0.7, 0.45), (0.85, 0.75), (0.5, 1.0),
         (0.1, 0.9)]],
    6: [[(0.75, 0.0), (0.25, 0.45), (0.15, 0.85), (0.5, 1.0), (0.85, 0.8), (0.6, 0.55),
         (0.2, 0.65)]],
    7: [[(0.05, 0.0), (0.95, 0.0), (0.35, 1.0)]],
    8: [[(x, 0.25 + (y - 0.5) / 2) for x, y in _RING],
        [(x, 0.75 + (y - 0.5) / 2) for x, y in _RING]],
    9: [[(x, 0.3 + (y - 0.5) * 0.6) for x, y in _RING], [(0.9, 0.3), (0.75, 1.0)]],
}


def pen_digits(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MNIST look-alikes [N, 28, 28] uint8: jittered, slanted pen strokes with soft edges,
    saturated cores, in a 20x20 box, centred on their ink like MNIST's digits."""
    ys, xs = np.mgrid[0:28, 0:28].astype(np.float64)
    pixels = np.stack([xs.ravel(), ys.ravel()], axis=1)  # [784, 2] pixel centres
    images = np.zeros((len(labels), 28, 28), np.uint8)
    for i, label in enumerate(labels):
        slant, width = rng.uniform(-0.25, 0.25), rng.uniform(0.8, 1.8)
        distance = np.full(len(pixels), np.inf)
        for stroke in _STROKES[int(label)]:
            points = np.array(stroke) + rng.normal(0.0, 0.04, size=(len(stroke), 2))
            points[:, 0] += slant * (0.5 - points[:, 1])
            points = 5.0 + 18.0 * points  # an 18x18 box: with the pen, about MNIST's 20x20
            for p, q in zip(points[:-1], points[1:], strict=True):
                distance = np.minimum(distance, _to_segment(pixels, p, q))
        ink = np.clip(width + 0.5 - distance, 0.0, 1.0).reshape(28, 28)  # 1-pixel soft edge
        images[i] = _centred(np.rint(255 * ink).astype(np.uint8))
    return images


def _to_segment(pixels: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    t = np.clip((pixels - p) @ (q - p) / max(float((q - p) @ (q - p)), 1e-9), 0.0, 1.0)
    return np.linalg.norm(pixels - (p + t[:, None] * (q - p)), axis=1)


def _centred(image: np.ndarray) -> np.ndarray:
    # Moved so its ink centroid is mid-frame, as far as a blank edge pixel is kept all round.
    ys, xs = np.nonzero(image)
    weights = image[ys, xs].astype(np.float64)
    dy = int(np.clip(round(13.5 - float(ys @ weights / weights.sum())), 1 - ys.min(),
                     26 - ys.max()))
    dx = int(np.clip(round(13.5 - float(xs @ weights / weights.sum())), 1 - xs.min(),
                     26 - xs.max()))
    return np.roll(image, (dy, dx), axis=(0, 1))


def _clipped(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def plant(images: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A copy of each of IMAGES changed in one way, as a uint8 file would store it."""
    x = images.astype(np.float64)
    n = len(images)
    if kind == "brightness":  # offsets of 1..10 grey levels, both signs, the extremes included
        offsets = np.resize([10, -10, 3, -3, *rng.integers(1, 11, n) * rng.choice([-1, 1], n)], n)
        return _clipped(x + offsets[:, None, None])
    if kind == "contrast":
        gains = np.resize([0.9, 1.1, 0.95, *rng.uniform(0.9, 1.1, n)], n)
        return _clipped(x * gains[:, None, None])
    if kind == "noise":
        return _clipped(x + rng.normal(0.0, NOISE_SIGMA, x.shape))
    if kind == "shift":  # the 8 directions in turn
        return np.concatenate([shifted(images[i:i + 1], *MOVES[i % 8]) for i in range(n)])
    raise ValueError(f"unknown kind {kind!r}")


KINDS = ("brightness", "contrast", "noise", "shift")


def planted_recall(images: np.ndarray, labels: np.ndarray, *, per_kind: int,
                   rng: np.random.Generator) -> tuple[dict[str, float], np.ndarray]:
    """Recall per kind of copies planted among IMAGES; and the flagged pairs [n, 2] whose
    labels differ (false alarms)."""
    originals = {kind: rng.choice(len(images), per_kind, replace=False) for kind in KINDS}
    copies = [plant(images[originals[kind]], kind, rng) for kind in KINDS]
    every = np.concatenate([images, *copies])
    every_label = np.concatenate([labels, *(labels[originals[kind]] for kind in KINDS)])
    dups = find_duplicates(every, near_threshold=THRESHOLD)
    flagged = set(zip(dups.a.tolist(), dups.b.tolist(), strict=True))
    recall, start = {}, len(images)
    for kind in KINDS:
        pairs = zip(originals[kind].tolist(), range(start, start + per_kind), strict=True)
        recall[kind] = float(np.mean([pair in flagged for pair in pairs]))
        start += per_kind
    wrong = every_label[dups.a] != every_label[dups.b]
    return recall, np.stack([dups.a[wrong], dups.b[wrong]], axis=1)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    labels = np.tile(np.arange(10), 40)
    return pen_digits(labels, np.random.default_rng(0)), labels


def test_the_distance_is_the_ink_share_beyond_the_dead_zone() -> None:
    x = np.zeros((1, 28, 28), np.uint8)
    x[0, 10, 5:15] = 255  # ten ink pixels
    y = x.copy()
    y[0, 10, 5] = 155  # one pixel 100 grey levels lighter: 100 - 38 beyond the dead zone
    y[0, 10, 6] = 230  # one 25 lighter: inside the dead zone, no difference
    distance, shift = aligned_distance(x, y)
    assert distance[0] == pytest.approx(62 / (10 * 255))  # sum(max) is x's ink
    assert shift.tolist() == [[0, 0]]  # unshifted wins


@pytest.mark.parametrize(("gain", "offset"), [(1.0, 10), (1.0, -10), (1.0, 3), (0.9, 0),
                                              (1.1, 0), (0.95, 3), (1.1, -10)])
def test_affine_intensity_changes_vanish(digits: tuple[np.ndarray, np.ndarray], gain: float,
                                         offset: int) -> None:
    images = digits[0][:50]
    copies = _clipped(images.astype(np.float64) * gain + offset)
    distance, _ = aligned_distance(normalise_intensity(images), normalise_intensity(copies))
    assert distance.max() <= THRESHOLD / 10  # undone by the normalisation, up to rounding


@pytest.mark.parametrize("move", MOVES)
def test_one_pixel_shifts_are_aligned(digits: tuple[np.ndarray, np.ndarray],
                                      move: tuple[int, int]) -> None:
    images = normalise_intensity(digits[0][:50])
    distance, shift = aligned_distance(images, shifted(images, *move))
    assert distance.max() == 0.0  # the digits sit inside the frame: nothing lost, all aligned
    assert (shift == [-move[0], -move[1]]).all()  # the shift that moves the copy back


def test_noise_stays_inside_the_dead_zone(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images = digits[0][:50]
    noisy = plant(images, "noise", np.random.default_rng(1))
    distance, _ = aligned_distance(normalise_intensity(images), normalise_intensity(noisy))
    assert distance.max() <= THRESHOLD / 2  # sigma 8 grey levels: far under the threshold


def test_different_digits_are_far_apart(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    a, b = np.triu_indices(100, k=1)
    other = labels[a] != labels[b]
    distance, _ = aligned_distance(normalise_intensity(images[a[other]]),
                                   normalise_intensity(images[b[other]]))
    assert distance.min() > 10 * THRESHOLD  # no other digit comes anywhere near


def test_planted_pairs_are_found_and_nothing_across_labels(
        digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = digits
    recall, false_alarms = planted_recall(images, labels, per_kind=40,
                                          rng=np.random.default_rng(2))
    assert min(recall.values()) >= MIN_RECALL, recall  # every kind of copy is found
    assert false_alarms.tolist() == []  # and no two digits of different labels


def test_identical_bytes_are_exact_not_near(digits: tuple[np.ndarray, np.ndarray]) -> None:
    images = digits[0][:20]
    every = np.concatenate([images, images[:1], _clipped(images[1:2] * 0.9)])
    dups = find_duplicates(every, near_threshold=THRESHOLD)
    found = {(a, b): exact for a, b, exact in zip(dups.a.tolist(), dups.b.tolist(),
                                                  dups.exact.tolist(), strict=True)}
    assert found == {(0, 20): True, (1, 21): False}  # the copy is exact, the dimmed one near
    assert dups.closest.a.tolist()[:1] == [1]  # byte-identical pairs are not "closest" pairs


@pytest.mark.slow
def test_planted_pairs_in_real_mnist(real_mnist_dir: Path) -> None:
    files = find_mnist(real_mnist_dir)
    assert files is not None  # the real MNIST is there (the fixture checked)
    train, test = files.load("train"), files.load("test")
    images = np.concatenate([train.images, test.images])
    labels = np.concatenate([train.labels, test.labels])
    recall, false_alarms = planted_recall(images, labels, per_kind=200,
                                          rng=np.random.default_rng(0))
    assert min(recall.values()) >= MIN_RECALL, recall  # each kind, among 70k real digits
    assert false_alarms.tolist() == []  # and no pair of different labels is flagged
