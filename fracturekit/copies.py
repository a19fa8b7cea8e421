"""Augmented copies: the same film rotated, cropped, re-exposed, mirrored and re-encoded under a new name.

Public fracture sets are often "augmented" before upload and then split at random, so a perceptual hash
(fracturekit.hashing, which only survives flips, 90-degree turns, resizes and re-encodes) misses most of their
copies. This module finds them in three steps, each measured by bench/near_duplicates.py:

1. Signature per film (`signature`): SIFT keypoints (OpenCV) on the film shrunk to SIFT_SIDE px after CLAHE,
   as RootSIFT descriptors in uint8, plus a THUMB_SIDE px thumbnail for the final check. SIFT is invariant to
   rotation, scale and crop; CLAHE evens out brightness, contrast and gamma; a mirrored film's descriptors are
   a fixed permutation of the original's (`MIRROR`), so mirroring costs no second extraction.
2. Candidates (`candidate_pairs`): a vocabulary tree (hierarchical k-means, BRANCH^DEPTH words) trained on a
   sample of the dataset's own descriptors; tf-idf bag-of-words vectors of each film and of its mirror; the
   top CANDIDATES most similar films per film. Never all pairs of full-size films: memory is the signatures
   plus one block of similarity rows.
3. Verification (`verify`): descriptor matches (Lowe's ratio test) -> RANSAC similarity transform
   (cv2.estimateAffinePartial2D) -> the first film warped onto the second and the Pearson correlation of the
   band-passed thumbnails over their overlap. Distinct patients' films of the same body part reach dozens of
   RANSAC inliers, so the count alone is not enough; the pixel correlation after alignment separates them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.sparse import csr_matrix

# Signature. Measured on FracAtlas films (bench/near_duplicates.py): SIFT on the film shrunk to 256 px costs
# ~13 ms per film on one core and gives a median of ~100 keypoints at contrast threshold 0.02 (0.04, OpenCV's
# default, leaves smooth films with under 20); at 512 px it costs ~80 ms.
SIFT_SIDE = 256
SIFT_FEATURES = 400
SIFT_CONTRAST = 0.02
THUMB_SIDE = 128
# Descriptor index (row, col, orientation) -> its index when the film is mirrored left-right: the 4x4 cells'
# rows swap and orientation bin o becomes -o (checked against SIFT on mirrored films in tests/test_copies.py).
MIRROR = np.arange(128).reshape(4, 4, 8)[::-1][..., (-np.arange(8)) % 8].ravel()

# Candidates: a 16^3 = 4,096-word tree put 148/150 copies in the top 10 (a flat 1,024-word k-means 142/150,
# 64^2 words 147/150), and 95% of copies ranked first or second.
BRANCH = 16
DEPTH = 3
VOCAB_SAMPLE = 40_000
CANDIDATES = 5

# Verification.
RATIO = 0.85
RANSAC_PX = 4.0  # in SIFT_SIDE pixels
MIN_OVERLAP = 0.2  # of the second film's thumbnail
BLOCK = 16  # thumbnail px
TEXTURE = 0.5
MIN_BLOCKS = 4
MIN_INLIERS = 12
COPY_CORRELATION = 0.7


@dataclass
class Signature:
    """What the copy search keeps of one film: keypoints, RootSIFT descriptors and a thumbnail."""

    points: np.ndarray  # (k, 2) float32, in the SIFT_SIDE-scaled film
    descriptors: np.ndarray  # (k, 128) uint8, RootSIFT * 255
    width: int  # of the SIFT_SIDE-scaled film
    thumb: np.ndarray  # uint8, long side THUMB_SIDE, after CLAHE

    @property
    def empty(self) -> bool:
        return len(self.points) < 3


def _shrink(img: np.ndarray, side: int) -> np.ndarray:
    s = side / max(img.shape)
    return cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img


def signature(pixels: np.ndarray) -> Signature:
    """The copy-search signature of an 8-bit grayscale film (thread-safe: OpenCV releases the GIL)."""
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))  # one per call: a shared one is not thread-safe
    small = clahe.apply(_shrink(pixels, SIFT_SIDE))
    sift = cv2.SIFT_create(nfeatures=SIFT_FEATURES, contrastThreshold=SIFT_CONTRAST)
    keypoints, desc = sift.detectAndCompute(small, None)
    if desc is None or not keypoints:
        points, root = np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)
    else:
        points = np.array([k.pt for k in keypoints], np.float32)
        root = np.sqrt(desc / (desc.sum(axis=1, keepdims=True) + 1e-7))  # RootSIFT: L2 of it = Hellinger of SIFT
        root = np.clip(root * 255 + 0.5, 0, 255).astype(np.uint8)
    return Signature(points, root, small.shape[1], _shrink(small, THUMB_SIDE))


class VocabularyTree:
    """Hierarchical k-means over descriptors: BRANCH children per node, DEPTH levels, leaves are words."""

    def __init__(self, sample: np.ndarray, seed: int = 0, branch: int = BRANCH, depth: int = DEPTH) -> None:
        self.branch, self.depth = branch, depth
        self.rng = np.random.default_rng(seed)
        self.nodes: dict[tuple[int, int], np.ndarray] = {}  # (level, path in base `branch`) -> children's centres
        self._grow(sample.astype(np.float32), 0, 0)

    @property
    def size(self) -> int:
        return self.branch**self.depth

    def _grow(self, x: np.ndarray, node: int, level: int) -> None:
        if level == self.depth or len(x) < 2 * self.branch:
            return
        centres = _kmeans(x, self.branch, self.rng)
        self.nodes[level, node] = centres
        nearest = _nearest(x, centres)
        for k in range(self.branch):
            self._grow(x[nearest == k], node * self.branch + k, level + 1)

    def words(self, desc: np.ndarray) -> np.ndarray:
        """The leaf (word id in [0, size)) of each descriptor; a descriptor stops where the tree stops growing."""
        x = desc.astype(np.float32)
        node = np.zeros(len(x), np.int64)
        for level in range(self.depth):
            nxt = node * self.branch
            for n in np.unique(node):
                centres = self.nodes.get((level, int(n)))
                idx = np.nonzero(node == n)[0]
                if centres is not None:
                    nxt[idx] += _nearest(x[idx], centres)
            node = nxt
        return node


def _nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.argmin((centres**2).sum(axis=1)[None] - 2 * x @ centres.T, axis=1)


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 6) -> np.ndarray:
    """Lloyd's k-means from k random points. Hand-written: sklearn's KMeans took 10-40x longer on these
    small per-node problems (thread start-up and k-means++ init dominate at k=16)."""
    centres = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iterations):
        nearest = _nearest(x, centres)
        onehot = csr_matrix((np.ones(len(x), np.float32), (nearest, np.arange(len(x)))), shape=(k, len(x)))
        counts = np.bincount(nearest, minlength=k)
        filled = counts > 0
        centres[filled] = (onehot @ x)[filled] / counts[filled, None]
    return centres


def _bow(words: Sequence[np.ndarray], size: int, idf: np.ndarray | None) -> tuple[csr_matrix, np.ndarray]:
    """Row-normalised tf-idf bag-of-words matrix (films x words); idf computed here when not given."""
    rows = np.concatenate([np.full(len(w), i) for i, w in enumerate(words)] + [np.zeros(0, np.int64)])
    cols = np.concatenate([*words, np.zeros(0, np.int64)])
    m = csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(words), size))
    m.sum_duplicates()
    if idf is None:
        df = np.bincount(m.indices, minlength=size)
        idf = np.log((len(words) + 1) / (df + 1)).astype(np.float32)
    m = csr_matrix(m.multiply(idf[None, :]))
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1
    return csr_matrix(m.multiply(1 / norms[:, None])), idf


def candidate_pairs(sigs: Sequence[Signature], k: int = CANDIDATES, seed: int = 0, block: int = 512) -> np.ndarray:
    """(i, j, mirrored) rows, i != j: each film's k most similar films, as is and mirrored. No duplicates."""
    n = len(sigs)
    if n < 2:
        return np.zeros((0, 3), np.int64)
    counts = np.array([len(s.descriptors) for s in sigs])
    every = np.concatenate([s.descriptors for s in sigs] + [np.zeros((0, 128), np.uint8)])
    if len(every) < 2 * BRANCH:
        return np.zeros((0, 3), np.int64)
    rng = np.random.default_rng(seed)
    sample = every[rng.choice(len(every), min(len(every), VOCAB_SAMPLE), replace=False)]
    tree = VocabularyTree(sample, seed)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    words = tree.words(every)
    mirror_words = tree.words(every[:, MIRROR])
    per_film = [words[offsets[i] : offsets[i + 1]] for i in range(n)]
    bow, idf = _bow(per_film, tree.size, None)
    mirror, _ = _bow([mirror_words[offsets[i] : offsets[i + 1]] for i in range(n)], tree.size, idf)
    bow_t = bow.T.tocsr()
    k = min(k, n - 1)
    found: list[np.ndarray] = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        for flag, query in ((0, bow), (1, mirror)):
            sim = (query[start:stop] @ bow_t).toarray()
            sim[np.arange(stop - start), np.arange(start, stop)] = -1
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            ii = np.repeat(np.arange(start, stop), k)
            jj = top.ravel()
            keep = sim[ii - start, jj] > 0
            found.append(np.stack([ii[keep], jj[keep], np.full(keep.sum(), flag)], axis=1))
    pairs = np.concatenate(found)
    # one row per unordered pair and flag: mirror(a) ~ b is the same relation as mirror(b) ~ a
    pairs[:, :2] = np.sort(pairs[:, :2], axis=1)
    return np.unique(pairs, axis=0)


_matcher = cv2.BFMatcher(cv2.NORM_L2)


def _bandpass(thumb: np.ndarray) -> np.ndarray:
    t = thumb.astype(np.float32)
    return cv2.GaussianBlur(t, (0, 0), 0.7) - cv2.GaussianBlur(t, (0, 0), 3.0)


@dataclass(frozen=True)
class Match:
    """The check of one candidate pair: RANSAC inliers and the aligned band-passed correlation."""

    inliers: int
    correlation: float

    @property
    def is_copy(self) -> bool:
        return self.inliers >= MIN_INLIERS and self.correlation >= COPY_CORRELATION


def verify(a: Signature, b: Signature, mirrored: bool) -> Match:
    """Is `a` (mirrored left-right when asked) an augmented copy of `b`? Geometry first, then pixels."""
    if a.empty or b.empty:
        return Match(0, 0.0)
    pa, da = a.points, a.descriptors
    if mirrored:
        da = da[:, MIRROR]
        pa = pa.copy()
        pa[:, 0] = a.width - 1 - pa[:, 0]
    pairs = _matcher.knnMatch(da.astype(np.float32), b.descriptors.astype(np.float32), k=2)
    good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < RATIO * n.distance]
    if len(good) < MIN_INLIERS:
        return Match(len(good), 0.0)
    src = pa[[m.queryIdx for m in good]]
    dst = b.points[[m.trainIdx for m in good]]
    affine, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX)
    if affine is None:
        return Match(0, 0.0)
    n_in = int(inliers.sum())
    if n_in < MIN_INLIERS:
        return Match(n_in, 0.0)
    # the transform maps SIFT_SIDE-scale points; the thumbnails are a further scale of each film
    sa = a.thumb.shape[1] / a.width
    sb = b.thumb.shape[1] / b.width
    to_thumb = np.diag([sb, sb, 1.0]) @ np.vstack([affine, [0, 0, 1]]) @ np.diag([1 / sa, 1 / sa, 1.0])
    thumb_a = a.thumb[:, ::-1] if mirrored else a.thumb
    h, w = b.thumb.shape
    warped = cv2.warpAffine(_bandpass(np.ascontiguousarray(thumb_a)), to_thumb[:2], (w, h), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones(thumb_a.shape, np.uint8), to_thumb[:2], (w, h), flags=cv2.INTER_NEAREST)
    mask = cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0
    if mask.mean() < MIN_OVERLAP:
        return Match(n_in, 0.0)
    return Match(n_in, block_correlation(warped, _bandpass(b.thumb), mask))


def block_correlation(x: np.ndarray, y: np.ndarray, mask: np.ndarray, side: int = BLOCK) -> float:
    """Median Pearson correlation of `x` and `y` over side x side blocks that lie inside `mask` and carry texture.

    A median over blocks, not one correlation over the overlap: a copy's black rotation corners, added borders
    and burned-in text only spoil their own blocks. On the bench's default copies this raised recall at equal
    false links (95.3% vs 90.7% at >= 12 inliers, 0.7).
    """
    hb, wb = mask.shape[0] // side, mask.shape[1] // side
    if hb * wb == 0:
        return 0.0

    def blocks(a: np.ndarray) -> np.ndarray:
        return a[: hb * side, : wb * side].reshape(hb, side, wb, side).transpose(0, 2, 1, 3).reshape(hb * wb, -1)

    bx, by = blocks(x), blocks(y)
    inside = blocks(mask.astype(np.uint8)).min(axis=1) > 0
    bx = bx - bx.mean(axis=1, keepdims=True)
    by = by - by.mean(axis=1, keepdims=True)
    sx, sy = np.sqrt((bx * bx).sum(axis=1)), np.sqrt((by * by).sum(axis=1))
    flat = TEXTURE * np.sqrt(side * side)  # a block whose band-pass std is under TEXTURE grey levels is flat
    keep = inside & (sx > flat) & (sy > flat)
    if keep.sum() < MIN_BLOCKS:
        return 0.0
    return float(np.median((bx[keep] * by[keep]).sum(axis=1) / (sx[keep] * sy[keep])))


def copy_pairs(
    sigs: Sequence[Signature | None],
    map_fn: Callable[[Callable, list], list] | None = None,
    k: int = CANDIDATES,
) -> list[tuple[int, int, Match]]:
    """Verified augmented-copy pairs (i, j, match), i < j, among `sigs` (None = no signature: skipped).

    map_fn: a parallel `map(fn, items) -> list` (the audit's thread pool); plain map when None.
    """
    index = [i for i, s in enumerate(sigs) if s is not None]
    present = [sigs[i] for i in index]
    cands = candidate_pairs(present, k)  # type: ignore[arg-type]

    def check(row: np.ndarray) -> Match:
        i, j, mirrored = (int(v) for v in row)
        return verify(present[i], present[j], bool(mirrored))  # type: ignore[arg-type]

    rows = list(cands)
    matches = map_fn(check, rows) if map_fn is not None else [check(r) for r in rows]
    best: dict[tuple[int, int], Match] = {}
    for row, m in zip(rows, matches, strict=True):
        key = (index[int(row[0])], index[int(row[1])])
        if m.is_copy and (key not in best or m.correlation > best[key].correlation):
            best[key] = m
    return [(i, j, m) for (i, j), m in sorted(best.items())]


# Name lineage: suffixes that dataset authors add to a copy's name. Only a name that carries one is linked (to
# films whose name is its stripped form, or carries another suffix on the same stem): equal plain names in two
# folders are common in Kaggle sets (train/1.jpg, test/1.jpg) and say nothing about lineage.
_COPY_SUFFIX = re.compile(
    r"(\s*-\s*copy(\s*\(\d+\))?|\s*\(\d+\)|[-_ ]copy\d*"
    r"|[-_ ]?(rotated|rotate|rot|augmented|aug|flipped|flip|mirrored|mirror|cropped|crop|bright|dark|zoom|noise)"
    r"[-_ ]?\d*)$",
    re.IGNORECASE,
)


def lineage(stem: str) -> str | None:
    """The original's name that a copy's file stem points to ('x-rotated1 - Copy (2)' -> 'x'), or None."""
    base = stem
    while True:
        stripped = _COPY_SUFFIX.sub("", base)
        if stripped == base or not stripped:
            break
        base = stripped
    return base.lower() if base != stem else None


# Most copies one original may claim by name: Kaggle sets hold ~5-30 copies per film, while a numbered series of
# distinct films ('fracture.jpg', 'fracture (1).jpg' ... 'fracture (400).jpg') would otherwise become one cluster.
MAX_NAMED_COPIES = 40


def name_links(stems: Sequence[str]) -> list[list[int]]:
    """Index sets of films tied by name lineage: a film and the suffixed names that point to its exact stem.

    A suffixed name whose original is not in the dataset links to nothing (its siblings may be distinct films
    numbered by a download tool), and an original claimed by more than MAX_NAMED_COPIES names is ignored.
    """
    plain: dict[str, list[int]] = {}
    children: dict[str, list[int]] = {}
    for i, stem in enumerate(stems):
        base = lineage(stem)
        if base is None:
            plain.setdefault(stem.lower(), []).append(i)
        else:
            children.setdefault(base, []).append(i)
    return [
        [*plain[base], *kids]
        for base, kids in children.items()
        if base in plain and len(plain[base]) == 1 and len(kids) <= MAX_NAMED_COPIES
    ]
