"""Pascal VOC reader: one XML per image (`<filename>`, `<size>`, `<object><name><bndbox>`).

- The image is looked up from `<filename>` beside the XML, in `../JPEGImages/` (VOC layout), at the
  root, in `images/`, in `image_dirs`, then as an image with the XML's stem beside it, then by unique
  base name anywhere under the root. `<path>` (the annotator's machine) is ignored. A `<filename>`
  that leaves the root is refused.
- XML without objects = background (`boxes=[]`); objects with a bad box go to `problems`; when all
  of an XML's objects are bad it is Skipped (it was meant to show something).
- Coordinates are taken as given (0-based continuous, as LabelImg/Roboflow/FracAtlas write them), in
  the `<size>` frame, checked against the file header (see `geometry.resolve_frame`).
- Unparsable XML, or XML whose root is not `<annotation>`: Skipped. Image files that no XML names:
  Skipped ("no VOC annotation") when `report_unlisted`.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from fracturekit.core.errors import UserError
from fracturekit.data.imageio import IMAGE_SUFFIXES, HeaderError, ImageHeader, image_header
from fracturekit.ingest.files import FileIndex
from fracturekit.ingest.geometry import frame_box, resolve_frame
from fracturekit.ingest.labels import assign_image_labels, canonical_label, split_from_parts
from fracturekit.ingest.records import Box, IngestResult, Record, Skipped


def _text(el: ET.Element | None, tag: str) -> str:
    child = el.find(tag) if el is not None else None
    return (child.text or "").strip() if child is not None and child.text else ""


def _num(el: ET.Element | None, tag: str) -> float | None:
    try:
        return float(_text(el, tag))
    except ValueError:
        return None


def _find_image(index: FileIndex, filename: str, xml: str, extra_dirs: Sequence[str]) -> tuple[str | None, str | None]:
    xml_dir = os.path.dirname(xml)
    bases = [xml_dir, os.path.join(os.path.dirname(xml_dir), "JPEGImages"), index.root]
    bases += [os.path.join(index.root, "images"), *extra_dirs]
    name = filename.replace("\\", "/").strip()
    if name and not os.path.splitext(name)[1]:  # some tools drop the extension
        for base in bases:
            for suf in sorted(IMAGE_SUFFIXES):
                found = index.find(os.path.join(base, name + suf))
                if found:
                    return found, None
    if name:
        found, why = index.locate(name, bases, what="<filename>")
        if found or (why and "escapes" in why):
            return found, why
    stem = os.path.splitext(xml)[0]
    for suf in sorted(IMAGE_SUFFIXES):
        for cand in (stem + suf, stem + suf.upper()):
            if cand in index.files:
                return cand, None
    return None, f"image file not found ({filename or 'no <filename>'})"


def read_voc_annotation(
    ann: ET.Element, image: Path, mapping: dict[str, str] | None = None
) -> tuple[list[Box], list[str], int, ImageHeader | None]:
    """Boxes (stored pixels), problems, number of objects, and the image header of one parsed VOC file."""
    problems: list[str] = []
    size = ann.find("size")
    w, h = _num(size, "width"), _num(size, "height")
    declared = (w, h) if w and h and w > 0 and h > 0 else None
    try:
        header: ImageHeader | None = image_header(image)
    except HeaderError as exc:
        header = None
        problems.append(f"image header unreadable ({exc}); boxes checked against <size> only")
    header, frame = resolve_frame(declared, header, problems)
    boxes: list[Box] = []
    objects = ann.findall("object")
    for k, obj in enumerate(objects, start=1):
        name = _text(obj, "name")
        bnd = obj.find("bndbox")
        if not name:
            problems.append(f"object {k}: no <name>, dropped")
            continue
        if bnd is None:
            problems.append(f"object {k} ({name}): no <bndbox>, dropped")
            continue
        coords = [_num(bnd, t) for t in ("xmin", "ymin", "xmax", "ymax")]
        if any(c is None for c in coords):
            problems.append(f"object {k} ({name}): non-numeric <bndbox>, dropped")
            continue
        x1, y1, x2, y2 = (float(c) for c in coords)  # type: ignore[arg-type]
        box, why = frame_box(canonical_label(name, mapping), x1, y1, x2, y2, header, frame)
        if box is None:
            problems.append(f"object {k} ({name}) [{x1:g}, {y1:g}, {x2:g}, {y2:g}]: {why}, dropped")
        else:
            boxes.append(box)
    return boxes, problems, len(objects), header


def load_voc(
    root: Path,
    mapping: dict[str, str] | None = None,
    *,
    xml_dir: Path | None = None,
    image_dirs: Sequence[Path] = (),
    report_unlisted: bool = True,
    fmt: str = "voc",
) -> IngestResult:
    """Read every VOC XML under `root` (or only under `xml_dir`, a folder inside `root`)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    index = FileIndex(root)
    xml_prefix = os.path.realpath(xml_dir) + os.sep if xml_dir else index.root + os.sep
    xmls = sorted(p for p in index.files if p.lower().endswith(".xml") and p.startswith(xml_prefix))
    if not xmls:
        raise UserError(f"{xml_dir or root}: no Pascal VOC .xml file found")
    result = IngestResult(format=fmt)
    extra_dirs = [os.path.realpath(d) for d in image_dirs]
    seen: dict[str, str] = {}
    class_names: list[str] = []
    unreadable = 0
    for xml in xmls:
        rel_xml = index.rel(xml)
        try:
            ann = ET.parse(xml).getroot()
        except (ET.ParseError, OSError, UnicodeDecodeError) as exc:
            result.skipped.append(Skipped(xml, f"unreadable XML ({str(exc)[:100]})"))
            unreadable += 1
            continue
        if ann.tag != "annotation":
            result.skipped.append(Skipped(xml, f"not a VOC annotation (root element <{ann.tag}>)"))
            continue
        image, why = _find_image(index, _text(ann, "filename"), xml, extra_dirs)
        if image is None:
            n = len(ann.findall("object"))
            result.skipped.append(Skipped(xml, f"{why}" + (f" ({n} objects lost)" if n else "")))
            continue
        if image in seen:
            result.skipped.append(Skipped(xml, f"same image already annotated by {seen[image]}"))
            continue
        seen[image] = rel_xml
        boxes, problems, n_obj, header = read_voc_annotation(ann, Path(image), mapping)
        if n_obj and not boxes:
            result.skipped.append(Skipped(image, f"all {n_obj} objects invalid: " + "; ".join(problems[-3:])))
            continue
        for b in boxes:
            if b.label not in class_names:
                class_names.append(b.label)
        split = split_from_parts(index.rel(image).split("/")[:-1]) or split_from_parts(rel_xml.split("/")[:-1])
        meta = {"annotation_file": rel_xml}
        if header is not None and header.orientation != 1:
            meta["exif_orientation"] = str(header.orientation)
        result.records.append(Record(source=Path(image), boxes=boxes, split=split, meta=meta, problems=problems))
    if unreadable and unreadable == len(xmls):
        raise UserError(f"{root}: none of the {len(xmls)} VOC .xml files could be read")
    result.class_names = sorted(class_names)
    if report_unlisted:
        listed = set(seen) | {s.source for s in result.skipped}
        unlisted = [p for p in index.images if p not in listed]
        for p in unlisted:
            result.skipped.append(Skipped(p, "no VOC annotation names this image"))
        if unlisted:
            result.notes.append(f"{len(unlisted)} image files have no VOC annotation")
    assign_image_labels(result)
    return result
