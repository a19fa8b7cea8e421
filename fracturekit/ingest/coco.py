"""COCO JSON reader: one or several annotation files (Roboflow per-split exports included).

- Classes are taken by category NAME (ids may start at 0, be sparse, or differ between files) and
  go through `canonical_label` (+ `mapping`). A category with no annotations in any file that is the
  supercategory of other categories (Roboflow's "bones"/project-name category, id 0) is dropped and
  noted; other empty categories stay in `class_names`.
- Images without annotations are backgrounds (`boxes=[]`). An image whose annotations were ALL
  invalid is Skipped (it was meant to show something; as a background it would be a false negative).
- `file_name` may contain sub-folders; it is looked up beside the JSON, at the root, in `images/`,
  in `image_dirs`, then by unique base name anywhere under the root. A `file_name` that leaves the
  root (`../`, absolute path elsewhere) is Skipped.
- bbox `[x, y, w, h]` is validated against the image size read from the file header (the declared
  `width`/`height` are checked against it; boxes drawn on the EXIF-rotated image are mapped back to
  the stored pixels, see `geometry`). Invalid boxes go to the record's `problems`.
- Split: from the JSON's folder (`train/_annotations.coco.json`) or its name (`instances_val2017.json`).
- Segmentation polygons are ignored (boxes only).
- An unreadable JSON among several is Skipped and reported; when no COCO file can be read at all,
  UserError. Image files under the root that no annotation file lists are Skipped ("not listed").
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from fracturekit.core.errors import UserError
from fracturekit.data.imageio import HeaderError, ImageHeader, image_header
from fracturekit.ingest.files import FileIndex
from fracturekit.ingest.geometry import fmt_nums, frame_box, resolve_frame
from fracturekit.ingest.labels import assign_image_labels, canonical_label, split_from_parts
from fracturekit.ingest.records import Box, IngestResult, Record, Skipped

# Files that are never COCO annotations even though they are JSON.
_NOT_COCO_NAMES = frozenset({"package.json", "tsconfig.json"})


def looks_like_coco(data: object) -> bool:
    """A parsed JSON is COCO when it has an `images` list (annotations may be absent: all backgrounds)."""
    return isinstance(data, dict) and isinstance(data.get("images"), list) and "categories" in data


def find_coco_files(index: FileIndex) -> list[Path]:
    """JSON files under the index root in sorted order, not yet parsed."""
    return [
        Path(p)
        for p in sorted(index.files)
        if p.lower().endswith(".json") and os.path.basename(p) not in _NOT_COCO_NAMES
    ]


def _load_json(path: Path) -> tuple[object | None, str | None]:
    try:
        with path.open("rb") as f:
            return json.load(f), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"unreadable JSON ({type(exc).__name__}: {str(exc)[:120]})"
    except RecursionError:
        return None, "unreadable JSON (nested too deeply for Python's parser)"


def _key(value: object) -> object | None:
    """An id as COCO writes it (int, str or float), else None: a list or dict id cannot index anything."""
    return value if isinstance(value, (int, str, float)) and not isinstance(value, bool) else None


def _entries(data: dict, key: str, rel_json: str, notes: list[str]) -> list:
    """`data[key]` when it is a list (absent: empty); any other value is ignored with a note."""
    value = data.get(key)
    if value is None or isinstance(value, list):
        return value or []
    notes.append(f"{rel_json}: '{key}' is a {type(value).__name__}, not a list; ignored")
    return []


def _box_from_bbox(
    bbox: object, label: str, header: ImageHeader | None, frame: tuple[float, float] | None
) -> tuple[Box | None, str | None]:
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
        return None, f"bbox {bbox!r} is not [x, y, w, h]"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        return None, f"bbox {fmt_nums(bbox)} has non-numeric values"
    try:
        x, y, w, h = (float(v) for v in bbox)
    except OverflowError:
        return None, "bbox has numbers too large for a float"
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return None, f"bbox {fmt_nums(bbox)} has non-finite values"
    if w <= 0 or h <= 0:
        return None, f"bbox {fmt_nums(bbox)} has zero or negative width/height"
    box, why = frame_box(label, x, y, x + w, y + h, header, frame)
    return box, (f"bbox {fmt_nums(bbox)}: {why}" if why else None)


def _declared(img: dict) -> tuple[float, float] | None:
    try:
        w, h = float(img.get("width") or 0), float(img.get("height") or 0)
    except (TypeError, ValueError, OverflowError):
        return None
    return (w, h) if 0 < w < math.inf and 0 < h < math.inf else None


def load_coco(
    root_or_json_files: Path | str | Iterable[Path | str],
    mapping: dict[str, str] | None = None,
    *,
    root: Path | None = None,
    image_dirs: Sequence[Path] = (),
    report_unlisted: bool = True,
    fmt: str = "coco",
) -> IngestResult:
    """Read COCO annotations: a folder (all COCO JSON files under it), one JSON file, or a list of them.

    root: the dataset root for `../` checks and the unlisted-image report (default: the folder given,
      the JSON's folder, or the common folder of the listed files). image_dirs: extra folders where
      `file_name` may live (FracAtlas keeps its JSON apart from its images).
    """
    files, data_root, index = _coco_files(root_or_json_files, root)
    result = IngestResult(format=fmt)
    explicit = not (isinstance(root_or_json_files, (str, Path)) and Path(root_or_json_files).is_dir())
    parsed = _parse_coco_files(files, explicit, index, data_root, result)
    cat_maps = _categories(parsed, index, mapping, result)
    extra_dirs = [os.path.realpath(d) for d in image_dirs]
    seen: dict[str, str] = {}
    for (path, data), cats in zip(parsed, cat_maps, strict=True):
        rel_json = index.rel(str(path))
        json_dir = str(path.parent)
        bases = [
            json_dir,
            index.root,
            os.path.join(json_dir, "images"),
            os.path.join(index.root, "images"),
            *extra_dirs,
        ]
        rel_parts = Path(rel_json).parts
        split = split_from_parts(rel_parts[:-1]) or split_from_parts([path.stem])
        entries, anns_by_image = _images_and_annotations(data, rel_json, result)
        for img in entries:
            anns = anns_by_image.get(img["id"], [])
            src, why = index.locate(img["file_name"], bases)
            label_src = f"{rel_json}: {img['file_name']}"
            if src is None:
                extra = f" ({len(anns)} annotations lost)" if anns else ""
                result.skipped.append(Skipped(label_src, f"{why}{extra}"))
                continue
            if src in seen:
                result.skipped.append(Skipped(label_src, f"same image already listed in {seen[src]}"))
                continue
            seen[src] = rel_json
            _add_record(result, src, img, anns, cats, mapping, rel_json, split)
    if report_unlisted:
        _report_unlisted(index, seen, result)
    assign_image_labels(result)
    return result


def _coco_files(
    root_or_json_files: Path | str | Iterable[Path | str], root: Path | None
) -> tuple[list[Path], Path, FileIndex]:
    """The COCO JSON files to read, the dataset root and its file index, from what load_coco was given."""
    if isinstance(root_or_json_files, (str, Path)):
        given = Path(root_or_json_files)
        if not given.exists():
            raise UserError(f"{given}: no such file or folder")
        data_root = Path(root or (given if given.is_dir() else given.parent))
        index = FileIndex(data_root)
        if given.is_dir():
            files = find_coco_files(FileIndex(given) if root else index)
            if not files:
                raise UserError(f"{given}: no COCO JSON file found; pass --format to read it another way")
        else:
            files = [Path(os.path.realpath(given))]
        return files, data_root, index
    files = [Path(os.path.realpath(p)) for p in root_or_json_files]
    if not files:
        raise UserError("no COCO JSON file given")
    for p in files:
        if not p.is_file():
            raise UserError(f"{p}: no such file")
    data_root = Path(root or os.path.commonpath([str(p.parent) for p in files]))
    return files, data_root, FileIndex(data_root)


def _parse_coco_files(
    files: list[Path], explicit: bool, index: FileIndex, data_root: Path, result: IngestResult
) -> list[tuple[Path, dict]]:
    """(path, JSON) of each readable COCO file; an unreadable one is skipped with a note (its images are then
    reported as not listed), and a JSON that is no COCO file too when it was named explicitly."""
    parsed: list[tuple[Path, dict]] = []
    unreadable: list[tuple[Path, str]] = []
    for path in files:
        data, err = _load_json(path)
        if err:
            unreadable.append((path, err))
        elif looks_like_coco(data):
            parsed.append((path, data))  # type: ignore[arg-type]
        elif explicit:
            unreadable.append((path, "not a COCO file (no 'images' list / 'categories')"))
    if not parsed:
        if unreadable:
            path, err = unreadable[0]
            raise UserError(f"{path}: {err}; no readable COCO annotation file")
        raise UserError(f"{data_root}: no COCO annotation file (JSON with images/categories) found")
    for path, err in unreadable:
        result.skipped.append(Skipped(str(path), err))
        result.notes.append(f"{index.rel(str(path))}: {err}; its images are reported as not listed")
    return parsed


def _categories(
    parsed: list[tuple[Path, dict]], index: FileIndex, mapping: dict[str, str] | None, result: IngestResult
) -> list[dict[object, str]]:
    """Each file's category id -> name; sets `result.class_names` (by name, across files), dropping the empty
    supercategory Roboflow adds."""
    used_names: set[str] = set()
    super_names: set[str] = set()
    cat_maps: list[dict[object, str]] = []
    for path, data in parsed:
        cats: dict[object, str] = {}
        rel_json = index.rel(str(path))
        for c in _entries(data, "categories", rel_json, result.notes):
            if isinstance(c, dict) and _key(c.get("id")) is not None and str(c.get("name", "")).strip():
                cats[c["id"]] = str(c["name"]).strip()
                sup = str(c.get("supercategory") or "").strip()
                if sup and sup != cats[c["id"]]:
                    super_names.add(sup)
        for a in _entries(data, "annotations", rel_json, []):
            if isinstance(a, dict) and _key(a.get("category_id")) in cats:
                used_names.add(cats[a["category_id"]])
        cat_maps.append(cats)
    dropped: set[str] = set()
    class_names: list[str] = []
    for cats in cat_maps:
        for cid in sorted(cats, key=lambda k: (str(type(k)), k)):
            name = cats[cid]
            if name not in used_names and name in super_names:
                if name not in dropped:
                    dropped.add(name)
                    result.notes.append(
                        f"category {name!r} (id {cid}) dropped: no annotations, it is the supercategory of the others"
                    )
                continue
            canon = canonical_label(name, mapping)
            if canon not in class_names:
                class_names.append(canon)
    result.class_names = class_names
    return cat_maps


def _images_and_annotations(
    data: dict, rel_json: str, result: IngestResult
) -> tuple[list[dict], dict[object, list[dict]]]:
    """One file's image entries (in order, a malformed or repeated id skipped) and its annotations by image id
    (one for an unknown image skipped)."""
    anns_by_image: dict[object, list[dict]] = {}
    images_by_id: dict[object, dict] = {}
    entries: list[dict] = []
    for i, img in enumerate(data.get("images") or []):
        if not isinstance(img, dict) or _key(img.get("id")) is None or not isinstance(img.get("file_name"), str):
            result.skipped.append(Skipped(f"{rel_json}: images[{i}]", "image entry without id/file_name"))
            continue
        if img["id"] in images_by_id:
            result.skipped.append(
                Skipped(f"{rel_json}: images[{i}] ({img['file_name']})", f"duplicate image id {img['id']}")
            )
            continue
        images_by_id[img["id"]] = img
        entries.append(img)
    for j, a in enumerate(_entries(data, "annotations", rel_json, result.notes)):
        if not isinstance(a, dict) or _key(a.get("image_id")) not in images_by_id:
            image_id = a.get("image_id") if isinstance(a, dict) else None
            result.skipped.append(
                Skipped(f"{rel_json}: annotations[{j}]", f"annotation for unknown image_id {image_id!r}")
            )
            continue
        anns_by_image.setdefault(a["image_id"], []).append(a)
    return entries, anns_by_image


def _add_record(
    result: IngestResult,
    src: str,
    img: dict,
    anns: list[dict],
    cats: dict[object, str],
    mapping: dict[str, str] | None,
    rel_json: str,
    split: str | None,
) -> None:
    """The Record of one located film with its boxes checked against its header, or a skip when every one of
    its annotations is invalid."""
    problems: list[str] = []
    try:
        header: ImageHeader | None = image_header(Path(src))
    except HeaderError as exc:
        header = None
        problems.append(f"image header unreadable ({exc}); boxes checked against the declared size only")
    header, frame = resolve_frame(_declared(img), header, problems)
    boxes: list[Box] = []
    for a in anns:
        aid = a.get("id", "?")
        cid = _key(a.get("category_id"))
        if cid not in cats:
            problems.append(f"annotation {aid}: unknown category_id {cid!r}, dropped")
            continue
        box, bad = _box_from_bbox(a.get("bbox"), canonical_label(cats[cid], mapping), header, frame)
        if box is None:
            problems.append(f"annotation {aid}: {bad}, dropped")
        else:
            boxes.append(box)
    if anns and not boxes:
        result.skipped.append(Skipped(src, f"all {len(anns)} annotations invalid: " + "; ".join(problems[-3:])))
        return
    meta = {"annotation_file": rel_json}
    if header is not None and header.orientation != 1:
        meta["exif_orientation"] = str(header.orientation)
    result.records.append(Record(source=Path(src), boxes=boxes, split=split, meta=meta, problems=problems))


def _report_unlisted(index: FileIndex, seen: dict[str, str], result: IngestResult) -> None:
    """Each image file under the root that no COCO file lists, skipped with the reason (and a same-named twin)."""
    listed = set(seen) | {sk.source for sk in result.skipped}
    unlisted = [p for p in index.images if p not in listed]
    listed_names = {os.path.basename(p): rel for p, rel in seen.items()}
    for p in unlisted:
        twin = listed_names.get(os.path.basename(p))
        also = f" (a file of the same name is listed in {twin})" if twin else ""
        result.skipped.append(Skipped(p, f"image not listed in any COCO annotation file{also}"))
    if unlisted:
        result.notes.append(f"{len(unlisted)} image files under the root are not listed in any COCO file")


def coco_dict(records: Iterable[Record], class_names: Sequence[str], root: Path) -> dict:
    """Records with boxes as one COCO dict: image ids 1..n in order, category ids 1..n in `class_names` order.

    The one COCO builder (`save_coco`, evaluate's ground truth, the phantoms). Sizes come from file headers;
    `file_name` is relative to `root`. Boxes are written in stored-pixel coordinates; a box label not in
    `class_names` gets the next category id.
    """
    ids = {name: i + 1 for i, name in enumerate(class_names)}
    out: dict = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for n, i in ids.items()]}
    for image_id, rec in enumerate(records, start=1):
        header = image_header(Path(rec.source))
        out["images"].append(
            {
                "id": image_id,
                "file_name": os.path.relpath(rec.source, root).replace(os.sep, "/"),
                "width": header.width,
                "height": header.height,
            }
        )
        for b in rec.boxes or []:
            if b.label not in ids:
                ids[b.label] = len(ids) + 1
                out["categories"].append({"id": ids[b.label], "name": b.label})
            w, h = b.x2 - b.x1, b.y2 - b.y1
            out["annotations"].append(
                {
                    "id": len(out["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": ids[b.label],
                    "bbox": [b.x1, b.y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    return out


def save_coco(records: Iterable[Record], class_names: Sequence[str], path: Path, root: Path | None = None) -> Path:
    """Write `coco_dict` as one JSON file; `file_name` relative to `root` (default: the JSON's folder)."""
    path = Path(path)
    out = coco_dict(records, class_names, Path(root) if root else path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return path
