"""`prepare`: a raw fracture dataset in, a leak-free YOLO classification + detection dataset out.

Steps: read annotations (`load_source`), join metadata, decode every film once on a thread pool
(hashes, optional CLAHE / downscale, write a staged output file), cluster duplicates, assign
seeded stratified grouped splits, move the staged files into `cls/` and `det/`, write the manifest,
the summary and the audit. Everything is built in `<out>.tmp-<pid>` and renamed over `out` at the
end, so an interrupted run never leaves a complete-looking dataset.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from fracturekit.audit import AuditItem, AuditResult, audit_items, duplicate_links, parallel_map
from fracturekit.errors import UserError
from fracturekit.hashing import dihedral_phashes, phash_hex, pixel_sha256
from fracturekit.imageio import ImageReadError, apply_clahe, limit_side, read_image
from fracturekit.ingest.base import HeaderError, Record, fold, image_header
from fracturekit.layout import MANIFEST_COLUMNS, POSITIVE_CLASS, SPLITS, PreparedDataset
from fracturekit.split import DEFAULT_RATIOS, assign_splits, check_ratios

# Column names (folded: lower-case alphanumerics) recognised in a --meta CSV.
_KEY_COLUMNS = ("filename", "file", "imageid", "image", "imagename", "filestem", "path", "filepath", "name", "id")
_GROUP_COLUMNS = ("patientid", "patient", "subjectid", "subject", "studyid", "study", "studyinstanceuid")
_COPY_SUFFIXES = {".jpg": ".jpg", ".jpeg": ".jpg", ".png": ".png"}


@dataclass
class PrepareResult:
    """What `prepare` made: the dataset on disk, its summary (prepare.json) and its audit."""

    dataset: PreparedDataset
    summary: dict
    audit: AuditResult | None


@dataclass
class _Film:
    """One source image on its way through prepare (one manifest row)."""

    source: str
    record: Record | None
    rel: str = ""  # path relative to the dataset root (posix), for --group-regex and --meta joins
    label: str = ""
    group: str | None = None
    stem: str = ""
    status: str = "ok"
    reason: str = ""
    staged: Path | None = None
    copied: bool = False
    width: int = 0
    height: int = 0
    sha256: str = ""
    pixel_sha256: str = ""
    phashes: np.ndarray | None = None
    boxes: list[list] | None = None
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    split: str = ""
    output_cls: str = ""
    output_det: str = ""
    label_file: str = ""


def _check_out(source: Path, out: Path) -> None:
    """Refuse an output folder that is the source, inside it, contains it, or is not ours to replace."""
    src, dst = source.resolve(), out.resolve()
    if dst == src or src in dst.parents:
        raise UserError(f"--out {out} is inside the source {source}; choose a folder outside it.")
    if dst in src.parents:
        raise UserError(f"--out {out} contains the source {source}; replacing it would delete the source.")
    if out.exists() and not (out / "manifest.csv").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not a prepared dataset; choose a new or empty folder.")


def _join_meta(films: list[_Film], meta_csv: Path, group_column: str | None, key_column: str | None) -> list[str]:
    """Merge a per-image CSV into each film's meta by relative path, file name or stem; returns its columns.

    key_column names the image column (a preset's meta_key); else the first column called like
    file_name / image_id / path. group_column (else a patient_id / study_id-like column) sets the group.
    """
    import pandas as pd

    if not meta_csv.is_file():
        raise UserError(f"--meta {meta_csv}: no such file; pass a CSV with one row per image.")
    try:
        df = pd.read_csv(meta_csv, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise UserError(f"--meta {meta_csv}: not a readable CSV ({exc}).") from None
    found = (c for c in df.columns if fold(str(c)) in _KEY_COLUMNS)
    key = key_column if key_column in df.columns else next(found, None)
    if key is None:
        raise UserError(f"--meta {meta_csv}: no file-name column; name one of file_name, image_id, path.")
    rows = {str(v).replace("\\", "/"): r for v, r in zip(df[key], df.to_dict("records"), strict=True)}
    stems = {Path(k).stem: r for k, r in rows.items()}
    group_col = group_column or next((c for c in df.columns if fold(str(c)) in _GROUP_COLUMNS), None)
    if group_col is not None and group_col not in df.columns:
        raise UserError(f"--meta {meta_csv}: no column {group_col!r} to group by; columns: {', '.join(df.columns)}.")
    for film in films:
        src = Path(film.source)
        row = rows.get(film.rel) or rows.get(src.name) or stems.get(src.stem)
        if row is None:
            film.warnings.append(f"no row in {meta_csv.name}")
            continue
        film.meta.update({k: str(v) for k, v in row.items() if k != key})
        if group_col and row.get(group_col) and film.group is None:
            film.group = str(row[group_col])
    return [c for c in df.columns if c != key]


def _relative(path: Path, root_abs: Path) -> str:
    """`path` relative to the (resolved) dataset root, posix, or its name when it lies outside."""
    try:
        return Path(path).resolve().relative_to(root_abs).as_posix()
    except ValueError:
        return Path(path).name


def _unique_stems(films: list[_Film]) -> None:
    """Output stems unique case-insensitively: the file stem, or its relative path when names collide."""
    counts = Counter(Path(f.source).stem.lower() for f in films)
    used: set[str] = set()
    for film in films:
        src = Path(film.source)
        stem = src.stem
        if counts[stem.lower()] > 1:
            stem = "__".join(Path(film.rel).with_suffix("").parts) + "_" + src.suffix.lstrip(".").lower()
        stem = re.sub(r"[^\w.\- ]", "_", stem)
        base, k = stem, 1
        while stem.lower() in used:
            k += 1
            stem = f"{base}_{k}"
        used.add(stem.lower())
        film.stem = stem


def _exif_rotated(path: Path) -> bool:
    """True when the file carries an EXIF orientation other than 1: Ultralytics would apply it, we do not."""
    try:
        return image_header(path).orientation != 1
    except HeaderError:
        return True


def _process(film: _Film, stage: Path, clahe: bool, max_side: int | None) -> None:
    """Decode, hash, transform and stage one film; on failure mark it skipped with the reason."""
    src = Path(film.source)
    try:
        data = src.read_bytes()
        img = read_image(src)
    except (ImageReadError, OSError) as exc:
        film.status, film.reason = "skipped", f"unreadable image: {exc}"
        return
    film.sha256 = hashlib.sha256(data).hexdigest()
    film.pixel_sha256 = pixel_sha256(img.pixels)
    film.phashes = dihedral_phashes(img.pixels)
    film.warnings.extend(img.warnings)
    film.meta.update(img.meta)
    pixels, scale = limit_side(img.pixels, max_side)
    if clahe:
        pixels = apply_clahe(pixels)
    film.height, film.width = pixels.shape[:2]
    suffix = _COPY_SUFFIXES.get(src.suffix.lower())
    clean = (
        suffix is not None
        and img.source_bit_depth == 8
        and not img.warnings
        and scale == 1.0
        and not clahe
        and not _exif_rotated(src)
    )
    if clean:
        film.staged, film.copied = stage / f"{film.stem}{suffix}", True
        film.staged.write_bytes(data)  # byte-for-byte copy of a clean 8-bit film: lossless and fast
    else:
        film.staged = stage / f"{film.stem}.png"
        if not cv2.imwrite(str(film.staged), pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            film.status, film.reason = "skipped", "could not write the output PNG"
            return
    if film.record is not None and film.record.boxes is not None:
        film.boxes = []
        for b in film.record.boxes:
            x1, y1 = max(0.0, b.x1 * scale), max(0.0, b.y1 * scale)
            x2, y2 = min(float(film.width), b.x2 * scale), min(float(film.height), b.y2 * scale)
            if x2 - x1 < 1 or y2 - y1 < 1:
                film.warnings.append(f"box {b.label} dropped: under 1 px inside the output image")
                continue
            film.boxes.append([b.label, round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)])


def _process_safely(film: _Film, stage: Path, clahe: bool, max_side: int | None) -> None:
    """`_process`, but any unexpected error on one file marks that file skipped instead of stopping the run."""
    try:
        _process(film, stage, clahe, max_side)
    except Exception as exc:  # a decoder/library bug on one odd file must not lose the other thousands
        film.status, film.reason, film.boxes = "skipped", f"failed: {type(exc).__name__}: {exc}", None


def _group_of(film: _Film, group_regex: re.Pattern[str] | None) -> str | None:
    """Patient/study key: reader > --meta column > DICOM tags > --group-regex (file name, then relative path)."""
    if film.group:
        return film.group
    for tag in ("PatientID", "StudyInstanceUID"):
        if film.meta.get(tag):
            return f"{tag}:{film.meta[tag]}"
    if group_regex is not None:
        for text in (Path(film.source).name, film.rel):  # 'P(\d+)_' on names, 'patient(\d+)' on MURA folders
            m = group_regex.search(text)
            if m:
                return m.group(1) if m.groups() else m.group(0)
        film.warnings.append("--group-regex matched neither the file name nor its path")
    return None


def _safe_dirname(label: str) -> str:
    return re.sub(r"[\\/]", "_", label).strip() or "unlabelled"


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def prepare(
    source: Path,
    out: Path | None = None,
    *,
    fmt: str = "auto",
    split: tuple[float, float, float] | None = DEFAULT_RATIOS,
    keep_splits: bool = False,
    seed: int = 0,
    group_regex: str | None = None,
    meta: Path | None = None,
    mapping: dict[str, str] | None = None,
    clahe: bool = False,
    max_side: int | None = None,
    preset: str | None = None,
    audit: bool = True,
    progress: bool = False,
) -> PrepareResult:
    """Turn the raw dataset at `source` into `out` (default `datasets/<source name>`); see the module doc.

    split: train/val/test fractions for the re-split; None means keep the source's splits
    (like keep_splits=True). With keep_splits, images the source puts in no split (FracAtlas lists
    only fractured films) are re-split with these fractions, next to the kept ones.
    """
    t0 = time.perf_counter()
    source = Path(source)
    if not source.exists():
        raise UserError(f"{source}: no such folder; pass the folder of a raw dataset (or a COCO JSON file).")
    root = source if source.is_dir() else source.parent  # a COCO JSON file names its images relative to its folder
    group_column = key_column = None
    if preset:
        from fracturekit.presets import load_preset

        p = load_preset(preset)
        fmt = p.format if fmt == "auto" else fmt
        mapping = mapping if mapping is not None else (p.mapping or None)
        group_regex = group_regex or p.group_regex
        group_column, key_column = p.group_column, p.meta_key
        if meta is None and p.meta_csv and (root / p.meta_csv).is_file():
            meta = root / p.meta_csv
    if split is None:
        keep_splits, ratios = True, DEFAULT_RATIOS
    else:
        ratios = check_ratios(split)
    if max_side is not None and max_side < 32:
        raise UserError(f"--max-side {max_side}: use at least 32 px.")
    try:
        regex = re.compile(group_regex) if group_regex else None
    except re.error as exc:
        raise UserError(f"--group-regex {group_regex!r}: not a valid regular expression ({exc}).") from None
    out = (
        Path(out) if out is not None else Path("datasets") / (source.resolve().name if source.is_dir() else source.stem)
    )
    _check_out(root, out)

    from fracturekit.ingest.source import load_source

    ingest = load_source(source, fmt=fmt, mapping=mapping)
    t_ingest = time.perf_counter()

    films: list[_Film] = [
        _Film(source=s.source, record=None, status="skipped", reason=s.reason) for s in ingest.skipped
    ]
    seen: set[Path] = set()
    root_abs = root.resolve()
    for rec in ingest.records:
        film = _Film(
            source=str(rec.source),
            record=rec,
            rel=_relative(rec.source, root_abs),
            group=rec.group,
            meta=dict(rec.meta),
        )
        film.warnings.extend(rec.problems)
        key = Path(rec.source).resolve()
        label = rec.image_label
        if key in seen:
            film.status, film.reason = "skipped", "listed twice in the annotations"
        elif label is None:
            film.status, film.reason = "skipped", "no label: not in a class folder and no annotation"
        else:
            film.label = label
        seen.add(key)
        films.append(film)
    usable = [f for f in films if f.status == "ok"]
    meta_columns = _join_meta(usable, Path(meta), group_column, key_column) if meta else []
    _unique_stems(usable)

    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    stage = tmp / ".stage"
    stage.mkdir(parents=True)
    try:
        parallel_map(lambda f: _process_safely(f, stage, clahe, max_side), usable, progress, "decoding films")
        t_decode = time.perf_counter()
        if not any(f.status == "ok" for f in films):
            reasons = "; ".join(f"{n} x {r}" for r, n in Counter(f.reason for f in films).most_common(3))
            raise UserError(f"{source}: none of the {len(films)} images is usable ({reasons or 'no images found'}).")
        summary, audit_result = _assemble(
            tmp, films, ingest.class_names, ratios, keep_splits, seed, regex, meta_columns, audit
        )
        shutil.rmtree(stage)
        summary.update(
            source=str(source.resolve()),
            format=ingest.format,
            notes=[*ingest.notes, *summary["notes"]],
            options={
                "split": list(ratios),
                "keep_splits": keep_splits,
                "seed": seed,
                "group_regex": group_regex,
                "meta": str(meta) if meta else None,
                "mapping": mapping,
                "clahe": clahe,
                "max_side": max_side,
                "preset": preset,
            },
        )
        summary["timings_s"] = {
            "read_annotations": round(t_ingest - t0, 3),
            "decode_hash_write": round(t_decode - t_ingest, 3),
            "total": round(time.perf_counter() - t0, 3),
        }
        (tmp / "prepare.json").write_text(json.dumps(summary, indent=2) + "\n")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PrepareResult(dataset=PreparedDataset(out), summary=summary, audit=audit_result)


def _replace(tmp: Path, out: Path) -> None:
    """Rename the finished build over `out`; an old prepared dataset there is removed only afterwards."""
    old = out.parent / f"{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old)


def _assemble(
    root: Path,
    films: list[_Film],
    class_names: list[str],
    ratios: tuple[float, float, float],
    keep_splits: bool,
    seed: int,
    regex: re.Pattern[str] | None,
    meta_columns: list[str],
    run_audit: bool,
) -> tuple[dict, AuditResult | None]:
    """Split the decoded films, move them into cls/ and det/, write data.yaml, manifest, audit."""
    ok = [f for f in films if f.status == "ok"]
    for film in ok:
        film.group = _group_of(film, regex)
    items = [
        AuditItem(f.source, "", f.label, f.group, f.sha256, f.pixel_sha256, f.phashes)  # type: ignore[arg-type]
        for f in ok
    ]
    duplicates = duplicate_links(items)
    by_group: dict[str, list[int]] = {}
    for i, film in enumerate(ok):
        if film.group:
            by_group.setdefault(film.group, []).append(i)
    fixed = [f.record.split if keep_splits and f.record else None for f in ok]
    splits = assign_splits([f.label for f in ok], [*duplicates, *by_group.values()], fixed, ratios, seed)

    det_names = list(class_names)
    for film in ok:
        for box in film.boxes or []:
            if box[0] not in det_names:
                det_names.append(box[0])
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

    _write_manifest(root / "manifest.csv", films, meta_columns)
    audit_result = None
    if run_audit:
        for item, s in zip(items, splits, strict=True):
            item.split = s
        audit_result = audit_items(items, duplicates=duplicates)
        audit_result.write(root / "audit")
    return _summary(films, det_names, audit_result), audit_result


def _place(root: Path, film: _Film, det_index: dict[str, int]) -> None:
    """Move a staged film into cls/<split>/<label>/, link it into det/images/<split>/, write its label file."""
    assert film.staged is not None
    cls_rel = Path("cls") / film.split / _safe_dirname(film.label) / film.staged.name
    os.replace(film.staged, root / cls_rel)
    film.output_cls = cls_rel.as_posix()
    if film.boxes is None:
        return
    det_rel = Path("det") / "images" / film.split / film.staged.name
    _link_or_copy(root / cls_rel, root / det_rel)
    lbl_rel = Path("det") / "labels" / film.split / f"{film.stem}.txt"
    lines = [
        f"{det_index[c]} {(x1 + x2) / 2 / film.width:.6f} {(y1 + y2) / 2 / film.height:.6f} "
        f"{(x2 - x1) / film.width:.6f} {(y2 - y1) / film.height:.6f}\n"
        for c, x1, y1, x2, y2 in film.boxes
    ]
    (root / lbl_rel).write_text("".join(lines))  # empty file for a background image
    film.output_det, film.label_file = det_rel.as_posix(), lbl_rel.as_posix()


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
                "source": film.source,
                "split": film.split,
                "label": film.label,
                "group": film.group or "",
                "status": film.status,
                "reason": film.reason,
                "output_cls": film.output_cls,
                "output_det": film.output_det,
                "label_file": film.label_file,
                "boxes": json.dumps(film.boxes) if film.boxes is not None else "",
                "width": film.width or "",
                "height": film.height or "",
                "sha256": film.sha256,
                "phash": phash_hex(film.phashes[0]) if film.phashes is not None else "",
                "warnings": "; ".join(film.warnings),
            }
            w.writerow([row[c] for c in MANIFEST_COLUMNS] + [film.meta.get(c, "") for c in extra])


def data_hash(films: Iterable[tuple[str, str, str, str]]) -> str:
    """The dataset's identity runs record: sha256 over sorted `sha256|split|label|boxes JSON` lines, one per film."""
    digest = hashlib.sha256()
    for line in sorted("|".join(f) for f in films):
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def _summary(films: list[_Film], det_names: list[str], audit_result: AuditResult | None) -> dict:
    """Counts per split and label, skipped files with reasons, and the data hash runs record."""
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
        "skipped_files": [{"source": f.source, "reason": f.reason} for f in skipped],
        "with_warnings": sum(1 for f in ok if f.warnings),
        "groups": len({f.group for f in ok if f.group}),
        "audit": audit_result.to_dict() if audit_result else None,
        "data_hash": data_hash((f.sha256, f.split, f.label, json.dumps(f.boxes)) for f in ok),
        "notes": notes,
    }
