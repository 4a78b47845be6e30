"""Finding duplicate images: exact (content hash) and near (perceptual hash, then pixels).

Exact duplicates have identical pixel bytes: images are grouped by a BLAKE2b-128 digest of
their 784 bytes (a collision is as likely as a cosmic-ray bit flip, so it is not re-checked).

Near duplicates are found in two steps, so that 70k images take seconds on two cores:
1. Candidates by an *average hash*: the image is summed over 4x4 blocks (28x28 -> 7x7) and
   each block becomes one bit, set when its ink is above the mean block's. Images whose
   49-bit hashes differ in at most one bit are candidates (one bit of slack: a block close to
   the mean can flip under noise). Shifts by a pixel or more usually change several bits and
   are not searched for.
2. Verification on the full-resolution pixels by the Ruzicka (weighted Jaccard) distance
   1 - sum(min(a, b)) / sum(max(a, b)): the share of the pair's ink they do not have in
   common. Since max(a, b) = (a + b + |a - b|) / 2, it equals 2D / (S + D) with D the L1
   distance and S the two images' total ink, which lets block sums prune most candidates
   before any pixel is compared (block L1 <= pixel L1).
A pair at distance 0 < d <= threshold is a near duplicate; d == 0 is an exact duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from data_pipeline.errors import DataError

_BLOCK = 4  # 28x28 images -> 7x7 blocks -> a 49-bit hash
_HASH_BITS = 49
# Above this many candidate pairs the data is too uniform for the hash (e.g. mostly blank
# images): the search stops with an error rather than eat memory and minutes. Real MNIST
# gives 5.0M candidates for its 70k images.
MAX_CANDIDATE_PAIRS = 20_000_000
_CHUNK_PAIRS = 250_000  # pairs verified per vectorised step: bounds the memory used


@dataclass(frozen=True)
class Duplicates:
    """Duplicate pairs (a < b) as indices into the image array that was searched."""

    a: np.ndarray  # int64
    b: np.ndarray  # int64
    distance: np.ndarray  # float64 Ruzicka distance: 0.0 for exact duplicates
    exact: np.ndarray  # bool
    candidates: int  # candidate pairs the perceptual hash proposed (for the report)


def find_duplicates(images: np.ndarray, *, near_threshold: float) -> Duplicates:
    """Every exact and near-duplicate pair among IMAGES [N, 28, 28] uint8.

    near_threshold = 0 looks for exact duplicates only (no perceptual search at all).
    """
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images [N, 28, 28], but got {images.dtype} "
                         f"{images.shape}")
    if not 0.0 <= near_threshold < 1.0:
        raise ValueError(f"near_threshold must be in [0, 1), but got {near_threshold=}")
    ea, eb = exact_pairs(images)
    if near_threshold == 0.0 or len(images) < 2:
        return Duplicates(a=ea, b=eb, distance=np.zeros(len(ea)), exact=np.ones(len(ea), bool),
                          candidates=0)
    na, nb, nd, candidates = near_pairs(images, threshold=near_threshold)
    return Duplicates(
        a=np.concatenate([ea, na]), b=np.concatenate([eb, nb]),
        distance=np.concatenate([np.zeros(len(ea)), nd]),
        exact=np.concatenate([np.ones(len(ea), bool), np.zeros(len(na), bool)]),
        candidates=candidates,
    )


def exact_pairs(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (a < b) of images with identical bytes, grouped by content digest."""
    flat = np.ascontiguousarray(images.reshape(len(images), 28 * 28))
    digests = np.array([hashlib.blake2b(row.tobytes(), digest_size=16).digest()
                        for row in flat], dtype="S16")
    _, inverse, counts = np.unique(digests, return_inverse=True, return_counts=True)
    a_parts, b_parts = [], []
    for group in np.nonzero(counts > 1)[0]:
        members = np.nonzero(inverse == group)[0]  # sorted, so a < b below
        ia, ib = np.triu_indices(len(members), k=1)
        a_parts.append(members[ia])
        b_parts.append(members[ib])
    if not a_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(a_parts).astype(np.int64), np.concatenate(b_parts).astype(np.int64)


def average_hash(images: np.ndarray) -> np.ndarray:
    """The 49-bit average hash of each image, as uint64 (see the module docstring)."""
    return _hash_blocks(block_sums(images))


def block_sums(images: np.ndarray) -> np.ndarray:
    """Ink per 4x4 block: [N, 49] int16 (at most 16 * 255 = 4080)."""
    n = len(images)
    blocks = images.reshape(n, 7, _BLOCK, 7, _BLOCK).sum(axis=(2, 4), dtype=np.int16)
    return blocks.reshape(n, _HASH_BITS)


def _hash_blocks(blocks: np.ndarray) -> np.ndarray:
    # Integer comparison with the mean block (sum / 49) avoids float ties.
    total = blocks.sum(axis=1, dtype=np.int64, keepdims=True)
    bits = (blocks.astype(np.int64) * _HASH_BITS > total).astype(np.uint64)
    return (bits << np.arange(_HASH_BITS, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)


def near_pairs(images: np.ndarray, *, threshold: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Pairs at Ruzicka distance 0 < d <= THRESHOLD among hash candidates; and the candidates."""
    n = len(images)
    pixels = images.reshape(n, -1).astype(np.int16)  # [N, 784]: differences fit in int16
    blocks = block_sums(images)
    ink = pixels.sum(axis=1, dtype=np.int64)
    buckets = _HashBuckets(_hash_blocks(blocks))
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for a, b in buckets.candidate_chunks():
        total = ink[a] + ink[b]
        # 2D / (S + D) <= t  <=>  D <= t S / (2 - t). Cheap lower bounds of D prune first:
        # the difference of total ink, then the block L1 (each <= the pixel L1).
        limit = threshold * total / (2.0 - threshold)
        keep = np.abs(ink[a] - ink[b]) <= limit
        a, b, total, limit = a[keep], b[keep], total[keep], limit[keep]
        keep = np.abs(blocks[a] - blocks[b]).sum(axis=1, dtype=np.int32) <= limit
        a, b, total, limit = a[keep], b[keep], total[keep], limit[keep]
        dist = np.abs(pixels[a] - pixels[b]).sum(axis=1, dtype=np.int64)
        keep = (dist > 0) & (dist <= limit)
        found.append((a[keep], b[keep], 2.0 * dist[keep] / (total[keep] + dist[keep])))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), 0
    a_all, b_all, d_all = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return a_all, b_all, d_all, buckets.n_candidates


class _HashBuckets:
    """Images grouped by hash; pairs of buckets whose hashes differ in at most one bit."""

    def __init__(self, keys: np.ndarray) -> None:
        self.order = np.argsort(keys, kind="stable")
        self.keys, self.starts, self.counts = np.unique(
            keys[self.order], return_index=True, return_counts=True)
        self.left, self.right = self._bucket_pairs()
        sizes = self._pair_sizes()
        self.n_candidates = int(sizes.sum())
        if self.n_candidates > MAX_CANDIDATE_PAIRS:
            raise DataError(
                f"the near-duplicate search would verify {self.n_candidates:,} candidate pairs "
                f"(limit {MAX_CANDIDATE_PAIRS:,}): the images are too alike for the average "
                f"hash; pass --near-duplicate-threshold 0 to check exact duplicates only")

    def _bucket_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        ids = np.arange(len(self.keys))
        left, right = [ids], [ids]  # every bucket with itself
        for bit in range(_HASH_BITS):
            probe = self.keys ^ np.uint64(1 << bit)
            pos = np.minimum(np.searchsorted(self.keys, probe), len(self.keys) - 1)
            hit = (self.keys[pos] == probe) & (pos > ids)  # each unordered pair once
            left.append(ids[hit])
            right.append(pos[hit])
        return np.concatenate(left), np.concatenate(right)

    def _pair_sizes(self) -> np.ndarray:
        # Within one bucket of c images there are c (c - 1) / 2 pairs; across two, c1 * c2.
        c_left, c_right = self.counts[self.left], self.counts[self.right]
        same = self.left == self.right
        return np.where(same, c_left * (c_left - 1) // 2, c_left * c_right).astype(np.int64)

    def candidate_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Image index pairs (a < b), about _CHUNK_PAIRS at a time."""
        sizes = self._pair_sizes()
        ends = np.cumsum(sizes)
        start = 0
        while start < len(sizes):
            stop = max(start + 1, int(np.searchsorted(ends, ends[start] - sizes[start]
                                                      + _CHUNK_PAIRS, side="right")))
            yield self._expand(self.left[start:stop], self.right[start:stop])
            start = stop

    def _expand(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # The full product of each bucket pair, vectorised; same-bucket pairs keep a < b only.
        c_left, c_right = self.counts[left], self.counts[right]
        sizes = c_left * c_right
        pair = np.repeat(np.arange(len(left)), sizes)
        offset = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        a = self.order[self.starts[left][pair] + offset // c_right[pair]]
        b = self.order[self.starts[right][pair] + offset % c_right[pair]]
        keep = (left[pair] != right[pair]) | (a < b)
        a, b = a[keep], b[keep]
        return np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
