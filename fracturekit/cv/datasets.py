"""cv's fold datasets: for fold k, a prepared dataset of links to the cv's films, split by fold role.

No image is copied: cls/ or det/ hold symlinks to the prepared films (and to the dataset's signatures.npz), beside
a manifest.csv (written last) and a prepare.json, so `train` and `evaluate` read a fold like any prepared dataset.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import yaml

from fracturekit.core.layout import MANIFEST_COLUMNS, PreparedDataset
from fracturekit.cv.fold_plan import roles


def _link(src: Path, dst: Path) -> None:
    """A symlink (no copy); a hard link or a copy where the file system refuses symlinks."""
    try:
        os.symlink(src, dst)
    except OSError:
        from fracturekit.prepare.datasets import link_or_copy

        link_or_copy(src, dst)


def build_fold_dataset(ds: PreparedDataset, films: pd.DataFrame, task: str, k: int, n_folds: int, out: Path) -> Path:
    """`out`: a prepared dataset for fold k (cls/ or det/ of links to `ds`'s films, manifest.csv, prepare.json).

    Rebuilt only when its manifest would change, so a finished fold's run keeps its dataset.
    """
    from fracturekit.prepare import data_hash

    r = roles(k, n_folds)
    split_of = {r["test"]: "test", r["val"]: "val", **{f: "train" for f in r["train"]}}
    rows = films.copy()
    rows["split"] = rows["fold"].astype(int).map(split_of)
    rows["fold"] = rows["fold"].astype(str)
    links: list[tuple[Path, str]] = []
    new_cls, new_det, new_lbl = [], [], []
    for row in rows.itertuples(index=False):
        name = Path(row.path).name
        if task == "classify":
            class_dir = Path(row.output_cls).parts[-2]
            rel = f"cls/{row.split}/{class_dir}/{name}"
            links.append((ds.root / row.output_cls, rel))
            new_cls.append(rel)
            new_det.append("")
            new_lbl.append("")
        else:
            rel = f"det/images/{row.split}/{name}"
            lbl = f"det/labels/{row.split}/{Path(name).stem}.txt"
            links += [(ds.root / row.output_det, rel), (ds.root / row.label_file, lbl)]
            new_cls.append("")
            new_det.append(rel)
            new_lbl.append(lbl)
    rows["output_cls"], rows["output_det"], rows["label_file"] = new_cls, new_det, new_lbl
    columns = [*MANIFEST_COLUMNS, *[c for c in rows.columns if c not in MANIFEST_COLUMNS and c != "path"]]
    text = rows[columns].to_csv(index=False)
    if (out / "manifest.csv").is_file() and (out / "manifest.csv").read_text() == text:
        return out
    if out.exists():
        shutil.rmtree(out)  # a stale fold dataset inside the cv folder (links only)
    for src, rel in links:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        _link(src.resolve(), out / rel)
    if ds.signatures.is_file():  # keyed by manifest `source`, which the fold's manifest keeps: train signs nothing
        _link(ds.signatures.resolve(), PreparedDataset(out).signatures)
    if task == "detect":
        names = yaml.safe_load(ds.data_yaml.read_text())["names"]
        for s in ("train", "val", "test"):
            (out / "det" / "images" / s).mkdir(parents=True, exist_ok=True)
        data_yaml = {"train": "images/train", "val": "images/val", "test": "images/test", "names": names}
        (out / "det" / "data.yaml").write_text(yaml.safe_dump(data_yaml, sort_keys=False))
    pixels = ds.recorded_pixels()  # the fold's films are the dataset's: written with its pixel options
    summary = {
        "cv_fold_of": str(ds.root.resolve()),
        "fold": k,
        "roles": r,
        "per_split": {
            s: rows[rows["split"] == s]["label"].value_counts().sort_index().to_dict() for s in ("train", "val", "test")
        },
        "pixels": pixels,
        "data_hash": data_hash(
            zip(rows["sha256"], rows["split"], rows["label"], rows["boxes"].replace("", "null"), strict=True), pixels
        ),
    }
    (out / "prepare.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "manifest.csv").write_text(text)  # last: its presence means the fold dataset is complete
    return out
