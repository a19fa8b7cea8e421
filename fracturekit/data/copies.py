"""Augmented copies: the same film rotated, cropped, re-exposed, mirrored and re-encoded under a new name.

Public fracture sets are often "augmented" before upload and then split at random, so a perceptual hash
(fracturekit.data.hashing, which only survives flips, 90-degree turns, resizes and re-encodes) misses most of their
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
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from fracturekit.core.allocator import retain_freed_memory
from fracturekit.core.parallel import parallel_map
from fracturekit.core.yolo_env import cpu_threads
from fracturekit.ingest.labels import canonical_split

# Signature. Measured on FracAtlas films (bench/near_duplicates.py): SIFT on the film shrunk to 256 px costs
# ~8 ms per film on one core (14 ms without `retain_freed_memory`) and gives a median of ~100 keypoints at contrast
# threshold 0.02 (0.04, OpenCV's default, leaves smooth films with under 20); at 512 px it cost ~80 ms (without).
# 224 px, 192 px or 2 octave layers cost 11-38% less but kept 92.0-94.7% of the bench's copies (95.3%, 96.0% at 256).
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
WORDS_CHUNK = 65_536  # descriptors converted to float32 at a time (32 MB)
# Top 5 per film, as is and mirrored. 4 kept bench/near_duplicates.py's recall (95.3% / 96.0%, seeds 0 1) with 19%
# fewer checks, but on FracAtlas itself it left 31 of the 710 films the audit clusters alone (68 films changed
# cluster; 29,453 checks vs 36,580) and lost one of 150 knee copies (88.7% vs 89.3%): not worth ~4 s of CPU.
CANDIDATES = 5
EXPANSION_ROUNDS = 4  # candidate rounds: by film, then by cluster while a round links something new
# Members of a cluster paired with each of its candidates: 3 cost FracAtlas 15% more checks (42.0k vs 36.6k,
# +6 s of its prepare) for no family of bench/near_duplicates.py --families kept whole that 1 did not keep.
MEMBERS_PER_CANDIDATE = 1

# Verification.
RATIO = 0.85
RANSAC_PX = 4.0  # in SIFT_SIDE pixels
MIN_OVERLAP = 0.2  # of the second film's thumbnail
BLOCK = 16  # thumbnail px
TEXTURE = 0.5
MIN_BLOCKS = 4
MIN_INLIERS = 12
MAX_STRETCH = 1.6  # of an affine fit's two axis scales: a 2010 x 1534 film squashed to 224 x 224 is 1.31
COPY_CORRELATION = 0.7
# A second look, b onto a (`verify_both_ways`), for pairs with at least this many inliers. On the recall bench's
# default copies (seeds 0 and 1) it found the 4 copies one look missed, all with 34-49 inliers, and every other
# pair it would have linked (14 of look-alike films) had 12-27: given to all pairs it doubled those links.
SECOND_LOOK_INLIERS = 30
NEAR_MISS_CORRELATION = 0.5  # >= MIN_INLIERS but correlation in [0.5, 0.7): reported when it straddles splits
# From this many films (representatives) on, the checks run in worker processes (fracturekit.data.copy_workers):
# a worker's start-up costs ~0.5 s of CPU, ~1,000 checks; a film brings ~9 checks (FracAtlas: 3,999 -> 36,580).
PROCESS_MIN_FILMS = 500


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
    retain_freed_memory()  # SIFT frees its ~10 MB pyramid a film: kept for the next, SIFT 14 -> 8 ms a film
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

    def words(
        self, desc: np.ndarray, chunk: int = WORDS_CHUNK, threads: int = 1, columns: np.ndarray | None = None
    ) -> np.ndarray:
        """The leaf (word id in [0, size)) of each descriptor; a descriptor stops where the tree stops growing.

        In chunks of `chunk` descriptors, each converted to float32 alone, and within a chunk the descriptors of
        one node taken as one slice after a sort by node: on FracAtlas (2 x 549k descriptors) the whole array in
        float32 and a scan of it per node (`node == n`) cost ~10 s of CPU and ~860 MB at peak; this, ~2 s and a
        chunk's two float32 copies (64 MB): the copy search's peak RSS rose 91 MB over the signatures' instead.
        threads: chunks of chunk / threads descriptors on that many threads at once (the same memory in flight);
        numpy's sorts, gathers and products release the GIL on arrays this large. Two 32k chunks cost less CPU
        than one 64k chunk (FracAtlas's 541k descriptors: 0.81 s against 0.98 s under load).
        columns: a permutation of the 128 columns applied chunk by chunk (`MIRROR`: the mirrored films' words)
        rather than to the whole array first, which held a second copy of every descriptor (69 MB on FracAtlas).
        """
        step = max(1, chunk // threads)
        starts = range(0, len(desc), step)
        if threads > 1 and len(starts) > 1:
            with ThreadPoolExecutor(threads) as pool:
                parts = list(pool.map(lambda s: self._chunk_words(desc[s : s + step], columns), starts))
        else:
            parts = [self._chunk_words(desc[s : s + step], columns) for s in starts]
        return np.concatenate([*parts, np.zeros(0, np.int64)])

    def _chunk_words(self, desc: np.ndarray, columns: np.ndarray | None) -> np.ndarray:
        x = (desc if columns is None else desc[:, columns]).astype(np.float32)
        node = np.zeros(len(x), np.int64)
        where = np.arange(len(x))  # the caller's row of each row of x
        for level in range(self.depth):
            order = np.argsort(node, kind="stable")
            x, node, where = x[order], node[order], where[order]  # one node's descriptors are now one slice
            nxt = node * self.branch
            ids, starts = np.unique(node, return_index=True)
            for n, a, b in zip(ids.tolist(), starts.tolist(), [*starts[1:].tolist(), len(node)], strict=True):
                centres = self.nodes.get((level, n))
                if centres is not None:
                    nxt[a:b] += _nearest(x[a:b], centres)
            node = nxt
        out = np.empty_like(node)
        out[where] = node
        return out


def _nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    return np.argmin((centres**2).sum(axis=1)[None] - x @ (2 * centres).T, axis=1)  # 2 * centres: not a copy of x


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


class CandidateSearch:
    """Bag-of-words similarity between films: a vocabulary tree trained on a sample of the films' own descriptors,
    tf-idf vectors of each film as is and mirrored, and top-k queries by film or by cluster of films."""

    def __init__(self, sigs: Sequence[Signature], seed: int = 0) -> None:
        n = len(sigs)
        counts = np.array([len(s.descriptors) for s in sigs], np.int64)
        every = np.concatenate([s.descriptors for s in sigs] + [np.zeros((0, 128), np.uint8)])
        self.usable = n >= 2 and len(every) >= 2 * BRANCH
        if not self.usable:
            return
        rng = np.random.default_rng(seed)
        # one BLAS thread: the tree's products are small (16 centres), and OpenBLAS's threads spun on them, above
        # all on a busy machine (FracAtlas's words, one pass: 6-7 s of CPU with its threads at load 10, 0.8 s with one)
        with threadpool_limits(1, user_api="blas"):
            tree = VocabularyTree(every[rng.choice(len(every), min(len(every), VOCAB_SAMPLE), replace=False)], seed)
            threads = cpu_threads()
            words, mirror_words = tree.words(every, threads=threads), tree.words(every, threads=threads, columns=MIRROR)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        self.bow, idf = _bow([words[offsets[i] : offsets[i + 1]] for i in range(n)], tree.size, None)
        self.mirror, _ = _bow([mirror_words[offsets[i] : offsets[i + 1]] for i in range(n)], tree.size, idf)
        self.bow_t = self.bow.T.tocsr()

    def by_film(self, k: int, block: int = 512) -> np.ndarray:
        """(i, j, mirrored) rows, i < j: each film's k most similar other films, as is and mirrored.

        Blocks of `block` films on `cpu_threads()` threads: scipy's sparse products and numpy's partitions release
        the GIL (10,083 films: 11.4-12.6 s on one thread, 6.0-6.8 s on two, the same rows)."""
        n = self.bow.shape[0]

        def query_block(start: int) -> list[np.ndarray]:
            rows = np.arange(start, min(n, start + block))
            found = []
            for flag, query in ((0, self.bow), (1, self.mirror)):
                sim = (query[rows] @ self.bow_t).toarray()
                sim[np.arange(len(rows)), rows] = -1
                found.append(_top(sim, rows, k, flag))
            return found

        return _unique_pairs([p for part in parallel_map(query_block, range(0, n, block)) for p in part])

    def by_cluster(self, label: np.ndarray, clusters: np.ndarray, k: int, block: int = 256) -> np.ndarray:
        """(i, j, mirrored) rows: for each of `clusters` (ids in `label`, one per film), the k films of OTHER
        clusters most similar to the cluster's summed tf-idf vector, each paired with the MEMBERS_PER_CANDIDATE
        members of the cluster most similar to it. A family whose members fill each other's top-k slots is thereby
        searched as one query."""
        n = len(label)
        sizes = np.bincount(label)
        big = np.asarray(clusters, np.int64)
        members_of = np.split(np.argsort(label, kind="stable"), np.cumsum(sizes)[:-1])
        member = csr_matrix((np.ones(n, np.float32), (label, np.arange(n))), shape=(len(sizes), n))

        def query_block(start: int) -> list[np.ndarray]:
            part = big[start : start + block]
            found = []
            for flag, query in ((0, self.bow), (1, self.mirror)):
                sim = (member[part] @ query @ self.bow_t).toarray()
                sim[label[None, :] == part[:, None]] = -1  # never a film of the cluster itself
                for c, row in zip(part, sim, strict=True):
                    top = np.argpartition(-row, min(k, n - 1) - 1)[:k]
                    top = top[row[top] > 0]
                    members = members_of[c]
                    # the candidates' rows of bow, not columns of bow_t: slicing columns of a CSR matrix reads
                    # all of it (10,083 films: 3.8 ms per query against 0.4 ms)
                    sim_m = (query[members] @ self.bow[top].T).toarray()  # (members, candidates)
                    best = np.argsort(-sim_m, axis=0)[:MEMBERS_PER_CANDIDATE]
                    for b in best:
                        found.append(np.stack([members[b], top, np.full(len(top), flag)], axis=1))
            return found

        return _unique_pairs([p for part in parallel_map(query_block, range(0, len(big), block)) for p in part])


def _top(sim: np.ndarray, rows: np.ndarray, k: int, flag: int) -> np.ndarray:
    """(row film, column film, flag) for each row's k highest positive similarities."""
    k = min(k, sim.shape[1] - 1)
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    ii, jj = np.repeat(np.arange(len(rows)), k), top.ravel()
    keep = sim[ii, jj] > 0
    return np.stack([rows[ii[keep]], jj[keep], np.full(keep.sum(), flag)], axis=1)


def _unique_pairs(found: list[np.ndarray]) -> np.ndarray:
    """One row per unordered pair and flag: mirror(a) ~ b is the same relation as mirror(b) ~ a."""
    pairs = np.concatenate([*found, np.zeros((0, 3), np.int64)]).astype(np.int64)
    pairs[:, :2] = np.sort(pairs[:, :2], axis=1)
    return np.unique(pairs, axis=0)


def ratio_matches(da: np.ndarray, db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows of da, rows of db): each descriptor of `da` whose nearest neighbour in `db` (L2) passes Lowe's ratio
    test. The same matches as cv2.BFMatcher.knnMatch(k=2) and a ratio filter, in one matrix product and two
    row maxima: on FracAtlas's candidate pairs (median 101 keypoints a film) 185 us a pair against knnMatch's
    1,010 us, most of which is building DMatch objects; the search checks ~36,000 pairs."""
    if len(da) == 0 or len(db) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    fa, fb = da.astype(np.float32), db.astype(np.float32)
    score = fa @ fb.T - 0.5 * (fb * fb).sum(axis=1)  # |a - b|^2 = |a|^2 - 2 * score: the nearest has the top score
    rows = np.arange(len(fa))
    best = score.argmax(axis=1)
    first = score[rows, best]
    score[rows, best] = -np.inf
    second = score.max(axis=1)
    norm = (fa * fa).sum(axis=1)
    d1 = np.sqrt(np.maximum(norm - 2 * first, 0))
    d2 = np.sqrt(np.maximum(norm - 2 * second, 0))
    good = np.nonzero(d1 < RATIO * d2)[0]
    return good, best[good]


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

    @property
    def is_near_miss(self) -> bool:
        return self.inliers >= MIN_INLIERS and NEAR_MISS_CORRELATION <= self.correlation < COPY_CORRELATION


def verify(a: Signature, b: Signature, mirrored: bool) -> Match:
    """Is `a` (mirrored left-right when asked) an augmented copy of `b`? Geometry first, then pixels."""
    if a.empty or b.empty:
        return Match(0, 0.0)
    pa, da = a.points, a.descriptors
    if mirrored:
        da = da[:, MIRROR]
        pa = pa.copy()
        pa[:, 0] = a.width - 1 - pa[:, 0]
    query, train = ratio_matches(da, b.descriptors)
    if len(query) < MIN_INLIERS:
        return Match(len(query), 0.0)
    src, dst = pa[query], b.points[train]
    affine, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX)
    if affine is None:
        return Match(0, 0.0)
    n_in = int(inliers.sum())
    if n_in < MIN_INLIERS:
        return Match(n_in, 0.0)
    corr = _aligned_correlation(a, b, affine, mirrored)
    if corr < COPY_CORRELATION:
        # A copy resized to a square (224 x 224) or zoomed by x and y apart is stretched, not only scaled: a
        # similarity leaves it misaligned by pixels at the thumbnail's scale. A full affine fit, kept only when
        # its stretch is one a resize can make, aligns it (bench/near_duplicates.py --families).
        full, _ = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PX)
        if full is not None:
            sv = np.linalg.svd(full[:, :2], compute_uv=False)
            if sv[1] > 0 and sv[0] / sv[1] <= MAX_STRETCH:
                corr = max(corr, _aligned_correlation(a, b, full, mirrored))
    return Match(n_in, corr)


def verify_both_ways(a: Signature, b: Signature, mirrored: bool) -> Match:
    """`verify` of a onto b, and when the geometry held firmly but the pixels did not, of b onto a; the better.

    The correlation is measured in the second film's frame, at its thumbnail's scale, so one direction can blur
    or crop what the other keeps. The second look is a second chance to pass, so it is given only to pairs whose
    geometry is far above chance (SECOND_LOOK_INLIERS).
    """
    match = verify(a, b, mirrored)
    if match.inliers < SECOND_LOOK_INLIERS or match.is_copy:
        return match
    back = verify(b, a, mirrored)
    return back if (back.is_copy, back.correlation) > (match.is_copy, match.correlation) else match


def _aligned_correlation(a: Signature, b: Signature, affine: np.ndarray, mirrored: bool) -> float:
    """block_correlation of b's band-passed thumbnail and a's warped onto it by `affine` (SIFT_SIDE points)."""
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
        return 0.0
    return block_correlation(warped, _bandpass(b.thumb), mask)


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


@dataclass
class CopySearch:
    """What the copy search verified: copies, and near misses (geometry held, pixels just under the threshold)."""

    pairs: list[tuple[int, int, Match]]
    near_misses: list[tuple[int, int, Match]]
    checked: int = 0  # candidate pairs verified


def copy_pairs(
    sigs: Sequence[Signature | None],
    map_fn: Callable[[Callable, list], list] | None = None,
    k: int = CANDIDATES,
    together: Sequence[Sequence[int]] = (),
    scratch: Path | None = None,
) -> CopySearch:
    """Verified augmented-copy pairs (i, j, match), i < j, among `sigs` (None = no signature: skipped).

    together: index sets already known to be one film (exact and near copies). Each set is searched through one
    representative (the member with most keypoints): its byte twins and resized twins need no second look and
    would only fill each other's candidate slots. Then rounds of candidates: first each film's top k; after each
    round the verified links form clusters, and each cluster that grew is queried as one (its summed words)
    against films outside it, with twice the candidates of the round before, until a round links nothing new
    (at most EXPANSION_ROUNDS). Measured on
    bench/near_duplicates.py --families: one query per film left a family of ~100 files in up to 12 clusters,
    because its members' top-k slots held only their nearest relatives.
    scratch: a folder inside the caller's output folder. Given one, from PROCESS_MIN_FILMS films on the checks run
    in worker processes that read the signatures from a store written there (removed when the search ends);
    else through map_fn: a parallel `map(fn, items) -> list` (the audit's thread pool); plain map when None.
    """
    from fracturekit.data.split import units

    group = units(len(sigs), together)
    best_rep: dict[int, int] = {}
    for i, s in enumerate(sigs):
        if s is not None:
            g = int(group[i])
            if g not in best_rep or len(s.points) > len(sigs[best_rep[g]].points):  # type: ignore[union-attr]
                best_rep[g] = i
    index = sorted(best_rep.values())
    present: list[Signature] = [sigs[i] for i in index]  # type: ignore[misc]
    with ExitStack() as stack:
        workers = cpu_threads()
        if scratch is not None and workers > 1 and len(present) >= PROCESS_MIN_FILMS:
            from fracturekit.data.copy_workers import process_checks

            # the workers start now and import while the candidates are searched
            check_rows = stack.enter_context(process_checks(present, workers, scratch))
        else:

            def check_rows(rows: list[tuple[int, int, int]]) -> list[Match]:
                check = lambda row: verify_both_ways(present[row[0]], present[row[1]], bool(row[2]))  # noqa: E731
                # one BLAS thread per check: the checks run on map_fn's threads, and OpenBLAS's own threads called
                # from several threads at once spun instead (FracAtlas's search took over 3x the CPU time)
                with threadpool_limits(1, user_api="blas"):
                    return map_fn(check, rows) if map_fn is not None else [check(row) for row in rows]

        checked = _checked_rounds(CandidateSearch(present), check_rows, k)
    best: dict[tuple[int, int], Match] = {}
    for (i, j, _), m in checked.items():
        key = (index[i], index[j])
        if key not in best or (m.is_copy, m.correlation) > (best[key].is_copy, best[key].correlation):
            best[key] = m
    ordered = sorted(best.items())
    return CopySearch(
        [(i, j, m) for (i, j), m in ordered if m.is_copy],
        [(i, j, m) for (i, j), m in ordered if m.is_near_miss],
        len(checked),
    )


def _checked_rounds(
    search: CandidateSearch, check_rows: Callable[[list[tuple[int, int, int]]], list[Match]], k: int
) -> dict[tuple[int, int, int], Match]:
    """Every candidate row (i, j, mirrored) `copy_pairs`' rounds checked, with its match."""
    from fracturekit.data.split import units

    checked: dict[tuple[int, int, int], Match] = {}
    if not search.usable:
        return checked
    links: list[list[int]] = []
    cands = search.by_film(k)
    n = search.bow.shape[0]
    for r in range(EXPANSION_ROUNDS):
        rows = [row for row in map(tuple, cands.tolist()) if row not in checked]
        matches = check_rows(rows)
        checked.update(zip(rows, matches, strict=True))
        new = [[row[0], row[1]] for row, m in zip(rows, matches, strict=True) if m.is_copy]
        if not new:
            break
        links += new
        label = units(n, links)
        grown = np.unique(label[np.array(new).ravel()])  # only clusters that gained a film are queried again
        cands = search.by_cluster(label, grown, k * 2 ** (r + 1))
    return checked


# Name lineage: suffixes that dataset authors add to a copy's name. Only a name that carries one points to an
# original: equal plain names in two folders are common in Kaggle sets (train/1.jpg, test/1.jpg, and
# fractured/10.png beside `not fractured/10.jpg`) and say nothing about lineage.
_COPY_SUFFIX = re.compile(
    r"(\s*-\s*copy(\s*\(\d+\))?|\s*\(\d+\)|[-_ ]copy\d*"
    r"|[-_ ]?(rotated|rotate|rot|augmented|aug|flipped|flip|mirrored|mirror|cropped|crop|bright|dark|zoom|noise)"
    r"[-_ ]?\d*)$",
    re.IGNORECASE,
)
# ` (N)` alone is what Windows and browsers append when a second, different file of one name arrives: on the
# Kaggle multi-region set 57 of 98 root-level `x (N)` files were other films than `x`. It is stripped only
# under a suffix that does mean a copy (`x-rotated1 (1)` -> `x`).
_COUNTER = re.compile(r"\s*\(\d+\)$")


def lineage(stem: str) -> str | None:
    """The original's name that a copy's file stem points to ('x-rotated1 - Copy (2)' -> 'x'), or None."""
    base, copy_word = stem, False
    while True:
        stripped = _COPY_SUFFIX.sub("", base)
        if stripped == base or not stripped:
            break
        copy_word |= not _COUNTER.fullmatch(base[len(stripped) :])
        base = stripped
    return base.lower() if copy_word else None


# Share of a name group that one content cluster must hold before the names may join the rest: names are never
# the only evidence, so a group whose members content does not link (distinct films sharing a stem) stays apart.
NAME_CONFIRM = 0.5


def _folder(parts: Sequence[str]) -> str:
    """The folder a name is unique in, split folders aside: 'train/fractured/1.jpg' and 'test/fractured/1-rotated1.jpg'
    share 'fractured'; 'not fractured/1-rotated1.jpg' does not (Kaggle sets number each class folder from 1)."""
    kept = [x for x in parts if canonical_split(x) is None]
    return kept[-1].lower() if kept else ""


def name_groups(paths: Sequence[str]) -> dict[tuple[str, str], tuple[list[int], list[int]]]:
    """Films by the original their name points to, within one class folder: (the one plain film of that stem there,
    or none when two split folders each have one; every suffixed name)."""
    plain: dict[tuple[str, str], list[int]] = {}
    kids: dict[tuple[str, str], list[int]] = {}
    for i, path in enumerate(paths):
        pure = PurePosixPath(path.replace("\\", "/"))
        key, base = _folder(pure.parts[:-1]), lineage(pure.stem)
        if base is None:
            plain.setdefault((key, pure.stem.lower()), []).append(i)
        else:
            kids.setdefault((key, base), []).append(i)
    return {key: (p if len(p := plain.get(key, [])) == 1 else [], k) for key, k in kids.items()}


def name_links(paths: Sequence[str], content: Sequence[int]) -> tuple[list[list[int]], list[list[int]]]:
    """(links, unconfirmed): films that name lineage joins to their family, and name groups it could not join.

    content: each film's cluster by content alone (exact, near, augmented). A group (`name_groups`) is confirmed
    when one content cluster (its anchor) holds at least two of its films and NAME_CONFIRM of them, and no other
    cluster holds two (two families sharing a stem, in two split folders); then its suffixed films that content
    left alone, or in clusters of this group's names only, join the anchor. A plain film is never joined by its
    name, and a cluster holding other names stays apart. The films a confirmed group could not join, and every
    unconfirmed group in two or more clusters, come back as `unconfirmed`, for the audit to report when they
    straddle splits.
    """
    label = np.asarray(content)
    cluster_size = Counter(label.tolist())
    links: list[list[int]] = []
    unconfirmed: list[list[int]] = []
    for original, kids in name_groups(paths).values():
        members = [*original, *kids]
        if len(members) < 2:
            continue
        counts = Counter(int(label[i]) for i in members)
        (anchor, held), *rest = counts.most_common(2)
        if held < max(2, NAME_CONFIRM * len(members)) or (rest and rest[0][1] >= 2):
            if len(counts) > 1:
                unconfirmed.append(members)
            continue
        # suffixed films whose whole content cluster carries this group's names
        join = [i for i in kids if label[i] != anchor and cluster_size[int(label[i])] == counts[int(label[i])]]
        if join:
            links.append([next(i for i in members if label[i] == anchor), *join])
        joined = set(join)
        left = [i for i in members if label[i] != anchor and i not in joined]
        if left:
            unconfirmed.append([next(i for i in members if label[i] == anchor), *left])
    return links, unconfirmed
