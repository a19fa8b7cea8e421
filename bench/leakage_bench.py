"""What leakage costs: a naive random split of a Kaggle-style augmented set against fracturekit's own split.

    .venv/bin/python bench/leakage_bench.py [--data ../shared/data/fracatlas] [--work DIR] [--originals 300]
        [--copies 4] [--heldout 200] [--strength default] [--epochs 10] [--imgsz 160] [--max-side 512] [--seed 0]

1. From FracAtlas, draws `--originals` films (half fractured, half not: balanced so that a few hundred films still
   give a usable AUROC; FracAtlas itself is 18% fractured) and `--heldout` DIFFERENT films, dropping any film
   that is a duplicate (perceptual hash) of another drawn one, so the written lineage is the only link between
   files.
2. Writes each original plus `--copies` augmented copies (bench/augcopies.py: rotated, cropped, brightened,
   mirrored, re-encoded, saved under Kaggle-like or fresh names) as class folders `fractured/`,
   `not fractured/` (the augmented set), the held-out originals as their own class folders, and lineage.csv
   (file -> original). Every written film has its long side <= --max-side (512): at imgsz 160 that loses
   nothing the model sees, and decoding 1,024 px JPEGs would otherwise eat much of a CPU budget.
3. Naive arm: what Kaggle users do, a random 70/15/15 split of the augmented FILES (stratified by label),
   written as train/val/test class folders and prepared with `keep_splits` (fracturekit keeps those splits
   and only audits them). fracturekit arm: `prepare` on the flat augmented folder, its own leak-free split.
4. Trains the same YOLOv8n-cls from scratch (`fracturekit train`, same epochs, imgsz, seed, threads) on each,
   evaluates each on its own test split (`fracturekit evaluate`) and on the held-out originals with the same
   scorer `evaluate` uses for a split (`classify_images`, raw probabilities), with a film-level bootstrap CI
   (honest on the held-out set, which has no copies; the test split's CI still resamples films).
5. Prints, per arm: test AUROC, held-out AUROC, the share of test films with a copy of the same original in
   train (from the known lineage, not from the audit), what the audit found, and wall times; writes result.json.

Everything is written under --work (default: a new temporary folder), which must be empty or new and outside
the repository. The held-out AUROC is the number to believe; the gap between the two columns is the leak.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from augcopies import STRENGTHS, augment_copy, build_families, copy_name  # noqa: E402  (bench/ is sys.path[0])

if TYPE_CHECKING:
    from fracturekit.audit import AuditResult

CLASS_DIRS = {"Fractured": "fractured", "Non_fractured": "not fractured"}  # FracAtlas folder -> Kaggle folder
SPLIT_RATIOS = (0.7, 0.15, 0.15)


def cpu_line() -> str:
    """CPU model, usable cores and the SIMD flags that change CPU speed (lscpu), for every benchmark print."""
    model = platform.processor() or "unknown CPU"
    flags: list[str] = []
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), model)
        have = set(re.findall(r"\S+", next((ln for ln in out.splitlines() if ln.startswith("Flags")), "")))
        flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in have]
    except (OSError, subprocess.SubprocessError):
        pass
    return (
        f"CPU: {model}, {len(os.sched_getaffinity(0))} cores usable, flags: {' '.join(flags) or 'none of avx2/avx512'}"
    )


def draw_films(data: Path, n_train: int, n_heldout: int, seed: int) -> tuple[list[Path], list[Path]]:
    """Balanced, seeded draws of distinct FracAtlas films: (originals to augment, held-out originals).

    Candidates are taken in a seeded order per class with a 25% margin; a candidate within the audit's
    near-duplicate distance of an earlier one is dropped (FracAtlas has a few duplicate films), and so is one
    the reader warns about (FracAtlas has truncated JPEGs, which Ultralytics cannot read when scoring).
    """
    from fracturekit.core.parallel import parallel_map
    from fracturekit.data.hashing import NEAR_THRESHOLD, dihedral_phashes, min_dihedral_distances
    from fracturekit.data.imageio import read_image

    rng = np.random.default_rng(seed)
    chosen: tuple[list[Path], list[Path]] = ([], [])
    for folder in CLASS_DIRS:
        files = sorted((data / "images" / folder).glob("*.jpg"))
        want = (n_train // 2 + (n_train % 2 if folder == "Fractured" else 0), n_heldout // 2)
        pool = [files[i] for i in rng.permutation(len(files))[: int(1.25 * sum(want)) + 10]]
        films = parallel_map(read_image, pool)
        pool = [p for p, f in zip(pool, films, strict=True) if not f.warnings]
        hashes = np.stack(parallel_map(dihedral_phashes, [f.pixels for f in films if not f.warnings]))
        dist = min_dihedral_distances(hashes, slice(0, len(pool)))
        keep = [i for i in range(len(pool)) if not np.any(dist[i, :i] <= NEAR_THRESHOLD)]
        if len(keep) < sum(want):
            raise SystemExit(f"{data / 'images' / folder}: only {len(keep)} distinct films, {sum(want)} needed.")
        chosen[0].extend(pool[i] for i in keep[: want[0]])
        chosen[1].extend(pool[i] for i in keep[want[0] : sum(want)])
    return chosen


def _save(path: Path, gray: np.ndarray, max_side: int) -> None:
    from fracturekit.data.imageio import limit_side

    cv2.imwrite(str(path), limit_side(gray, max_side)[0], [cv2.IMWRITE_JPEG_QUALITY, 95])


def write_heldout(heldout: list[Path], max_side: int, work: Path) -> None:
    """work/heldout/cls/test/<class>/: the held-out originals under the models' class names."""
    from fracturekit.core.layout import NEGATIVE_CLASS, POSITIVE_CLASS
    from fracturekit.core.parallel import parallel_map
    from fracturekit.data.imageio import read_image

    def held(path: Path) -> None:
        label = POSITIVE_CLASS if path.parent.name == "Fractured" else NEGATIVE_CLASS
        _save(work / "heldout" / "cls" / "test" / label / path.name, read_image(path).pixels, max_side)

    for name in (POSITIVE_CLASS, NEGATIVE_CLASS):
        (work / "heldout" / "cls" / "test" / name).mkdir(parents=True, exist_ok=True)
    parallel_map(held, heldout)


def build_sets(
    originals: list[Path], heldout: list[Path], copies: int, strength: str, max_side: int, work: Path, seed: int
) -> dict[str, str]:
    """Write work/augmented/<class>/ (originals + copies), work/heldout/cls/test/<class>/ and work/lineage.csv.

    Every film, held-out ones included, is saved with its long side <= max_side at JPEG quality 95, so that
    both models see the same kind of file everywhere (copies are made from the full-size film first).
    Returns {file path under work/augmented: its original}.
    """
    from fracturekit.core.parallel import parallel_map
    from fracturekit.data.imageio import read_image

    save = lambda path, gray: _save(path, gray, max_side)  # noqa: E731

    def one(args: tuple[int, Path]) -> list[dict[str, str]]:
        k, path = args
        rng = np.random.default_rng([seed, k])  # one stream per original: same copies at any worker count
        folder = work / "augmented" / CLASS_DIRS[path.parent.name]
        gray = read_image(path).pixels
        save(folder / path.name, gray)  # the original itself stays in the set, as on Kaggle
        out = [{"file": f"{folder.name}/{path.name}", "original": path.name, "label": folder.name, "copy": "0"}]
        for c in range(1, copies + 1):
            name = copy_name(path.stem, c, rng)
            save(folder / name, augment_copy(gray, rng, strength))
            out.append({"file": f"{folder.name}/{name}", "original": path.name, "label": folder.name, "copy": str(c)})
        return out

    write_heldout(heldout, max_side, work)
    rows: list[dict[str, str]] = []
    for name in CLASS_DIRS.values():
        (work / "augmented" / name).mkdir(parents=True, exist_ok=True)
    for part in parallel_map(one, list(enumerate(originals))):
        rows.extend(part)
    dupes = [n for n, c in Counter(r["file"] for r in rows).items() if c > 1]
    if dupes:  # a name collision would silently overwrite a copy and corrupt the lineage
        raise SystemExit(f"copy names collide ({dupes[:3]}); use another --seed.")
    with (work / "lineage.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return {r["file"]: r["original"] for r in rows}


def naive_split(source: Path, lineage: dict[str, str], work: Path, seed: int) -> tuple[Path, dict[str, str]]:
    """work/naive/{train,val,test}/<class>/: a random, label-stratified split of the files of `source` (hard
    links), and the lineage of the linked files (keyed by their path under work/naive)."""
    from sklearn.model_selection import train_test_split

    files = sorted(source / rel for rel in lineage)
    labels = [p.parent.name for p in files]
    train, rest = train_test_split(files, train_size=SPLIT_RATIOS[0], stratify=labels, random_state=seed)
    val, test = train_test_split(
        rest,
        test_size=SPLIT_RATIOS[2] / sum(SPLIT_RATIOS[1:]),
        stratify=[p.parent.name for p in rest],
        random_state=seed,
    )
    naive: dict[str, str] = {}
    for split, part in (("train", train), ("val", val), ("test", test)):
        for p in part:
            rel = f"{split}/{p.parent.name}/{p.name}"
            (work / "naive" / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(p, work / "naive" / rel)
            naive[rel] = lineage[p.relative_to(source).as_posix()]
    return work / "naive", naive


def lineage_leak(manifest: Path, lineage: dict[str, str]) -> tuple[float, int]:
    """Share of test films whose original (itself or a copy) is in train, from the lineage; and the test count."""
    import pandas as pd

    m = pd.read_csv(manifest, dtype=str).fillna("")
    m = m[m["status"] == "ok"]
    orig = m["source"].map(lineage)
    in_train = set(orig[m["split"] == "train"])
    test = orig[m["split"] == "test"]
    return float(test.isin(in_train).mean()), len(test)


def audit_found(audit: AuditResult, lineage: dict[str, str]) -> dict[str, int]:
    """Original/copy pairs the audit put in one cluster, of all such pairs; and pairs of different originals."""
    per_original = Counter(lineage.values())
    total = sum(n * (n - 1) // 2 for n in per_original.values())
    linked = false = 0
    for c in audit.clusters:
        origs = [lineage[m.path] for m in c.members]
        same = sum(n * (n - 1) // 2 for n in Counter(origs).values())
        linked += same
        false += len(origs) * (len(origs) - 1) // 2 - same
    return {"pairs": total, "linked": linked, "false_links": false, "leaks": audit.leaks}


def heldout_auroc(run: Path, heldout: Path, seed: int) -> tuple[float, list[float], int]:
    """AUROC on the held-out originals, scored exactly like `evaluate` scores a test split (same function, raw
    probabilities), with a film-level bootstrap CI (honest here: the held-out films have no copies)."""
    from fracturekit.core.layout import POSITIVE_CLASS, PreparedDataset
    from fracturekit.evaluate import classify_images
    from fracturekit.evaluation import metrics as M
    from fracturekit.infer.model import load_model

    model = load_model(run, "classify", device="cpu", backend="torch")
    skipped: list[dict] = []
    _, y, probs = classify_images(model, PreparedDataset(heldout), "test", skipped)
    names = [model.names[i] for i in range(len(model.names))]
    p = probs[:, names.index(POSITIVE_CLASS)]
    y = (y == names.index(POSITIVE_CLASS)).astype(int)
    return M.auroc(y, p), list(M.bootstrap_ci(y, p, seed=seed)), len(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fracatlas")
    parser.add_argument("--work", type=Path, default=None, help="Empty or new folder for everything (default: temp).")
    parser.add_argument("--originals", type=int, default=300, help="FracAtlas films to augment (half fractured).")
    parser.add_argument("--copies", type=int, default=4, help="Augmented copies per original.")
    parser.add_argument("--heldout", type=int, default=200, help="Different original films neither model sees.")
    parser.add_argument("--strength", choices=sorted(STRENGTHS), default="default")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument(
        "--max-side", type=int, default=512, help="Long side of every written film (px): decoding stays cheap."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--families",
        type=int,
        help="families arm: instead of --originals x --copies, a Kaggle-like set of this many copy families of "
        "50-200 files (bench/augcopies.py build_families) plus --small small families and --singles single films",
    )
    parser.add_argument("--small", type=int, default=60, help="with --families: small families (film + 1-12 copies)")
    parser.add_argument("--singles", type=int, default=150, help="with --families: single films")
    args = parser.parse_args()
    if not (args.data / "images" / "Fractured").is_dir():
        sys.exit(f"{args.data}: FracAtlas not found (no images/Fractured); pass --data PATH (see ../shared/data).")
    if min(args.originals, args.heldout) < 20 or args.copies < 1 or args.epochs < 1:
        sys.exit("--originals and --heldout need at least 20 films, --copies and --epochs at least 1.")
    work = (args.work or Path(tempfile.mkdtemp(prefix="fk-leakage-"))).resolve()
    if work.is_relative_to(REPO):
        sys.exit(f"--work {work}: inside the repository; pass a folder outside it.")
    if work.exists() and any(work.iterdir()):
        sys.exit(f"--work {work}: not empty; pass a new or empty folder (nothing in it is overwritten).")
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(work / "ultralytics-settings"))  # Ultralytics writes nothing else
    os.environ.setdefault("FRACTUREKIT_OFFLINE", "1")

    from fracturekit.evaluate import evaluate
    from fracturekit.prepare import prepare
    from fracturekit.train import train

    t_all = time.perf_counter()
    times: dict[str, float] = {}
    t = time.perf_counter()
    if args.families:
        files = sorted((args.data / "images").glob("*/*.jpg"))
        lineage, _, heldout = build_families(
            files, args.families, args.small, args.singles, args.seed, work / "augmented", args.heldout
        )
        write_heldout(heldout, args.max_side, work)
    else:
        originals, heldout = draw_films(args.data, args.originals, args.heldout, args.seed)
        lineage = build_sets(originals, heldout, args.copies, args.strength, args.max_side, work, args.seed)
    times["build"] = time.perf_counter() - t
    naive, naive_lineage = naive_split(work / "augmented", lineage, work, args.seed)
    sources = {"naive": (naive, True, naive_lineage), "fracturekit": (work / "augmented", False, lineage)}

    rows: dict[str, dict] = {}
    for arm, (source, keep, arm_lineage) in sources.items():
        r: dict = {}
        t = time.perf_counter()
        prepared = prepare(source, work / "datasets" / arm, fmt="folders", keep_splits=keep, seed=args.seed)
        r["prepare_s"] = time.perf_counter() - t
        r["leak_share"], r["n_test"] = lineage_leak(prepared.dataset.manifest, arm_lineage)
        r["audit"] = audit_found(prepared.audit, arm_lineage)
        t = time.perf_counter()
        run = train(
            task="classify",
            data=prepared.dataset.root,
            model="yolov8n-cls.yaml",  # from scratch, even where a yolov8n-cls.pt is cached
            project=work / "runs",
            name=arm,
            epochs=args.epochs,
            imgsz=args.imgsz,
            seed=args.seed,
            device="cpu",
            plots=False,
        )
        r["train_s"] = time.perf_counter() - t
        t = time.perf_counter()
        # the naive arm's test films are copies of its training films: evaluate refuses that unless told
        metrics = evaluate(
            prepared.dataset.root, classifier=run.root, out=work / "eval" / arm, seed=args.seed, allow_overlap=True
        )
        r["seen_by_evaluate"] = metrics["provenance"]["train_overlap"]
        r["test_auroc"] = metrics["classification"]["auroc"]
        r["test_auroc_ci95"] = metrics["classification"].get("auroc_ci95")
        r["heldout_auroc"], r["heldout_ci95"], r["n_heldout"] = heldout_auroc(run.root, work / "heldout", args.seed)
        r["evaluate_s"] = time.perf_counter() - t
        rows[arm] = r
    times["total"] = time.perf_counter() - t_all

    n_files = len(lineage)
    print(cpu_line())
    made = (
        f"{args.families} copy families of 50-200 files + {args.small} small families + {args.singles} single films "
        f"from {len(set(lineage.values()))} FracAtlas films"
        if args.families
        else f"{args.originals} FracAtlas originals (balanced) x (1 + {args.copies} '{args.strength}' copies)"
    )
    print(
        f"data: {made} = {n_files} files; held-out: {rows['naive']['n_heldout']} other originals (balanced), "
        "never trained on"
    )
    print(f"recipe: YOLOv8n-cls from scratch, {args.epochs} epochs, imgsz {args.imgsz}, seed {args.seed}, CPU")
    ci = lambda c: "" if not c or c[0] is None else f" [{c[0]:.3f}, {c[1]:.3f}]"  # noqa: E731
    print(
        "| arm | test AUROC [95% CI] | held-out AUROC [95% CI] | test films with a copy of their original in "
        "train | copy pairs the audit linked (false links) | audit leaks | test films evaluate flags as seen | "
        "train s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for arm, r in rows.items():
        a = r["audit"]
        print(
            f"| {arm} | {r['test_auroc']:.3f}{ci(r['test_auroc_ci95'])} | {r['heldout_auroc']:.3f}"
            f"{ci(r['heldout_ci95'])} | {100 * r['leak_share']:.1f}% of {r['n_test']} | {a['linked']} of "
            f"{a['pairs']} ({a['false_links']}) | {a['leaks']} | {r['seen_by_evaluate']} | {r['train_s']:.0f} |"
        )
    print("wall: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + f"; work folder {work}")
    (work / "result.json").write_text(json.dumps({"args": vars(args), "times": times, "arms": rows}, default=str))


if __name__ == "__main__":
    main()
