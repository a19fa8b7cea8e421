"""Augmented-copy detection on real films: pair recall, false merges and time, at several copy strengths.

From FracAtlas (../shared/data/fracatlas) it draws N distinct films, makes one seeded augmented copy of the
first C of them with bench/augcopies.py (rotation, crop, exposure, gamma, mirror, 90-degree turns, JPEG,
rescale, borders or text), and runs the audit's content signals on the mixture:

- recall: copies that end in the same cluster as their original (content signals only: no file names);
- false merges: distinct originals that end in one cluster with another original (or its copy). FracAtlas
  has no patient ids and holds repeat films of one patient, so some of these are real same-patient pairs:
  pairs the perceptual hash already links are excluded from the distinct set, the rest are counted;
- time: signatures (decode excluded) and the pair search, per film, on this machine's cores.

The reference is the perceptual hash alone (what the audit had before), measured in the same run.

    python bench/near_duplicates.py [--originals 450] [--copies 150] [--strength mild default strong] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from augcopies import STRENGTHS, augment_copy  # noqa: E402
from cpuinfo import cpu_line  # noqa: E402

from fracturekit import copies  # noqa: E402
from fracturekit.audit import parallel_map  # noqa: E402
from fracturekit.hashing import dihedral_phashes, near_pairs  # noqa: E402
from fracturekit.split import units  # noqa: E402
from fracturekit.yolo_env import cpu_threads  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fracatlas" / "images"


def montage(films: list[np.ndarray], pairs: list[tuple[int, int]], path: Path) -> None:
    """The merged original pairs side by side, for a person to judge (same film? same patient? distinct?)."""
    tiles = [
        np.hstack(
            [cv2.resize(films[i], (150, 190)), np.full((190, 4), 255, np.uint8), cv2.resize(films[j], (150, 190))]
        )
        for i, j in pairs[:24]
    ]
    if tiles:
        tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 4)
        cv2.imwrite(str(path), np.vstack([np.hstack(tiles[k : k + 4]) for k in range(0, len(tiles), 4)]))


def run(
    files: list[Path], n_orig: int, n_copy: int, strength: str, seed: int, dump: Path | None, show: Path | None
) -> dict:
    rng = np.random.default_rng(seed)
    picked = [files[i] for i in rng.choice(len(files), n_orig, replace=False)]
    films = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in picked]
    films += [augment_copy(films[k], rng, strength) for k in range(n_copy)]
    n = len(films)

    t0 = time.perf_counter()
    ph = np.stack(parallel_map(dihedral_phashes, films))
    old = near_pairs(ph)
    t_phash = time.perf_counter() - t0

    t0 = time.perf_counter()
    sigs = parallel_map(copies.signature, films)
    t_sig = time.perf_counter() - t0
    t0 = time.perf_counter()
    cands = copies.candidate_pairs(sigs)
    rows = list(cands)
    checks = parallel_map(lambda r: copies.verify(sigs[r[0]], sigs[r[1]], bool(r[2])), rows)
    t_pairs = time.perf_counter() - t0
    found = {(int(r[0]), int(r[1])) for r, m in zip(rows, checks, strict=True) if m.is_copy}
    new = [*found, *map(tuple, old.tolist())]

    truth = {(k, n_orig + k) for k in range(n_copy)}
    same_film = {tuple(p) for p in near_pairs(ph[:n_orig], threshold=4).tolist()}  # FracAtlas' own repeats
    if dump is not None:
        lab = [(int(r[0]), int(r[1])) in truth for r in rows]
        np.savez(dump, rows=cands, inliers=[m.inliers for m in checks], corr=[m.correlation for m in checks], copy=lab)

    def score(pairs: list[tuple[int, int]]) -> tuple[float, float, list[tuple[int, int]]]:
        unit = units(n, [list(p) for p in pairs])
        recall = float(np.mean([unit[a] == unit[b] for a, b in truth]))
        merged = [
            (i, j)
            for i in range(n_orig)
            for j in range(i + 1, n_orig)
            if unit[i] == unit[j] and (i, j) not in same_film
        ]
        return recall, len({i for p in merged for i in p}) / n_orig, merged

    r_new, fm_new, merged = score(new)
    r_old, fm_old, _ = score([tuple(p) for p in old.tolist()])
    n_fm = len({i for p in merged for i in p})
    if show is not None:
        montage(films, merged, show)
        for i, j in merged:
            print(f"  merged originals: {picked[i].name} ~ {picked[j].name}")
    return {
        "strength": strength,
        "films": n,
        "recall": r_new,
        "false_merge": fm_new,
        "false_merged_films": n_fm,
        "recall_phash": r_old,
        "false_merge_phash": fm_old,
        "candidates": len(rows),
        "ms_sig": 1000 * t_sig / n,
        "ms_pairs": 1000 * t_pairs / n,
        "ms_phash": 1000 * t_phash / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--originals", type=int, default=450)
    ap.add_argument("--copies", type=int, default=150)
    ap.add_argument("--strength", nargs="+", default=["mild", "default", "strong"], choices=sorted(STRENGTHS))
    ap.add_argument("--seed", type=int, nargs="+", default=[0])
    ap.add_argument("--dump", type=Path, help="write every checked candidate pair (inliers, correlation) here")
    ap.add_argument("--show", type=Path, help="write the merged original pairs side by side here (PNG) and list them")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"FracAtlas not found at {DATA}: this bench needs ../shared/data/fracatlas")
    cv2.setNumThreads(1)  # the thread pool spreads films over the cores; OpenCV's own threads would oversubscribe
    files = sorted(DATA.glob("*/*.jpg"))
    print(cpu_line())
    print(
        f"near_duplicates: {args.originals} FracAtlas films + {args.copies} augmented copies, {cpu_threads()} workers; "
        f"tree {copies.BRANCH}^{copies.DEPTH} words, top {copies.CANDIDATES} candidates, "
        f"copy = >= {copies.MIN_INLIERS} inliers and correlation >= {copies.COPY_CORRELATION}"
    )
    print(
        f"{'strength':8} {'seed':>4} {'recall':>7} {'false merge':>12} {'phash recall':>13} {'phash fm':>9} "
        f"{'cands':>6} {'ms/film sig':>11} {'ms/film pairs':>13} {'ms/film phash':>13}"
    )
    for strength in args.strength:
        for seed in args.seed:
            dump = args.dump.with_name(f"{args.dump.stem}-{strength}-{seed}.npz") if args.dump else None
            show = args.show.with_name(f"{args.show.stem}-{strength}-{seed}.png") if args.show else None
            r = run(files, args.originals, args.copies, strength, seed, dump, show)
            print(
                f"{strength:8} {seed:>4} {r['recall']:>7.1%} {r['false_merge']:>7.2%} ({r['false_merged_films']:>2}) "
                f"{r['recall_phash']:>13.1%} {r['false_merge_phash']:>9.2%} {r['candidates']:>6} "
                f"{r['ms_sig']:>11.1f} {r['ms_pairs']:>13.1f} {r['ms_phash']:>13.1f}"
            )


if __name__ == "__main__":
    main()
