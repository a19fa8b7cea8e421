"""Writing the YOLO datasets: films into cls/<split>/<label>/, links and label files under det/, det/data.yaml."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import yaml

from fracturekit.core.layout import POSITIVE_CLASS, SPLITS
from fracturekit.core.parallel import parallel_map
from fracturekit.ingest.yolo import yolo_lines
from fracturekit.prepare.film import _Film


def _write_datasets(root: Path, ok: list[_Film], splits: list[str], class_names: list[str]) -> list[str]:
    """Place each film in its split under cls/ and det/ and write det/data.yaml; returns the detection classes."""
    det_names = list(class_names)
    for film in ok:
        for box in film.boxes or []:
            if box.label not in det_names:
                det_names.append(box.label)
    if not det_names:
        det_names = [POSITIVE_CLASS]
    det_index = {name: k for k, name in enumerate(det_names)}
    for s in SPLITS:
        (root / "det" / "images" / s).mkdir(parents=True, exist_ok=True)
        (root / "det" / "labels" / s).mkdir(parents=True, exist_ok=True)
    for film, s in zip(ok, splits, strict=True):
        film.split = s
        (root / "cls" / s / _safe_dirname(film.label)).mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        (root / "cls" / s).mkdir(parents=True, exist_ok=True)
    parallel_map(lambda f: _place(root, f, det_index), ok)
    # no `path:` key: Ultralytics then resolves the splits against the yaml's folder (relocatable dataset)
    data_yaml = {
        "train": "images/train",
        "val": "images/val",
        "test": "images/test",
        "names": dict(enumerate(det_names)),
    }
    (root / "det" / "data.yaml").write_text(yaml.safe_dump(data_yaml, sort_keys=False))
    return det_names


def _place(root: Path, film: _Film, det_index: dict[str, int]) -> None:
    """Move a staged film into cls/<split>/<label>/, link it into det/images/<split>/, write its label file."""
    assert film.staged is not None
    cls_rel = Path("cls") / film.split / _safe_dirname(film.label) / film.staged.name
    os.replace(film.staged, root / cls_rel)
    film.output_cls = cls_rel.as_posix()
    if film.boxes is None:
        return
    det_rel = Path("det") / "images" / film.split / film.staged.name
    link_or_copy(root / cls_rel, root / det_rel)
    lbl_rel = Path("det") / "labels" / film.split / f"{film.stem}.txt"
    (root / lbl_rel).write_text(yolo_lines(film.boxes, det_index, film.width, film.height))  # "" for a background
    film.output_det, film.label_file = det_rel.as_posix(), lbl_rel.as_posix()


def _safe_dirname(label: str) -> str:
    return re.sub(r"[\\/]", "_", label).strip() or "unlabelled"


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (no copy, no space); a copy where the file system refuses one (another device, FAT)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
