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
import tempfile
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from augcopies import STRENGTHS, augment_copy, build_families  # noqa: E402
from cpuinfo import cpu_line  # noqa: E402

from fracturekit.core.parallel import parallel_map  # noqa: E402
from fracturekit.core.yolo_env import cpu_threads  # noqa: E402
from fracturekit.data import copies  # noqa: E402
from fracturekit.data.hashing import dihedral_phashes, near_pairs  # noqa: E402
from fracturekit.data.split import units  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATA = SHARED / "fracatlas" / "images"


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


def run(files: list[Path], n_orig: int, n_copy: int, strength: str, seed: int, show: Path | None) -> dict:
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
    search = copies.copy_pairs(sigs, map_fn=parallel_map, together=old.tolist())
    t_pairs = time.perf_counter() - t0
    found = {(i, j) for i, j, _ in search.pairs}
    new = [*found, *map(tuple, old.tolist())]

    truth = {(k, n_orig + k) for k in range(n_copy)}
    same_film = {tuple(p) for p in near_pairs(ph[:n_orig], threshold=4).tolist()}  # FracAtlas' own repeats

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
        "candidates": search.checked,
        "ms_sig": 1000 * t_sig / n,
        "ms_pairs": 1000 * t_pairs / n,
        "ms_phash": 1000 * t_phash / n,
    }


def run_families(files: list[Path], args: argparse.Namespace, seed: int, work: Path) -> dict:
    """Build the family replica for `seed`, run a default `prepare` on it, and score what the audit kept together."""
    from fracturekit.prepare import prepare

    t0 = time.perf_counter()
    src = work / f"kaggle-{seed}"
    lineage, clashing = build_families(files, args.families, args.small, args.singles, seed, src)[:2]
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    prepared = prepare(src, work / f"prepared-{seed}", seed=seed, runs_dir=None)
    t_prep = time.perf_counter() - t0
    cluster_of = {m.path: c.id for c in prepared.audit.clusters for m in c.members}
    unit = {rel: cluster_of.get(rel, f"alone:{rel}") for rel in lineage}
    size = Counter(lineage.values())
    large = [o for o, n in size.items() if n >= 50]
    parts = {o: {unit[r] for r, oo in lineage.items() if oo == o} for o in large}
    root_of = {f"{Path(r).parent}/{Path(r).stem}": r for r in lineage}
    merged = sum(unit[c] == unit.get(root_of.get(f"{Path(c).parent}/{Path(c).stem[:-4]}"), "") for c in clashing)

    import pandas as pd

    m = pd.read_csv(prepared.dataset.manifest, dtype=str).fillna("")
    m = m[m["status"] == "ok"]
    orig = m["source"].map(lineage)
    in_train = set(orig[m["split"] == "train"])
    test = orig[m["split"] == "test"]
    fam_of_cluster: dict[int, set[str]] = {}
    for c in prepared.audit.clusters:
        fam_of_cluster[c.id] = {lineage[mm.path] for mm in c.members}
    return {
        "seed": seed,
        "files": len(lineage),
        "large": len(large),
        "large_files": sum(size[o] for o in large),
        "whole": sum(len(p) == 1 for p in parts.values()) / max(1, len(large)),
        "max_parts": max((len(p) for p in parts.values()), default=0),
        "test_leak": float(test.isin(in_train).mean()),
        "n_test": len(test),
        "collisions": len(clashing),
        "collisions_merged": merged,
        "mixed_clusters": sum(len(f) > 1 for f in fam_of_cluster.values()),
        "mixed": sorted(" ~ ".join(sorted(f)) for f in fam_of_cluster.values() if len(f) > 1),
        "clusters": len(prepared.audit.clusters),
        "leaks": prepared.audit.leaks,
        "s_build": t_build,
        "s_prepare": t_prep,
    }


def run_distinct(name: str, n_copy: int, seed: int) -> dict:
    """False merges on films of known, distinct patients (`../shared/data/<name>/images/*/<patient><L|R>.png`,
    patient = the first 7 characters), beside recall on `n_copy` seeded default-strength copies of them, with the
    audit's own content test (duplicate_links: exact, near and augmented; no names)."""
    from fracturekit.audit import AuditItem, duplicate_links, joining
    from fracturekit.data.hashing import pixel_sha256

    files = sorted((SHARED / name / "images").glob("*/*.png"))
    if not files:
        raise SystemExit(f"{SHARED / name}: no images/*/*.png (see ../shared/data/README.md)")
    rng = np.random.default_rng(seed)
    films = parallel_map(lambda p: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), files)
    picked = rng.choice(len(files), n_copy, replace=False)
    films += [augment_copy(films[k], rng, "default") for k in picked]
    t0 = time.perf_counter()
    sigs = parallel_map(lambda f: (pixel_sha256(f), dihedral_phashes(f), copies.signature(f)), films)
    items = [AuditItem(str(i), "", "", None, "", *sig) for i, sig in enumerate(sigs)]
    unit = units(len(items), [lk.members for lk in joining(duplicate_links(items, names=False))])
    seconds = time.perf_counter() - t0
    patient = [p.stem[:7] for p in files]
    by_unit: dict[int, set[str]] = {}
    for i, pt in enumerate(patient):
        by_unit.setdefault(int(unit[i]), set()).add(pt)
    merged = [i for i in range(len(files)) if len(by_unit[int(unit[i])]) > 1]
    same_patient = sum(
        unit[i] == unit[j]
        for i in range(len(files))
        for j in range(i + 1, min(i + 3, len(files)))
        if patient[i] == patient[j]
    )
    return {
        "films": len(files),
        "patients": len(set(patient)),
        "false_merge": len(merged) / len(files),
        "false_merged_films": len(merged),
        "same_patient_linked": same_patient,
        "recall": float(np.mean([unit[k] == unit[len(files) + c] for c, k in enumerate(picked)])),
        "copies": n_copy,
        "seconds": seconds,
    }


def distinct_main(args: argparse.Namespace) -> None:
    """Print the false-merge table on films of known distinct patients: one row per seed."""
    print(
        f"distinct: {args.distinct} (films of known patients; a link between two patients' films is a false merge), "
        f"plus {args.copies} default-strength copies of random films for recall; the audit's content test"
    )
    print(
        f"{'seed':>4} {'films':>6} {'patients':>8} {'films linked to another patient':>32} {'L/R pairs linked':>17} "
        f"{'copy recall':>12} {'s':>6}"
    )
    for seed in args.seed:
        r = run_distinct(args.distinct, args.copies, seed)
        print(
            f"{seed:>4} {r['films']:>6} {r['patients']:>8} {r['false_merge']:>24.2%} ({r['false_merged_films']:>3}) "
            f"{r['same_patient_linked']:>17} {r['recall']:>11.1%} {r['seconds']:>6.1f}"
        )


def families_main(files: list[Path], args: argparse.Namespace) -> None:
    """Print the copy-family table: one row per seed."""
    work = (args.work or Path(tempfile.mkdtemp(prefix="fk-families-"))).resolve()
    print(
        f"families: {args.families} copy families of 50-200 files (full-size film + 224 px rotation chains + byte "
        f"twins), {args.small} small families, {args.singles} single films, FracAtlas; a default prepare each; "
        f"work folder {work}"
    )
    print(
        f"{'seed':>4} {'files':>6} {'families whole':>15} {'max clusters/family':>20} {'test films leaking':>19} "
        f"{'(N) films merged':>17} {'mixed clusters':>15} {'prepare s':>10}"
    )
    for seed in args.seed:
        r = run_families(files, args, seed, work)
        print(
            f"{seed:>4} {r['files']:>6} {r['whole']:>14.1%} {r['max_parts']:>20} "
            f"{r['test_leak']:>10.2%} of {r['n_test']:>4} {r['collisions_merged']:>10} of {r['collisions']:>3} "
            f"{r['mixed_clusters']:>15} {r['s_prepare']:>10.1f}"
        )
        for names in r["mixed"]:  # distinct originals in one cluster: FracAtlas' own repeats, or false merges
            print(f"     mixed cluster, FracAtlas originals: {names}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--originals", type=int, default=450)
    ap.add_argument("--copies", type=int, default=150)
    ap.add_argument("--strength", nargs="+", default=["mild", "default", "strong"], choices=sorted(STRENGTHS))
    ap.add_argument("--seed", type=int, nargs="+", default=[0])
    ap.add_argument("--show", type=Path, help="write the merged original pairs side by side here (PNG) and list them")
    ap.add_argument("--families", type=int, help="copy-family mode: this many families of 50-200 files (see below)")
    ap.add_argument("--small", type=int, default=60, help="with --families: small families (film + 1-12 copies)")
    ap.add_argument("--singles", type=int, default=150, help="with --families: single films")
    ap.add_argument("--work", type=Path, help="with --families: folder for the replica and its prepared dataset")
    ap.add_argument("--distinct", help="false merges on ../shared/data/NAME, films of known distinct patients")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"FracAtlas not found at {DATA}: this bench needs ../shared/data/fracatlas")
    cv2.setNumThreads(1)  # the thread pool spreads films over the cores; OpenCV's own threads would oversubscribe
    files = sorted(DATA.glob("*/*.jpg"))
    print(cpu_line())
    if args.families:
        families_main(files, args)
        return
    if args.distinct:
        distinct_main(args)
        return
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
            show = args.show.with_name(f"{args.show.stem}-{strength}-{seed}.png") if args.show else None
            r = run(files, args.originals, args.copies, strength, seed, show)
            print(
                f"{strength:8} {seed:>4} {r['recall']:>7.1%} {r['false_merge']:>7.2%} ({r['false_merged_films']:>2}) "
                f"{r['recall_phash']:>13.1%} {r['false_merge_phash']:>9.2%} {r['candidates']:>6} "
                f"{r['ms_sig']:>11.1f} {r['ms_pairs']:>13.1f} {r['ms_phash']:>13.1f}"
            )


if __name__ == "__main__":
    main()
