"""What prepare reports: manifest.csv, the prepare.json summary, the data hash runs record, and the files
under the source that are not films (with why)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from fracturekit.audit import AuditResult
from fracturekit.core.layout import MANIFEST_COLUMNS, SPLITS
from fracturekit.data.hashing import phash_hex
from fracturekit.data.imageio import SUFFIX_KINDS, sniff_file
from fracturekit.ingest.files import junk_reason, walk
from fracturekit.ingest.records import Box
from fracturekit.prepare.film import _Film
from fracturekit.prepare.grouping import _grouping

# Files each reader consumes besides images: not reported as unused.
_ANNOTATION_SUFFIXES = {
    "coco": {".json"},
    "voc": {".xml"},
    "yolo": {".txt", ".yaml", ".yml"},
    "fracatlas": {".json", ".xml", ".txt", ".csv"},
    "folders": set(),
}


def _other_files(root: Path, films: list[_Film], meta: Path | None, fmt: str) -> list[dict[str, str]]:
    """Every file under `root` that is neither a film of the manifest, its annotations nor --meta, with why.

    Junk (.DS_Store, Thumbs.db, ._* AppleDouble files, __MACOSX/ and hidden folders) is listed as ignored;
    an image under a suffix that is not read is named by its content, so the user can rename it.
    """
    used = {f.source for f in films} | ({str(meta)} if meta else set())
    annotations = _ANNOTATION_SUFFIXES.get(fmt, set())
    found: list[dict[str, str]] = []
    for dirpath, names in walk(root, junk=True):
        rel_dir = Path(dirpath).relative_to(root)
        for name in names:
            full = os.path.join(dirpath, name)
            suffix = Path(name).suffix.lower()
            junk = junk_reason([*rel_dir.parts, name])
            if full in used or (suffix in annotations and not junk):  # the readers skip junk too: report it
                continue
            if junk:
                reason = f"ignored: {junk}"
            elif (kind := sniff_file(full)) is not None and suffix not in SUFFIX_KINDS:
                reason = f"{kind.upper()} image content under the suffix {suffix or '(none)'}: rename it to include it"
            elif suffix == ".csv":
                reason = "a CSV not used: pass it with --meta to join its columns"
            else:
                reason = f"not an image ({suffix or 'no suffix'})"
            found.append({"source": (rel_dir / name).as_posix(), "reason": reason})
    return found


def _reason_kind(reason: str) -> str:
    """A reason without its file-specific part, for counting."""
    return reason.split(" (")[0] if reason.startswith("not an image") else reason


def _boxes_json(boxes: list[Box] | None) -> str:
    """The manifest's `boxes` value and the data hash's: `[[label, x1, y1, x2, y2], ...]`, "null" for None."""
    return json.dumps(None if boxes is None else [b.as_row() for b in boxes])


def _write_manifest(path: Path, films: list[_Film], meta_columns: list[str]) -> None:
    """manifest.csv: MANIFEST_COLUMNS, then metadata columns (from --meta, the reader, DICOM tags)."""
    extra = list(meta_columns)
    for film in films:
        extra.extend(k for k in film.meta if k not in extra and k not in MANIFEST_COLUMNS)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*MANIFEST_COLUMNS, *extra])
        for film in films:
            row = {
                "source": film.rel,
                "split": film.split,
                "label": film.label,
                "group": film.group or "",
                "cluster": film.cluster,
                "status": film.status,
                "reason": film.reason,
                "output_cls": film.output_cls,
                "output_det": film.output_det,
                "label_file": film.label_file,
                "boxes": _boxes_json(film.boxes) if film.boxes is not None else "",
                "width": film.width or "",
                "height": film.height or "",
                "sha256": film.sha256,
                "phash": phash_hex(film.phashes[0]) if film.phashes is not None else "",
                "warnings": "; ".join(film.warnings),
            }
            w.writerow([row[c] for c in MANIFEST_COLUMNS] + [film.meta.get(c, "") for c in extra])


def pixel_transform(clahe: bool, max_side: int | None) -> str | None:
    """How prepare changed the pixels of the films it wrote (--clahe, --max-side), for data_hash; None when it
    wrote them as read."""
    parts = (["clahe"] if clahe else []) + ([f"max_side={max_side}"] if max_side is not None else [])
    return ",".join(parts) or None


def data_hash(films: Iterable[tuple[str, str, str, str]], pixels: str | None = None) -> str:
    """The dataset's identity runs record: sha256 over sorted `sha256|split|label|boxes JSON` lines, one per film,
    after a `pixels|<transform>` line when prepare changed the pixels (`pixel_transform`), so that a dataset
    prepared again with other --clahe/--max-side is another version; a dataset of films as read keeps the hash it
    had before that line existed."""
    digest = hashlib.sha256()
    if pixels:
        digest.update(f"pixels|{pixels}\n".encode())
    for line in sorted("|".join(f) for f in films):
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def _summary(
    films: list[_Film], det_names: list[str], audit_result: AuditResult | None, film_split: bool, pixels: str | None
) -> dict:
    """Counts per split and label, skipped files with reasons, and the data hash runs record (`pixels`: the
    `pixel_transform` the films were written with)."""
    ok = [f for f in films if f.status == "ok"]
    skipped = [f for f in films if f.status != "ok"]
    per_split = {s: dict(sorted(Counter(f.label for f in ok if f.split == s).items())) for s in SPLITS}
    boxes = {s: sum(len(f.boxes or []) for f in ok if f.split == s) for s in SPLITS}
    notes = [] if any(f.boxes is not None for f in ok) else ["the source has no boxes: det/ holds no images"]
    return {
        "images_in": len(films),
        "ok": len(ok),
        "skipped": len(skipped),
        "per_split": per_split,
        "boxes_per_split": boxes,
        "det_images": sum(1 for f in ok if f.boxes is not None),
        "det_classes": det_names,
        "copied_byte_for_byte": sum(1 for f in ok if f.copied),
        "written_png": sum(1 for f in ok if not f.copied),
        "skipped_reasons": dict(Counter(f.reason for f in skipped).most_common()),
        "skipped_files": [{"source": f.rel, "reason": f.reason} for f in skipped],
        "with_warnings": sum(1 for f in ok if f.warnings),
        "groups": len({f.group for f in ok if f.group}),
        "grouping": _grouping(ok, film_split),
        "audit": audit_result.to_dict() if audit_result else None,
        "pixels": pixels,
        "data_hash": data_hash(((f.sha256, f.split, f.label, _boxes_json(f.boxes)) for f in ok), pixels),
        "notes": notes,
    }
