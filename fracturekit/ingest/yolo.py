"""YOLO txt reader (+ data.yaml), Roboflow/Ultralytics layouts: `train/images` + `train/labels`,
`images/train` + `labels/train`, or label files beside the images.

- Class names: `names` of a data.yaml (list or {id: name}); else classes.txt / labels.txt / obj.names;
  else `class_<id>` with a note (pass `--map class_0=fracture`). Names go through `canonical_label`.
- Label file of an image: its path with the last `images` folder replaced by `labels` and the suffix
  by `.txt` (Ultralytics rule), else a `.txt` of the same stem beside the image.
- Missing label file = background (`boxes=[]`), as in Ultralytics, with a problem noted on the record
  ("no label file") and a count in `notes`; an EMPTY label file is a plain background.
- Rows are validated: 5 numbers (class x_center y_center width height; polygon rows `class x1 y1 x2
  y2 ...` are reduced to their box), integer class id known to the names, coordinates in [0, 1],
  width/height > 0, no duplicate rows; bad rows go to `problems`. A label file whose rows are all bad
  is Skipped (it meant to show something). Boxes are converted to pixels with the image size read
  from the header (EXIF orientation taken into account, see `geometry`).
- Split: the data.yaml `train`/`val`/`test` folders when they exist (`path:` from another machine is
  ignored; `../x` is tried as `x`, like Ultralytics), else the folder names. Split entries that leave
  the root are refused (noted). Label files without an image are Skipped ("label file without image").
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

from fracturekit.core.errors import UserError
from fracturekit.data.imageio import HeaderError, ImageHeader, image_header
from fracturekit.ingest.files import FileIndex
from fracturekit.ingest.geometry import frame_box
from fracturekit.ingest.labels import assign_image_labels, canonical_label, split_from_parts
from fracturekit.ingest.records import Box, IngestResult, Record, Skipped

NAME_FILES = ("classes.txt", "labels.txt", "obj.names", "classes.names")
_EPS = 1e-3  # float noise tolerated on normalized coordinates


def parse_names(raw: object) -> dict[int, str] | None:
    """`names` from a YOLO yaml as {id: name}: list or dict form; None when malformed."""
    if isinstance(raw, list):
        return {i: str(n).strip() for i, n in enumerate(raw)}
    if isinstance(raw, dict):
        try:
            return {int(k): str(v).strip() for k, v in raw.items()}
        except (TypeError, ValueError):
            return None
    return None


def read_names_file(path: Path) -> dict[int, str]:
    """One class name per line (classes.txt, labels.txt, obj.names), blank lines ignored."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return {i: n.strip() for i, n in enumerate(line for line in lines if line.strip())}


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def parse_yolo_rows(
    text: str,
    names: dict[int, str] | None,
    header: ImageHeader,
    mapping: dict[str, str] | None = None,
) -> tuple[list[Box], list[str], int]:
    """Boxes (stored pixels), problems and number of non-blank rows of one YOLO label file.

    names None: any non-negative class id is accepted and named `class_<id>`.
    """
    width, height = header.display_size
    boxes: list[Box] = []
    problems: list[str] = []
    seen: dict[tuple[float, ...], int] = {}
    n_rows = 0
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        n_rows += 1
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            problems.append(f"row {n}: not numbers ({line.strip()[:60]!r}), dropped")
            continue
        if any(v != v or abs(v) == float("inf") for v in vals):
            problems.append(f"row {n}: NaN or infinite value, dropped")
            continue
        cls = vals[0]
        if len(vals) == 5:
            cx, cy, w, h = vals[1:]
            coords = {"x_center": cx, "y_center": cy, "width": w, "height": h}
        elif len(vals) >= 7 and len(vals) % 2 == 1:
            xs, ys = vals[1::2], vals[2::2]
            coords = {f"polygon {k}": v for k, v in enumerate(vals[1:], start=1)}
            cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
            w, h = max(xs) - min(xs), max(ys) - min(ys)
        else:
            problems.append(f"row {n}: {len(vals)} values, expected 5 (class x_center y_center width height), dropped")
            continue
        if not cls.is_integer() or cls < 0:
            problems.append(f"row {n}: class id {_fmt(cls)} is not a non-negative integer, dropped")
            continue
        cid = int(cls)
        if names is not None and cid not in names:
            problems.append(f"row {n}: unknown class id {cid} (names has {len(names)}), dropped")
            continue
        bad = [f"{k} {_fmt(v)}" for k, v in coords.items() if not (-_EPS <= v <= 1 + _EPS)]
        if bad:
            problems.append(f"row {n}: {', '.join(bad[:2])} out of range [0, 1], dropped")
            continue
        if w <= 0 or h <= 0:
            problems.append(f"row {n}: zero or negative width/height, dropped")
            continue
        key = tuple(vals)
        if key in seen:
            problems.append(f"row {n}: duplicate of row {seen[key]}, dropped")
            continue
        seen[key] = n
        x1, y1 = max(0.0, (cx - w / 2) * width), max(0.0, (cy - h / 2) * height)
        x2, y2 = min(float(width), (cx + w / 2) * width), min(float(height), (cy + h / 2) * height)
        name = names[cid] if names is not None else f"class_{cid}"
        box, why = frame_box(canonical_label(name, mapping), x1, y1, x2, y2, header, (width, height))
        if box is None:
            problems.append(f"row {n}: {why}, dropped")
            continue
        boxes.append(box)
    return boxes, problems, n_rows


def _label_candidates(image: str) -> list[str]:
    parts = image.split(os.sep)
    stem_txt = os.path.splitext(parts[-1])[0] + ".txt"
    out = []
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            out.append(os.sep.join([*parts[:i], "labels", *parts[i + 1 : -1], stem_txt]))
            break
    out.append(os.sep.join([*parts[:-1], stem_txt]))
    return out


def _find_yaml(index: FileIndex) -> tuple[str | None, dict | None, list[str]]:
    """The shallowest YOLO yaml (with `names`), preferring data.yaml; notes on the others."""
    notes: list[str] = []
    cands = sorted(
        (p for p in index.files if p.lower().endswith((".yaml", ".yml"))),
        key=lambda p: (p.count(os.sep), os.path.basename(p) not in ("data.yaml", "data.yml"), p),
    )
    chosen: tuple[str, dict] | None = None
    for p in cands:
        try:
            with open(p, encoding="utf-8", errors="replace") as f:
                data = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            notes.append(f"{index.rel(p)}: unreadable YAML, ignored")
            continue
        if isinstance(data, dict) and "names" in data:
            if chosen is None:
                chosen = (p, data)
            elif parse_names(data.get("names")) != parse_names(chosen[1].get("names")):
                notes.append(f"{index.rel(p)}: other class names, ignored (using {index.rel(chosen[0])})")
    return (chosen[0], chosen[1], notes) if chosen else (None, None, notes)


def _split_dirs(index: FileIndex, yaml_path: str, data: dict, notes: list[str]) -> dict[str, str]:
    """Folders the yaml assigns to train/val/test (existing ones inside the root only)."""
    base = os.path.dirname(yaml_path)
    given = data.get("path")
    if isinstance(given, str) and given.strip():
        cand = given if os.path.isabs(given) else os.path.join(base, given)
        if os.path.isdir(cand) and index.inside(os.path.realpath(cand)):
            base = os.path.realpath(cand)
    out: dict[str, str] = {}
    for key in ("train", "val", "valid", "test"):
        entries = data.get(key)
        for entry in entries if isinstance(entries, list) else [entries]:
            if not isinstance(entry, str) or not entry.strip():
                continue
            tries = [os.path.normpath(os.path.join(base, entry))]
            if entry.startswith("../"):
                tries.append(os.path.normpath(os.path.join(base, entry[3:])))
            for t in tries:
                if not os.path.isdir(t):
                    continue
                if not index.inside(os.path.realpath(t)):
                    notes.append(f"{index.rel(yaml_path)}: {key}: {entry!r} escapes the dataset root; refused")
                    break
                out[os.path.realpath(t)] = "val" if key == "valid" else key
                break
    return out


def load_yolo(
    root: Path,
    mapping: dict[str, str] | None = None,
    *,
    names: dict[int, str] | None = None,
    fmt: str = "yolo",
) -> IngestResult:
    """Read a YOLO detection dataset under `root` (`names` overrides the yaml's)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    index = FileIndex(root)
    result = IngestResult(format=fmt)
    names, split_dirs = _names_and_splits(index, names, result)
    if not index.images:
        raise UserError(f"{root}: no image files found")
    used_labels: set[str] = set()
    missing = 0
    seen_ids: set[int] = set()
    for image in index.images:
        label = next((c for c in _label_candidates(image) if c in index.files), None)
        folder = os.path.dirname(image)
        split = next((s for d, s in split_dirs.items() if folder == d or folder.startswith(d + os.sep)), None)
        split = split or split_from_parts(index.rel(image).split("/")[:-1])
        if label is None:
            missing += 1
            result.records.append(
                Record(source=Path(image), boxes=[], split=split, problems=["no label file: taken as background"])
            )
            continue
        used_labels.add(label)
        record = _labelled_record(index, image, label, split, names, mapping, result)
        if record is not None:
            result.records.append(record)
            if names is None:
                seen_ids.update(int(b.label.split("_")[-1]) for b in record.boxes if b.label.startswith("class_"))
    if missing:
        result.notes.append(f"{missing} images have no label file and were taken as backgrounds")
    _report_orphan_labels(index, used_labels, result)
    top = max(names, default=-1) if names is not None else max(seen_ids, default=-1)  # class_<id>: the ids seen
    result.class_names = [canonical_label((names or {}).get(i, f"class_{i}"), mapping) for i in range(top + 1)]
    assign_image_labels(result)
    return result


def _names_and_splits(
    index: FileIndex, names: dict[int, str] | None, result: IngestResult
) -> tuple[dict[int, str] | None, dict[str, str]]:
    """The class names (given, from data.yaml, or from a classes.txt; None: class_<id>) and the yaml's split
    folders (folder -> split)."""
    yaml_path, data, notes = _find_yaml(index)
    result.notes.extend(notes)
    split_dirs: dict[str, str] = {}
    if names is None and data is not None:
        names = parse_names(data.get("names"))
        if names is None:
            raise UserError(f"{yaml_path}: `names` must be a list or a mapping id: name")
        nc = data.get("nc")
        if isinstance(nc, int) and nc != len(names):
            result.notes.append(f"{index.rel(yaml_path)}: nc {nc} but {len(names)} names; using the names")
    if data is not None and yaml_path:
        split_dirs = _split_dirs(index, yaml_path, data, result.notes)
    if names is None:
        name_files = sorted(
            (p for p in index.files if os.path.basename(p).lower() in NAME_FILES), key=lambda p: p.count(os.sep)
        )
        if name_files:
            names = read_names_file(Path(name_files[0]))
            result.notes.append(f"class names from {index.rel(name_files[0])}: {list(names.values())}")
        else:
            result.notes.append(
                "no data.yaml or classes.txt: classes named class_<id>; map them with --map class_0=fracture"
            )
    return names, split_dirs


def _labelled_record(
    index: FileIndex,
    image: str,
    label: str,
    split: str | None,
    names: dict[int, str] | None,
    mapping: dict[str, str] | None,
    result: IngestResult,
) -> Record | None:
    """The Record of an image with a label file, or None with the image skipped and the reason."""
    meta = {"label_file": index.rel(label)}
    if os.path.islink(label) and not index.inside(os.path.realpath(label)):
        result.skipped.append(Skipped(image, f"label file {index.rel(label)} points outside the dataset root"))
        return None
    try:
        with open(label, "rb") as f:
            text = f.read().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        result.skipped.append(Skipped(image, f"unreadable label file {index.rel(label)} ({type(exc).__name__})"))
        return None
    if not text.strip():
        return Record(source=Path(image), boxes=[], split=split, meta=meta)
    try:
        header = image_header(Path(image))
    except HeaderError as exc:
        result.skipped.append(Skipped(image, f"image header unreadable ({exc}); cannot place YOLO boxes"))
        return None
    boxes, problems, n_rows = parse_yolo_rows(text, names, header, mapping)
    if n_rows and not boxes:
        result.skipped.append(Skipped(image, f"all {n_rows} label rows invalid: " + "; ".join(problems[:3])))
        return None
    if header.orientation != 1:
        meta["exif_orientation"] = str(header.orientation)
    return Record(source=Path(image), boxes=boxes, split=split, meta=meta, problems=problems)


def _report_orphan_labels(index: FileIndex, used_labels: set[str], result: IngestResult) -> None:
    """Each .txt under a labels/ folder that no image uses, skipped as a label file without image."""
    orphans = [
        p
        for p in sorted(index.files)
        if p.endswith(".txt")
        and p not in used_labels
        and "labels" in index.rel(p).split("/")[:-1]
        and os.path.basename(p).lower() not in NAME_FILES
    ]
    for p in orphans:
        result.skipped.append(Skipped(p, "label file without image"))
    if orphans:
        result.notes.append(f"{len(orphans)} label files have no image")


def yolo_lines(boxes: Iterable[Box], class_ids: dict[str, int], width: float, height: float) -> str:
    """The YOLO label file of one film: `class x_center y_center width height` rows, normalized to its size.

    The one YOLO writer (prepare's det/labels, `save_yolo`, the phantoms); "" for a background film.
    """
    return "".join(
        f"{class_ids[b.label]} {(b.x1 + b.x2) / 2 / width:.6f} {(b.y1 + b.y2) / 2 / height:.6f} "
        f"{(b.x2 - b.x1) / width:.6f} {(b.y2 - b.y1) / height:.6f}\n"
        for b in boxes
    )


def save_yolo(records: Sequence[Record], class_names: Sequence[str], labels_dir: Path) -> list[Path]:
    """Write one `<stem>.txt` per record into `labels_dir` (normalized to the stored image size)."""
    labels_dir = Path(labels_dir)
    labels_dir.mkdir(parents=True, exist_ok=True)
    ids = {n: i for i, n in enumerate(class_names)}
    written = []
    for rec in records:
        header = image_header(Path(rec.source))
        path = labels_dir / f"{Path(rec.source).stem}.txt"
        path.write_text(yolo_lines(rec.boxes or [], ids, header.width, header.height))
        written.append(path)
    return written
