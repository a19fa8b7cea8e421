"""The copy-signature file: `Signature`s of films under their paths, in one compact .npz.

A run's `seen_copies.npz` (`fracturekit.training.seen_copies`) and a prepared dataset's `signatures.npz`
(`PreparedDataset.signatures`, keyed by manifest `source`) are such files. Stored compactly:
keypoints as float16 (0.125 px at the 256 px SIFT scale, against RANSAC's 4 px), RootSIFT descriptors as uint8, at
most MAX_KEYPOINTS per film, the 128 px thumbnail as a lossless PNG. A film with no signature is stored with no
keypoints (the copy search skips it).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from fracturekit.data.copies import Signature

FORMAT = 1
# Keypoints kept per film, a seeded random subset (SIFT's own order is by position, so a prefix would keep one
# side of the film). Measured on FracAtlas (150 films as training films, 50 of them copied by bench/augcopies.py
# at "default" strength): the copy search found 49/50 with all keypoints, and 49/50 capped at 200, 150 or 100,
# with no other link; the median film has 102 keypoints and the 90th percentile 277 (SIFT_FEATURES caps at 400).
MAX_KEYPOINTS = 150


def capped(sig: Signature, most: int = MAX_KEYPOINTS) -> Signature:
    """`sig` with at most `most` keypoints, a seeded random subset in the original order."""
    if len(sig.points) <= most:
        return sig
    keep = np.sort(np.random.default_rng(0).choice(len(sig.points), most, replace=False))
    return Signature(sig.points[keep], sig.descriptors[keep], sig.width, sig.thumb)


def write_signatures(out: Path, paths: Sequence[str], sigs: Sequence[Signature | None], compress: bool = True) -> int:
    """Write `sigs` under `paths` to `out`, each capped to MAX_KEYPOINTS (None: stored with no keypoints); returns
    the file's size in bytes.

    compress=False: np.savez, not np.savez_compressed. FracAtlas's 4,083 films: 6.91 s and 66.0 MB compressed,
    1.05 s (most of it the thumbnails' PNGs) and 87.6 MB not. prepare writes the dataset's file uncompressed; a run's
    own file stays compressed."""
    empty = Signature(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8), 0, np.zeros((0, 0), np.uint8))
    sigs = [capped(s) if s is not None else empty for s in sigs]
    thumbs = [cv2.imencode(".png", s.thumb)[1].ravel() if s.thumb.size else np.zeros(0, np.uint8) for s in sigs]
    (np.savez_compressed if compress else np.savez)(
        out,
        format=np.array(FORMAT),
        paths=np.array(list(paths), dtype=str),
        counts=np.array([len(s.points) for s in sigs], np.int32),
        widths=np.array([s.width for s in sigs], np.int32),
        points=np.concatenate([s.points.astype(np.float16) for s in sigs] + [np.zeros((0, 2), np.float16)]),
        descriptors=np.concatenate([s.descriptors for s in sigs] + [np.zeros((0, 128), np.uint8)]),
        thumb_sizes=np.array([len(t) for t in thumbs], np.int64),
        thumbs=np.concatenate([*thumbs, np.zeros(0, np.uint8)]),
    )
    return out.stat().st_size


def read_signatures(path: Path) -> dict[str, Signature] | None:
    """Path -> its Signature from a signature file; None when the file is unreadable or of another format (the
    seen check then falls back to the hashes, as for a run without one; `train` signs its films itself)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != FORMAT:
                return None
            paths, counts, widths = z["paths"].tolist(), z["counts"], z["widths"]
            points, descriptors = z["points"].astype(np.float32), z["descriptors"]
            thumb_sizes, thumbs = z["thumb_sizes"], z["thumbs"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    starts = np.concatenate([[0], np.cumsum(counts)])
    thumb_starts = np.concatenate([[0], np.cumsum(thumb_sizes)])
    out: dict[str, Signature] = {}
    for k, p in enumerate(paths):
        a, b = starts[k], starts[k + 1]
        png = thumbs[thumb_starts[k] : thumb_starts[k + 1]]
        thumb = cv2.imdecode(png, cv2.IMREAD_GRAYSCALE) if len(png) else np.zeros((0, 0), np.uint8)
        out[p] = Signature(points[a:b], descriptors[a:b], int(widths[k]), thumb)
    return out
