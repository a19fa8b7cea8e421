"""Benchmark: full FracAtlas `prepare` (with its audit) against a plain copy of the same images.

    .venv/bin/python bench/prepare_bench.py [--data ../shared/data/fracatlas] [--augment N] [--threshold-study]

Prints the wall time of prepare + audit, of a `shutil.copy` loop over the same image files into a
temporary folder, and their ratio, in one run, with the goals (FracAtlas: at most 45 s on 2 cores and a peak
RSS of at most 800 MB, this process and its children as `resource.getrusage` reports them).
`--augment N` first writes a Kaggle-style class-folder copy of FracAtlas with N extra augmented copies
(bench/augcopies.py, default strength, Kaggle-like names) and benchmarks that instead: N = 6,000 gives the
10,000-film case (goal: at most 150 s). `--threshold-study` also prints the perceptual-hash
distance distribution used to choose `fracturekit.data.hashing.NEAR_THRESHOLD`: nearest different film
per film, and distances of transformed copies (flip, rotation, resize, re-encoding) of 300 films.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from augcopies import augment_copy, copy_name  # noqa: E402
from cpuinfo import cpu_line, cpu_s  # noqa: E402

from fracturekit.audit import LINK_KINDS  # noqa: E402
from fracturekit.core.parallel import parallel_map  # noqa: E402
from fracturekit.data.hashing import dihedral_phashes, min_dihedral_distances, nearest_distances  # noqa: E402
from fracturekit.data.imageio import is_image_file, read_image  # noqa: E402
from fracturekit.prepare import prepare  # noqa: E402

RSS_GOAL_MB = 800  # issue 25: prepare + audit of FracAtlas within 800 MB


def _copy_all(files: list[Path], dest: Path) -> float:
    """Seconds to copy every file with shutil.copy (the reference: the least any prepare must do)."""
    t = time.perf_counter()
    for k, f in enumerate(files):
        shutil.copy(f, dest / f"{k}_{f.name}")
    return time.perf_counter() - t


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_GRAYSCALE)


TRANSFORMS = {
    "hflip": lambda a: a[:, ::-1],
    "rot90": lambda a: np.rot90(a),
    "resize 0.5 + JPEG q75": lambda a: _jpeg(cv2.resize(a, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA), 75),
    "rot270 + resize 0.7 + JPEG q60": lambda a: _jpeg(cv2.resize(np.rot90(a, 3), None, fx=0.7, fy=0.7), 60),
    "resize 0.3": lambda a: cv2.resize(a, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA),
    "gamma 0.8": lambda a: (255 * (a / 255.0) ** 0.8).astype(np.uint8),
}


def threshold_study(files: list[Path], n_copies: int = 300) -> None:
    """Print min dihedral Hamming distances: nearest different film, and transformed copies."""
    pixels = parallel_map(lambda f: read_image(f).pixels, files)
    hashes = np.stack(parallel_map(dihedral_phashes, pixels))
    hist = sorted(Counter(nearest_distances(hashes).tolist()).items())
    print(f"nearest different film, distance: films  {hist}")
    idx = np.random.default_rng(0).choice(len(files), min(n_copies, len(files)), replace=False)
    for name, fn in TRANSFORMS.items():
        dists = []
        for i in idx:
            copy = dihedral_phashes(np.ascontiguousarray(fn(pixels[i])))
            both = np.stack([hashes[i], copy])
            dists.append(int(min_dihedral_distances(both, slice(0, 1))[0, 1]))
        print(f"copy of film ({name}), distance: films  {sorted(Counter(dists).items())}")


def augmented_set(files: list[Path], n_copies: int, dest: Path, seed: int = 0) -> list[Path]:
    """FracAtlas as Kaggle class folders plus `n_copies` augmented copies of random films; returns all files."""
    rng = np.random.default_rng(seed)
    out: list[Path] = []
    for f in files:
        cls = "fractured" if "Fractured" in f.parts else "not fractured"
        (dest / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest / cls / f.name)
        out.append(dest / cls / f.name)
    for k, i in enumerate(rng.choice(len(out), n_copies)):
        src = out[int(i)]
        copy = augment_copy(cv2.imread(str(src), cv2.IMREAD_GRAYSCALE), rng, "default")
        name = dest / src.parent.name / copy_name(f"{src.stem}", k + 1, rng)
        if name.exists():
            name = name.with_stem(f"{name.stem}_{k}")
        cv2.imwrite(str(name), copy)
        out.append(name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fracatlas")
    parser.add_argument("--augment", type=int, default=0, help="add N augmented copies (Kaggle-style folders)")
    parser.add_argument("--threshold-study", action="store_true")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data}: FracAtlas not found; pass --data")
    files = sorted(p for p in args.data.rglob("*") if p.is_file() and is_image_file(p))
    cores = len(os.sched_getaffinity(0))
    print(cpu_line())
    with tempfile.TemporaryDirectory(prefix="fk-bench-") as tmp:
        source = args.data
        if args.augment:
            source = Path(tmp) / "augmented"
            files = augmented_set(files, args.augment, source)
            print(f"augmented FracAtlas: {args.augment} copies added as Kaggle-style class folders")
        goal = 45.0 if not args.augment else 150.0
        print(f"{len(files)} image files, {sum(f.stat().st_size for f in files) / 1e6:.1f} MB, {cores} cores")
        copy_dir = Path(tmp) / "copy"
        copy_dir.mkdir()
        t_copy = _copy_all(files, copy_dir)
        t, cpu = time.perf_counter(), cpu_s()
        res = prepare(source, Path(tmp) / "prepared")
        t_prepare, cpu_prepare = time.perf_counter() - t, cpu_s() - cpu
        s = res.summary
        a = res.audit
        assert a is not None
        print(
            f"prepared {s['ok']} ok + {s['skipped']} skipped of {s['images_in']}; boxes "
            f"{sum(s['boxes_per_split'].values())}; {s['copied_byte_for_byte']} copied, {s['written_png']} PNG"
        )
        per_kind = ", ".join(f"{sum(c.kind == k for c in a.clusters)} {k}" for k in LINK_KINDS)
        print(
            f"audit: {len(a.clusters)} duplicate clusters ({per_kind}), "
            f"{a.n_duplicate_files} files, {len(a.conflicts)} label conflicts, leaks {a.leaks}"
        )
        print(f"films grouped by link: {s['grouped_by_link']}")
        print(f"phases (s): {s['timings_s']}")
    print(f"prepare + audit: {t_prepare:.1f} s (goal <= {goal:.0f} s: {'met' if t_prepare <= goal else 'NOT met'})")
    print(
        f"prepare + audit CPU time (all threads, the copy search's worker processes included): {cpu_prepare:.1f} s "
        "(the figure to compare on a busy machine)"
    )
    who = {"self": resource.RUSAGE_SELF, "children": resource.RUSAGE_CHILDREN}
    rss = {k: resource.getrusage(w).ru_maxrss / 1024 for k, w in who.items()}  # ru_maxrss: KiB on Linux
    # "children" is the largest child's ru_maxrss, and Linux starts a child's count at its parent's peak when the
    # child is forked (or vforked) and exec'd, as the copy search's loky workers are: it reads at most the parent's
    # peak at that moment, not a worker's own use (a FracAtlas worker: 83 MB after start, 202 MB after reading all
    # of the 124 MB signature store it maps, by /proc/self/statm)
    print(
        f"peak RSS: {rss['self']:.0f} MB self, {rss['children']:.0f} MB children (goal <= {RSS_GOAL_MB} MB: "
        f"{'met' if max(rss.values()) <= RSS_GOAL_MB else 'NOT met'})"
    )
    print(f"plain shutil.copy of the same {len(files)} files: {t_copy:.1f} s")
    print(f"ratio prepare/copy: {t_prepare / t_copy:.1f}x")
    if args.threshold_study:
        threshold_study(files)


if __name__ == "__main__":
    main()
