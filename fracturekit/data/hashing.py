"""Content and perceptual hashes of films, and the pairwise search for near duplicates.

Exact duplicates: sha256 of the file bytes, and sha256 of the decoded 8-bit pixels (catches the same
film saved again as PNG or with another JPEG header). Near duplicates: `imagehash.phash` of the film
under all 8 dihedral transforms (4 rotations x mirror), so a flipped, rotated, resized or re-encoded
copy lands within a few bits of the original. Two films are near duplicates when the smallest Hamming
distance between the identity hash of one and the 8 hashes of the other is <= NEAR_THRESHOLD.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import scipy.fftpack

from fracturekit.core.parallel import parallel_map
from fracturekit.core.yolo_env import cpu_threads

# Bits out of 64 (distances between two phashes are always even: each has 32 bits set). Measured on
# FracAtlas (4,083 films; bench/prepare_bench.py prints the same study): copies of 300 films were at
# distance <= 2 for 300/300 after flips or 90-degree rotations (all 0), 298/300 after resize 0.5 + JPEG
# q75, 297/300 after rot270 + resize 0.7 + JPEG q60, 293/300 after resize 0.3 (the rest at 4). The
# nearest DIFFERENT file of each film: 189 films at 0, 86 at 2, 302 at 4, 606 at 6, median 10. Of 12
# pairs inspected at 0 and 2, all were the same film or the same limb in the same position (a leak
# risk); pairs at 4 included different limbs, so 4 would chain unrelated films into clusters.
NEAR_THRESHOLD = 2
N_TRANSFORMS = 8
_HASH_SIDE = 8  # imagehash.phash default hash_size: 64 bits
_PHASH_SIDE = 32  # imagehash.phash resizes to hash_size * highfreq_factor = 8 * 4 px


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes (hex)."""
    with Path(path).open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def pixel_sha256(pixels: np.ndarray) -> str:
    """sha256 of decoded pixels and their shape: equal for the same film in another container."""
    h = hashlib.sha256(f"{pixels.shape}|{pixels.dtype}|".encode())
    h.update(np.ascontiguousarray(pixels).data)
    return h.hexdigest()


def _dihedral(img: np.ndarray) -> Iterator[np.ndarray]:
    """The 8 rotations/reflections of a square image, identity first."""
    for flipped in (img, img[:, ::-1]):
        for k in range(4):
            yield np.rot90(flipped, k)


def dihedral_phashes(pixels: np.ndarray) -> np.ndarray:
    """The imagehash.phash of the 8 dihedral transforms of an 8-bit gray film, as uint64[8] (identity first).

    The film is shrunk once to the 32x32 phash input with OpenCV's area filter (phash does this with
    PIL); the transforms are applied to that small image, which commutes with the resize. The DCT and
    median step is imagehash.phash's own arithmetic (scipy.fftpack DCT-II on rows then columns, 8x8
    low band > its median), run on the 8 images in one vectorized call: calling imagehash.phash 8 times
    cost 12.7 ms per film (most of the prepare time on FracAtlas), this costs ~0.3 ms.
    tests/test_hashing.py checks the bits equal imagehash.phash on each transform.
    """
    small = cv2.resize(pixels, (_PHASH_SIDE, _PHASH_SIDE), interpolation=cv2.INTER_AREA)
    stack = np.stack(list(_dihedral(small))).astype(np.float64)
    dct = scipy.fftpack.dct(scipy.fftpack.dct(stack, axis=1), axis=2)
    low = dct[:, :_HASH_SIDE, :_HASH_SIDE].reshape(N_TRANSFORMS, -1)
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)  # first bit = most significant


def phash_hex(value: int | np.integer) -> str:
    """A 64-bit hash as the 16 hex digits imagehash prints."""
    return f"{int(value):016x}"


def min_dihedral_distances(hashes: np.ndarray, rows: slice) -> np.ndarray:
    """Distances (rows, n): for each film in `rows`, the min Hamming distance to every film's 8 hashes.

    Vectorized XOR + popcount over uint64 (numpy bit ops), one block of rows at a time to bound memory.
    """
    ident = hashes[rows, 0][:, None, None]
    return np.bitwise_count(ident ^ hashes[None, :, :]).min(axis=2)


def _rows_per_block(n: int, budget: int = 32 << 20) -> int:
    """Rows of `min_dihedral_distances` per block so that its (rows, n, 8) uint64 XOR stays within `budget` bytes: a
    fixed 256 rows took 165 MB at 10,083 films, at the audit's peak."""
    return max(1, budget // (max(n, 1) * N_TRANSFORMS * 8))


def near_pairs(hashes: np.ndarray, threshold: int = NEAR_THRESHOLD, block: int | None = None) -> np.ndarray:
    """All pairs (i, j), i < j, whose min dihedral Hamming distance is <= threshold, as int array (k, 2).

    Blocks on `cpu_threads()` threads, each within its share of the memory budget: numpy's XOR, popcount and min
    release the GIL (10,083 films: 3.9 s on one thread, 2.3 s on two)."""
    n, threads = len(hashes), cpu_threads()
    block = block or _rows_per_block(n, (32 << 20) // threads)

    def pairs(start: int) -> np.ndarray:
        dist = min_dihedral_distances(hashes, slice(start, min(n, start + block)))
        ii, jj = np.nonzero(dist <= threshold)
        ii = ii + start
        keep = jj != ii
        # distance is not exactly symmetric (median threshold inside phash), so keep either direction
        return np.stack([np.minimum(ii[keep], jj[keep]), np.maximum(ii[keep], jj[keep])], axis=1)

    found = parallel_map(pairs, range(0, n, block))
    return np.unique(np.concatenate([*found, np.zeros((0, 2), np.int64)]), axis=0)


def nearest_distances(hashes: np.ndarray, block: int | None = None) -> np.ndarray:
    """For each film, the min dihedral distance to any OTHER film (used to choose NEAR_THRESHOLD)."""
    n = len(hashes)
    block = block or _rows_per_block(n)
    out = np.empty(n, dtype=np.int64)
    for start in range(0, n, block):
        stop = min(n, start + block)
        dist = min_dihedral_distances(hashes, slice(start, stop)).astype(np.int64)
        dist[np.arange(stop - start), np.arange(start, stop)] = 65
        out[start:stop] = dist.min(axis=1)
    return out
