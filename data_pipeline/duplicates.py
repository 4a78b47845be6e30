"""Finding duplicate images: exact (content hash) and near (normalised, aligned pixels).

Exact duplicates have identical pixel bytes: images are grouped by a BLAKE2b-128 digest of
their 784 bytes (a collision is as likely as a cosmic-ray bit flip, so it is not re-checked).

Near duplicates are judged on intensity-normalised images, at their best alignment:
1. Normalisation undoes an affine intensity change a*x + b (a > 0): each image is stretched
   so that its background level (the median pixel; most of a digit image is background)
   becomes 0 and its ink level (its 10th brightest pixel) becomes 255, clipped to [0, 255].
   Brightness offsets and contrast scalings then vanish up to uint8 rounding and the
   clipping of the copy at 0 and 255.
2. The distance of two normalised images x, y is the Ruzicka (weighted Jaccard) distance with
   a dead zone: sum(max(|x - y| - 38, 0)) / sum(max(x, y)), the share of the pair's ink that
   differs by more than DEAD_ZONE (0.15 of the ink level: 38 grey levels).
   Differences inside the dead zone are what noise, re-quantisation and the clipping of an
   intensity change leave behind; a stroke that one image has and the other has not counts
   almost fully. The distance is the smallest over the 9 shifts of y by -1, 0 or +1 pixel in
   each axis (zero fill, which is background after normalisation), so that copies shifted
   by one pixel are found at their alignment; the shift is reported with the pair.
3. Candidates, so that 70k images take seconds and not 9 * 70k^2 / 2 pixel comparisons:
   each image is floored (ink under the dead zone set to background, which removes noise on
   the background), moved so that its ink centroid lies in one canonical pixel (a copy
   shifted by a pixel has its centroid shifted by exactly that pixel, so both land on the
   same canonical image), and projected onto the leading principal components of the data.
   An image whose centroid lies within CENTROID_MARGIN of a pixel edge is indexed at the
   neighbouring position(s) too, since noise could move its centroid across. Pairs whose
   projections lie within SEARCH_RADIUS (a k-d tree on the first components, then all of
   them) are verified on the pixels by step 2. The radius is calibrated on planted copies
   (tests/data_pipeline/test_duplicates.py); pairs at a distance far above the default
   threshold may lie outside it and are then not reported.
A pair at distance <= threshold whose bytes differ is a near duplicate (distance 0 is
possible: the dead zone absorbs noise); identical bytes make it an exact duplicate instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from scipy.linalg import eigh
from scipy.spatial import cKDTree

from data_pipeline.errors import DataError

DEAD_ZONE = 0.15  # of the ink level: smaller pixel differences count as none
DEAD_LEVELS = round(DEAD_ZONE * 255)  # the same in normalised grey levels: 38
SHIFTS = tuple((dy, dx) for dy in (0, -1, 1) for dx in (0, -1, 1))  # (0, 0) first: wins ties
# L2 over the principal components, in units of the ink level. Planted copies lie within
# 0.45 of their original (contrast 1.1, clipped, is the farthest; noise of sigma 8: 0.26).
SEARCH_RADIUS = 0.6
CENTROID_MARGIN = 0.15  # pixels: noise moves a centroid by up to 0.12
CLOSEST = 16  # closest verified pairs kept for the report, duplicates or not
# Above this many pairs in the k-d tree the data is too uniform for the search (e.g. mostly
# blank images): it stops with an error rather than eat memory and minutes. Real MNIST gives
# 1.9M pairs in the tree, of which 15k are verified on the pixels.
MAX_CANDIDATE_PAIRS = 20_000_000
_MIN_INK_RANGE = 16  # grey levels: a near-blank image's faint noise is not blown up to ink
_COMPONENTS, _TREE_COMPONENTS = 24, 6
_PCA_SAMPLE = 5000
_COUNT_SAMPLE = 2000  # probes whose neighbours estimate the number of tree pairs
_CHUNK = 20_000  # pairs verified, or images projected, per step: bounds the memory used


@dataclass(frozen=True)
class Pairs:
    """Image pairs (a < b) with their aligned distance: b moved by shift[i] = (dy, dx)."""

    a: np.ndarray  # int64
    b: np.ndarray  # int64
    distance: np.ndarray  # float64 in [0, 1]
    shift: np.ndarray  # int8 [n, 2]


@dataclass(frozen=True)
class Duplicates:
    """Duplicate pairs (a < b) as indices into the image array that was searched."""

    a: np.ndarray  # int64
    b: np.ndarray  # int64
    distance: np.ndarray  # float64: 0.0 for exact duplicates
    exact: np.ndarray  # bool
    shift: np.ndarray  # int8 [n, 2]: (0, 0) for exact duplicates
    candidates: int  # candidate pairs the search verified on the pixels (for the report)
    closest: Pairs  # the CLOSEST verified pairs of distinct images, whatever the threshold


def find_duplicates(images: np.ndarray, *, near_threshold: float) -> Duplicates:
    """Every exact and near-duplicate pair among IMAGES [N, 28, 28] uint8.

    near_threshold = 0 looks for exact duplicates only (no near search at all).
    """
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images [N, 28, 28], but got {images.dtype} "
                         f"{images.shape}")
    if not 0.0 <= near_threshold < 1.0:
        raise ValueError(f"near_threshold must be in [0, 1), but got {near_threshold=}")
    groups = content_groups(images)
    ea, eb = exact_pairs(groups)
    if near_threshold == 0.0 or len(images) < 2:
        return Duplicates(a=ea, b=eb, distance=np.zeros(len(ea)), exact=np.ones(len(ea), bool),
                          shift=np.zeros((len(ea), 2), np.int8), candidates=0,
                          closest=_no_pairs())
    verified = near_pairs(images)
    distinct = np.nonzero(groups[verified.a] != groups[verified.b])[0]
    near = distinct[verified.distance[distinct] <= near_threshold]
    closest = distinct[np.argsort(verified.distance[distinct], kind="stable")[:CLOSEST]]
    return Duplicates(
        a=np.concatenate([ea, verified.a[near]]), b=np.concatenate([eb, verified.b[near]]),
        distance=np.concatenate([np.zeros(len(ea)), verified.distance[near]]),
        exact=np.concatenate([np.ones(len(ea), bool), np.zeros(len(near), bool)]),
        shift=np.concatenate([np.zeros((len(ea), 2), np.int8), verified.shift[near]]),
        candidates=len(verified.a), closest=_take(verified, closest),
    )


def content_groups(images: np.ndarray) -> np.ndarray:
    """A group number per image, equal exactly when the pixel bytes are (BLAKE2b-128)."""
    flat = np.ascontiguousarray(images.reshape(len(images), 28 * 28))
    digests = np.array([hashlib.blake2b(row.tobytes(), digest_size=16).digest()
                        for row in flat], dtype="S16")
    return np.unique(digests, return_inverse=True)[1].astype(np.int64)


def exact_pairs(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (a < b) of images in one content group."""
    counts = np.bincount(groups)
    a_parts, b_parts = [], []
    for group in np.nonzero(counts > 1)[0]:
        members = np.nonzero(groups == group)[0]  # sorted, so a < b below
        ia, ib = np.triu_indices(len(members), k=1)
        a_parts.append(members[ia])
        b_parts.append(members[ib])
    if not a_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(a_parts).astype(np.int64), np.concatenate(b_parts).astype(np.int64)


def normalise_intensity(images: np.ndarray) -> np.ndarray:
    """IMAGES [N, 28, 28] uint8 stretched so background -> 0 and ink -> 255 (see step 1)."""
    flat = images.reshape(len(images), 28 * 28)
    out = np.empty_like(flat)
    for start in range(0, len(flat), _CHUNK):  # small float temporaries: cache-friendly
        rows = flat[start:start + _CHUNK]
        levels = np.partition(rows, (391, 774), axis=1)  # lower median; 10th brightest
        background = levels[:, 391:392].astype(np.float32)
        ink = np.maximum(levels[:, 774:775] - background, _MIN_INK_RANGE)
        stretched = rows - background
        stretched *= 255.0 / ink
        np.clip(np.rint(stretched, out=stretched), 0, 255, out=stretched)
        out[start:start + _CHUNK] = stretched
    return out.reshape(images.shape)


def aligned_distance(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of normalised images X[i] and Y[i] [n, 28, 28] at Y's best shift (step 2).

    Returns the distances [n] float64 and the shifts [n, 2] int8 that move Y[i] onto X[i].
    """
    best = np.full(len(x), np.inf)
    best_shift = np.zeros(len(x), np.int64)
    padded = np.pad(y, ((0, 0), (1, 1), (1, 1)))
    for number, (dy, dx) in enumerate(SHIFTS):
        moved = padded[:, 1 - dy:29 - dy, 1 - dx:29 - dx]  # moved[r, c] = y[r - dy, c - dx]
        high, low = np.maximum(x, moved), np.minimum(x, moved)  # uint8, no overflow
        beyond = np.maximum(high - low, DEAD_LEVELS) - DEAD_LEVELS  # the dead zone cut off
        beyond = beyond.sum(axis=(1, 2), dtype=np.int64)
        ink = high.sum(axis=(1, 2), dtype=np.int64)
        distance = beyond / np.maximum(ink, 1)  # two blank images: 0, the same
        better = distance < best
        best[better], best_shift[better] = distance[better], number
    return best, np.array(SHIFTS, np.int8)[best_shift]


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """IMAGES [n, 28, 28] moved by DY rows and DX columns (-1, 0 or 1), zero fill."""
    return np.pad(images, ((0, 0), (1, 1), (1, 1)))[:, 1 - dy:29 - dy, 1 - dx:29 - dx]


def near_pairs(images: np.ndarray) -> Pairs:
    """Every candidate pair (step 3) with its aligned distance, identical bytes included."""
    normalised = normalise_intensity(images)
    a, b = candidate_pairs(normalised)
    parts = [_verify(normalised, a[i:i + _CHUNK], b[i:i + _CHUNK])
             for i in range(0, len(a), _CHUNK)]
    if not parts:
        return _no_pairs()
    return Pairs(*(np.concatenate(field) for field in zip(*parts, strict=True)))


def _verify(normalised: np.ndarray, a: np.ndarray, b: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    distance, shift = aligned_distance(normalised[a], normalised[b])
    return a, b, distance, shift


def candidate_pairs(normalised: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image pairs (a < b) whose floored, centred projections are close (step 3)."""
    floored = np.maximum(normalised, DEAD_LEVELS) - np.uint8(DEAD_LEVELS)  # [N, 28, 28] uint8
    image, row, col = _probes(floored)
    features = _project(floored, image, row, col, _components(floored))  # [P, k]
    tree = cKDTree(features[:, :_TREE_COMPONENTS])
    _check_pair_count(tree, features[:, :_TREE_COMPONENTS])
    p, q = tree.query_pairs(SEARCH_RADIUS, output_type="ndarray").T
    close = np.concatenate([  # within the radius over all the components, not just the tree's
        ((features[p[i:i + _CHUNK]] - features[q[i:i + _CHUNK]]) ** 2).sum(axis=1)
        <= SEARCH_RADIUS ** 2 for i in range(0, len(p), _CHUNK)] or [np.zeros(0, bool)])
    a, b = image[p[close]], image[q[close]]
    a, b = np.minimum(a, b)[a != b], np.maximum(a, b)[a != b]  # probes of one image: no pair
    unique = np.unique(a * len(normalised) + b)  # an image pair met at several probes: once
    return unique // len(normalised), unique % len(normalised)


def _check_pair_count(tree: cKDTree, points: np.ndarray) -> None:
    # The tree's pairs, extrapolated from a fixed sample of probes (counting them all would
    # take as long as the search): mostly blank images would make nearly all N^2 pairs.
    sample = np.random.default_rng(0).permutation(len(points))[:_COUNT_SAMPLE]
    within = tree.query_ball_point(points[sample], SEARCH_RADIUS, return_length=True)
    pairs = int((within.sum() - len(sample)) * len(points) / len(sample) / 2)
    if pairs > MAX_CANDIDATE_PAIRS:
        raise DataError(
            f"the near-duplicate search would verify about {pairs:,} candidate pairs (limit "
            f"{MAX_CANDIDATE_PAIRS:,}): the images are too alike for it; pass "
            f"--near-duplicate-threshold 0 to check exact duplicates only")


def _probes(floored: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, centroid row, centroid column) to index: whole pixels, and across near edges."""
    mass = floored.sum(axis=(1, 2), dtype=np.float64)
    coords = np.arange(28, dtype=np.float64)
    centre = np.full(len(floored), 13.5)  # of a blank image
    rows = np.divide(floored.sum(axis=2, dtype=np.float64) @ coords, mass, out=centre.copy(),
                     where=mass > 0)
    cols = np.divide(floored.sum(axis=1, dtype=np.float64) @ coords, mass, out=centre.copy(),
                     where=mass > 0)
    image, row, col = [], [], []
    for dy in (0, -1, 1):
        for dx in (0, -1, 1):
            near = _near_edge(rows, dy) & _near_edge(cols, dx)
            image.append(np.nonzero(near)[0])
            row.append(np.floor(rows[near]).astype(np.int64) + dy)
            col.append(np.floor(cols[near]).astype(np.int64) + dx)
    return np.concatenate(image), np.concatenate(row), np.concatenate(col)


def _near_edge(centroid: np.ndarray, side: int) -> np.ndarray:
    # side 0: every image; -1 / +1: centroids within the margin of the lower / upper edge.
    fraction = centroid - np.floor(centroid)
    if side == 0:
        return np.ones(len(centroid), bool)
    return fraction < CENTROID_MARGIN if side < 0 else fraction > 1 - CENTROID_MARGIN


def _project(floored: np.ndarray, image: np.ndarray, row: np.ndarray, col: np.ndarray,
             components: np.ndarray) -> np.ndarray:
    """Each probe's image, moved so its centroid pixel is (13, 13), on COMPONENTS: [P, k]."""
    out = np.empty((len(image), len(components)), np.float32)
    moves = np.stack([13 - row, 13 - col], axis=1)
    for dy, dx in np.unique(moves, axis=0).tolist():
        these = np.nonzero((moves[:, 0] == dy) & (moves[:, 1] == dx))[0]
        for start in range(0, len(these), _CHUNK):
            chunk = these[start:start + _CHUNK]
            # Rolled: ink pushed over an edge wraps round, alike for an image and its copies.
            moved = np.roll(floored[image[chunk]], (dy, dx), axis=(1, 2))
            out[chunk] = moved.reshape(-1, 784).astype(np.float32) @ components.T
    return out


def _components(floored: np.ndarray) -> np.ndarray:
    """The leading principal axes [k, 784] of a fixed-seed sample of the floored images.

    Scaled by 1/255, so that projections are in units of the ink level.
    """
    rng = np.random.default_rng(0)
    sample = floored[rng.permutation(len(floored))[:_PCA_SAMPLE]].reshape(-1, 784)
    centred = sample.astype(np.float32) - sample.mean(axis=0, dtype=np.float32)
    scatter = (centred.T @ centred).astype(np.float64)
    _, axes = eigh(scatter, subset_by_index=[784 - _COMPONENTS, 783])  # the largest, ascending
    return (axes[:, ::-1].T / 255).astype(np.float32)


def _no_pairs() -> Pairs:
    return Pairs(a=np.zeros(0, np.int64), b=np.zeros(0, np.int64), distance=np.zeros(0),
                 shift=np.zeros((0, 2), np.int8))


def _take(pairs: Pairs, rows: np.ndarray) -> Pairs:
    return Pairs(a=pairs.a[rows], b=pairs.b[rows], distance=pairs.distance[rows],
                 shift=pairs.shift[rows])
