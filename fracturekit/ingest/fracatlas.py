"""FracAtlas as published (Abedeen et al., Scientific Data 2023; figshare 10.6084/m9.figshare.22363012).

Layout: `images/Fractured/`, `images/Non_fractured/`, `Annotations/COCO JSON/*.json` (boxes and
polygons of the fractured images), `Annotations/PASCAL VOC/*.xml` (one per image, no object for
non-fractured), `Annotations/YOLO/*.txt` (one per image, empty for non-fractured; class names in
`labels.txt`), `dataset.csv` (per image: body-region and view one-hot columns, hardware, multiscan,
fractured, fracture_count) and `splits/{train,valid,test}.csv` (the authors' split of the FRACTURED
images only: non-fractured images get split None).

Records: `Fractured/` images get label `fracture` and their boxes from the chosen annotation format;
`Non_fractured/` images are backgrounds (label `no_fracture`, `boxes=[]`). A fractured image without
any usable box keeps label `fracture` with `boxes=None` (classification only; never a background).
A non-fractured image that has boxes keeps them, with a problem noted. `dataset.csv` columns go to
`meta`, plus `region` (hand/leg/hip/shoulder, or `mixed` when several) and `view` (frontal/lateral/
oblique joined with `+`). Disagreements between the folder, the CSV and the annotations are noted
in `problems`. The three annotation formats give the same boxes (COCO and YOLO within 1 px; the
published VOC files are integer-truncated, `xmax = floor(x) + floor(w)`: 19 of 922 boxes are 1.0-1.02 px off).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from fracturekit.core.errors import UserError
from fracturekit.core.layout import NEGATIVE_CLASS, POSITIVE_CLASS
from fracturekit.data.imageio import HeaderError, image_header
from fracturekit.ingest.files import FileIndex
from fracturekit.ingest.labels import canonical_label
from fracturekit.ingest.records import IngestResult, Record, Skipped

ANNOTATION_FORMATS = ("coco", "voc", "yolo")
REGIONS = ("hand", "leg", "hip", "shoulder")
VIEWS = ("frontal", "lateral", "oblique")
_SPLIT_FILES = {"train": "train", "valid": "val", "val": "val", "test": "test"}


def _missing(folder: Path, other: str) -> UserError:
    """An annotation folder FracAtlas ships is absent: restore it, or (from Python) read another of its formats."""
    return UserError(
        f"{folder}: missing; restore it from the FracAtlas download, or from Python read another of its annotation "
        f"formats with load_source(..., fracatlas_annotations={other!r})."
    )


def read_dataset_csv(path: Path) -> dict[str, dict[str, str]]:
    """dataset.csv rows by image file name, all columns kept as strings, plus `region` and `view`."""
    rows: dict[str, dict[str, str]] = {}
    for row in csv.DictReader(_csv_lines(path)):
        name = (row.pop("image_id", "") or "").strip()
        if not name:
            continue
        meta = {k.strip(): v.strip() for k, v in row.items() if isinstance(k, str) and k and isinstance(v, str)}
        regions = [r for r in REGIONS if meta.get(r) == "1"]
        meta["region"] = regions[0] if len(regions) == 1 else ("mixed" if regions else "")
        meta["view"] = "+".join(v for v in VIEWS if meta.get(v) == "1")
        rows[name] = meta
    return rows


def _csv_lines(path: Path) -> list[str]:
    """The lines of one of FracAtlas' CSVs (UTF-8, a BOM allowed), or UserError naming the file."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); save it again as UTF-8 CSV.") from None


def read_splits(folder: Path) -> tuple[dict[str, str], list[str]]:
    """Image name -> canonical split from splits/*.csv (first column), and notes on conflicts."""
    out: dict[str, str] = {}
    notes: list[str] = []
    if not folder.is_dir():
        return out, notes
    for path in sorted(folder.glob("*.csv")):
        split = _SPLIT_FILES.get(path.stem.lower())
        if split is None:
            notes.append(f"{folder.name}/{path.name}: not a split name, ignored")
            continue
        reader = csv.reader(_csv_lines(path))
        next(reader, None)
        for row in reader:
            if not row or not row[0].strip():
                continue
            name = row[0].strip()
            if name in out and out[name] != split:
                notes.append(f"{name} listed in splits {out[name]} and {split}; kept {out[name]}")
                continue
            out[name] = split
    return out, notes


def _annotation_result(root: Path, annotations: str, image_dirs: list[Path], mapping: dict[str, str] | None):
    ann = root / "Annotations"
    if annotations == "coco":
        from fracturekit.ingest.coco import load_coco

        folder = ann / "COCO JSON"
        if not folder.is_dir():
            raise _missing(folder, "voc")
        return load_coco(folder, mapping, root=root, image_dirs=image_dirs, report_unlisted=False, fmt="fracatlas")
    if annotations == "voc":
        from fracturekit.ingest.voc import load_voc

        folder = ann / "PASCAL VOC"
        if not folder.is_dir():
            raise _missing(folder, "coco")
        return load_voc(root, mapping, xml_dir=folder, image_dirs=image_dirs, report_unlisted=False, fmt="fracatlas")
    raise AssertionError(annotations)


def load_fracatlas(root: Path, annotations: str = "coco", mapping: dict[str, str] | None = None) -> IngestResult:
    """Read FracAtlas with boxes from one of its annotation formats ("coco", "voc" or "yolo")."""
    root = Path(os.path.realpath(root))
    annotations = annotations.lower()
    if annotations not in ANNOTATION_FORMATS:
        raise UserError(f"unknown FracAtlas annotation format {annotations!r}; use coco|voc|yolo")
    frac_dir, normal_dir = root / "images" / "Fractured", root / "images" / "Non_fractured"
    if not frac_dir.is_dir():
        raise UserError(f"{root}: not FracAtlas as published (no images/Fractured)")
    result = IngestResult(format="fracatlas", class_names=[canonical_label("fractured", mapping)])
    index = FileIndex(root / "images")
    meta_rows = read_dataset_csv(root / "dataset.csv") if (root / "dataset.csv").is_file() else {}
    if not meta_rows:
        result.notes.append("dataset.csv missing or empty: no region/view metadata")
    split_dir = next((d for d in (root / "splits", root / "Utilities" / "Fracture Split") if d.is_dir()), None)
    splits, notes = read_splits(split_dir) if split_dir else ({}, ["no splits/ folder: fractured images get no split"])
    result.notes.extend(notes)
    boxes_by_image, problems_by_image = _boxes_by_image(
        root, annotations, index, [frac_dir, normal_dir], mapping, result
    )
    seen_names: dict[str, str] = {}
    folder_counts = {POSITIVE_CLASS: 0, NEGATIVE_CLASS: 0}
    for image in index.images:
        rel = index.rel(image)
        folder = rel.split("/")[0]
        if folder not in ("Fractured", "Non_fractured"):
            result.skipped.append(Skipped(image, f"outside images/Fractured and images/Non_fractured ({rel})"))
            continue
        name = os.path.basename(image)
        if name in seen_names:
            result.skipped.append(Skipped(image, f"same file name also in images/{seen_names[name]}"))
            continue
        seen_names[name] = folder
        fractured = folder == "Fractured"
        folder_counts[POSITIVE_CLASS if fractured else NEGATIVE_CLASS] += 1
        problems = list(problems_by_image.get(image, []))
        boxes = boxes_by_image.get(image)
        if boxes is None:
            if fractured or annotations != "coco":  # the COCO file lists fractured images only
                problems.append(f"no {annotations} annotation for this image")
            boxes = []
        meta = dict(meta_rows.get(name, {}))
        result.records.append(_film_record(image, fractured, boxes, splits.get(name), meta, bool(meta_rows), problems))
    _coverage_notes(result, splits, meta_rows, folder_counts, annotations)
    return result


def _boxes_by_image(
    root: Path,
    annotations: str,
    index: FileIndex,
    image_dirs: list[Path],
    mapping: dict[str, str] | None,
    result: IngestResult,
) -> tuple[dict[str, list], dict[str, list[str]]]:
    """Boxes and problems per image file (absolute path) from the chosen annotation format; an annotation that
    names no FracAtlas image is skipped."""
    boxes_by_image: dict[str, list] = {}
    problems_by_image: dict[str, list[str]] = {}
    if annotations == "yolo":
        _yolo_boxes(root, index, mapping, result, boxes_by_image, problems_by_image)
        return boxes_by_image, problems_by_image
    sub = _annotation_result(root, annotations, image_dirs, mapping)
    result.notes.extend(sub.notes)
    for rec in sub.records:
        boxes_by_image[str(rec.source)] = rec.boxes or []
        problems_by_image[str(rec.source)] = rec.problems
    for sk in sub.skipped:
        if sk.source in index.files:  # an image whose annotation was unusable: decided below
            problems_by_image.setdefault(sk.source, []).append(f"{annotations} annotation unusable: {sk.reason}")
            boxes_by_image.setdefault(sk.source, [])
        else:
            result.skipped.append(Skipped(sk.source, sk.reason))
    return boxes_by_image, problems_by_image


def _film_record(
    image: str,
    fractured: bool,
    boxes: list,
    split: str | None,
    meta: dict[str, str],
    has_csv: bool,
    problems: list[str],
) -> Record:
    """One FracAtlas film's Record, its folder's label checked against dataset.csv and its boxes."""
    folder = "Fractured" if fractured else "Non_fractured"
    if has_csv and not meta:
        problems.append("not in dataset.csv")
    if meta:
        if meta.get("fractured") not in (None, "", "1" if fractured else "0"):
            problems.append(f"dataset.csv says fractured={meta['fractured']} but the image is in images/{folder}")
        count = meta.get("fracture_count", "")
        if count.isdigit() and boxes and int(count) != len(boxes):
            problems.append(f"dataset.csv fracture_count {count} but {len(boxes)} boxes")
    try:
        header = image_header(Path(image))
        if header.orientation != 1:
            meta["exif_orientation"] = str(header.orientation)
    except HeaderError as exc:
        problems.append(f"image header unreadable ({exc})")
    if fractured and not boxes:
        problems.append("fractured image without a usable box: classification only (boxes=None)")
    if not fractured and boxes:
        problems.append(f"non-fractured image has {len(boxes)} boxes")
    return Record(
        source=Path(image),
        label=POSITIVE_CLASS if fractured else NEGATIVE_CLASS,
        boxes=boxes if (boxes or not fractured) else None,
        split=split,
        meta=meta,
        problems=problems,
    )


def _coverage_notes(
    result: IngestResult,
    splits: dict[str, str],
    meta_rows: dict[str, dict[str, str]],
    folder_counts: dict[str, int],
    annotations: str,
) -> None:
    """Notes on what the splits/ lists and dataset.csv name that is not on disk, and the counts read."""
    missing_split = sum(1 for r in result.records if r.label == POSITIVE_CLASS and r.split is None)
    listed = {os.path.basename(r.source) for r in result.records}
    not_on_disk = sorted(set(splits) - listed)
    if not_on_disk:
        result.notes.append(f"{len(not_on_disk)} names in splits/ have no image: {not_on_disk[:5]}")
    if meta_rows:
        extra = sorted(set(meta_rows) - listed - {os.path.basename(s.source) for s in result.skipped})
        if extra:
            result.notes.append(f"{len(extra)} dataset.csv rows have no image: {extra[:5]}")
    result.notes.append(
        f"images/Fractured: {folder_counts[POSITIVE_CLASS]}, images/Non_fractured: {folder_counts[NEGATIVE_CLASS]}; "
        f"boxes from {annotations}: {sum(len(r.boxes or []) for r in result.records)}; "
        f"the authors' splits cover fractured images only ({missing_split} fractured without split)"
    )


def _yolo_boxes(
    root: Path,
    index: FileIndex,
    mapping: dict[str, str] | None,
    result: IngestResult,
    boxes_by_image: dict[str, list],
    problems_by_image: dict[str, list[str]],
) -> None:
    from fracturekit.ingest.yolo import NAME_FILES, parse_yolo_rows, read_names_file

    folder = root / "Annotations" / "YOLO"
    if not folder.is_dir():
        raise _missing(folder, "coco")
    names = {0: "fractured"}
    for fname in NAME_FILES:
        if (folder / fname).is_file():
            names = read_names_file(folder / fname) or names
            break
    by_stem: dict[str, str] = {}
    for image in index.images:
        by_stem.setdefault(os.path.splitext(os.path.basename(image))[0], image)
    for txt in sorted(folder.glob("*.txt")):
        if txt.name.lower() in NAME_FILES:
            continue
        image = by_stem.get(txt.stem)
        if image is None:
            result.skipped.append(Skipped(str(txt), "YOLO label file without image"))
            continue
        try:
            text = txt.read_bytes().decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            problems_by_image[image] = [f"unreadable YOLO label file ({type(exc).__name__})"]
            boxes_by_image[image] = []
            continue
        if not text.strip():
            boxes_by_image[image] = []
            continue
        try:
            header = image_header(Path(image))
        except HeaderError as exc:
            problems_by_image[image] = [f"image header unreadable ({exc}); YOLO boxes not placed"]
            boxes_by_image[image] = []
            continue
        boxes, problems, _n = parse_yolo_rows(text, names, header, mapping)
        boxes_by_image[image] = boxes
        problems_by_image[image] = problems
