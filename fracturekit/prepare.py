"""`prepare`: a raw fracture dataset in, a leak-free YOLO classification + detection dataset out.

Steps: read annotations (`load_source`), join metadata, decode every film once on a thread pool
(hashes, optional CLAHE / downscale, write a staged output file), cluster duplicates, assign
seeded stratified grouped splits, move the staged files into `cls/` and `det/`, write the manifest,
the summary and the audit. Everything is built in `<out>.tmp-<pid>` and then renamed to `out`; over an
earlier dataset (`exist_ok`) only the files that prepare recorded writing there are replaced, the
manifest last, so an interrupted run never leaves a complete-looking dataset and a user's own files in
`out` stay. A later prepare removes the `<out>.tmp-<pid>` of a killed run (see fracturekit.outputs).
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

from fracturekit import callable_stage
from fracturekit.audit import AuditItem, AuditResult, audit_items, duplicate_links, film_hashes, parallel_map
from fracturekit.copies import Signature
from fracturekit.errors import UserError
from fracturekit.hashing import phash_hex
from fracturekit.imageio import (
    SUFFIX_KINDS,
    HeaderError,
    ImageReadError,
    apply_clahe,
    image_header,
    limit_side,
    read_image,
    sniff_file,
)
from fracturekit.ingest.files import junk_reason, walk
from fracturekit.ingest.labels import fold
from fracturekit.ingest.records import Box, Record
from fracturekit.ingest.yolo import yolo_lines
from fracturekit.layout import MANIFEST_COLUMNS, POSITIVE_CLASS, SPLITS, PreparedDataset
from fracturekit.outputs import (
    RECORD,
    TMP_MARKER,
    check_free,
    clean_stale_tmp,
    files_under,
    new_tmp,
    read_record,
    remove_recorded,
    write_record,
)
from fracturekit.paths import maybe_path, rel_to, user_path
from fracturekit.split import DEFAULT_RATIOS, assign_splits, check_ratios

# Column names (folded: lower-case alphanumerics) recognised in a --meta CSV.
_KEY_COLUMNS = ("filename", "file", "imageid", "image", "imagename", "filestem", "path", "filepath", "name", "id")
_GROUP_COLUMNS = ("patientid", "patient", "subjectid", "subject", "studyid", "study", "studyinstanceuid")
# Where a film's patient group came from, in the order they are tried (prepare.json `grouping.sources`).
GROUP_SOURCES = ("annotations", "meta_csv", "dicom_tags", "regex", "duplicate_cluster", "none")
# Files each reader consumes besides images: not reported as unused.
_ANNOTATION_SUFFIXES = {
    "coco": {".json"},
    "voc": {".xml"},
    "yolo": {".txt", ".yaml", ".yml"},
    "fracatlas": {".json", ".xml", ".txt", ".csv"},
    "folders": set(),
}
_COPY_SUFFIXES = {"jpeg": ".jpg", "png": ".png"}  # content types copied byte for byte, and their output suffix


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
    rel: str = ""  # path relative to the source root (posix): the manifest's `source`, --group-regex, --meta joins
    label: str = ""
    group: str | None = None
    group_source: str = "none"  # one of GROUP_SOURCES: where `group` came from
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
    copy_sig: Signature | None = None
    cluster: str = ""  # the audit's duplicate-cluster id, "" when the film has no duplicate
    boxes: list[Box] | None = None  # in the pixels of the film written (after --max-side)
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    split: str = ""
    output_cls: str = ""
    output_det: str = ""
    label_file: str = ""


def _check_out(source: Path, out: Path, exist_ok: bool) -> set[str]:
    """Refuse an output folder that is the source, inside it, contains it, or already used (unless exist_ok).

    Returns the files an earlier prepare wrote there (to be replaced); nothing is removed yet.
    """
    src, dst = source, out  # both resolved by `prepare`
    if dst == src or src in dst.parents:
        raise UserError(f"--out {out} is inside the source {source}; choose a folder outside it.")
    if dst in src.parents:
        raise UserError(f"--out {out} contains the source {source}; replacing it would delete the source.")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder.")
    used = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if used and not exist_ok:
        shown = [n for n in used if n != RECORD] or used
        what = "a prepared dataset" if (out / "manifest.csv").is_file() else "files"
        raise UserError(
            f"--out {out} already holds {what} ({', '.join(shown[:3])}{' ...' if len(shown) > 3 else ''}); "
            "pass --exist-ok to replace what prepare wrote there (nothing else is touched), or choose a new folder."
        )
    return _written_by_prepare(out) if used else set()


def _written_by_prepare(out: Path) -> set[str]:
    """What an earlier prepare wrote into `out`: its record, or (datasets made before records) its manifest."""
    recorded = read_record(out, "prepare")
    if recorded or not (out / "manifest.csv").is_file():
        return recorded
    files = {"manifest.csv", "prepare.json", "det/data.yaml", "audit/duplicates.csv", "audit/audit.json"}
    with (out / "manifest.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            files.update(row[c] for c in ("output_cls", "output_det", "label_file") if row.get(c))
    return files


def _join_meta(films: list[_Film], meta_csv: Path, group_column: str | None, key_column: str | None) -> list[str]:
    """Merge a per-image CSV into each film's meta by relative path, file name or stem; returns its columns.

    key_column names the image column (a preset's meta_key); else the first column called like
    file_name / image_id / path. group_column (else a patient_id / study_id-like column) sets the group.
    A CSV that matches none of the films, or whose group column is empty for all that it matches, is a
    UserError: grouping must never fall back to a film-level split in silence.
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
    joined = grouped = 0
    for film in films:
        src = Path(film.source)
        row = rows.get(film.rel) or rows.get(src.name) or stems.get(src.stem)
        if row is None:
            film.warnings.append(f"no row in {meta_csv.name}")
            continue
        joined += 1
        film.meta.update({k: str(v) for k, v in row.items() if k != key})
        if group_col and row.get(group_col) and film.group is None:
            film.group, film.group_source = str(row[group_col]), "meta_csv"
            grouped += 1
    if films and not joined:
        names = ", ".join(Path(f.source).name for f in films[:2])
        keys = ", ".join(list(rows)[:2])
        raise UserError(
            f"--meta {meta_csv}: none of the {len(films)} films matches a row by its column {key!r} "
            f"(films {names}; rows {keys}); pass the CSV of this dataset."
        )
    if group_col and joined and not grouped and not any(f.group for f in films):
        raise UserError(f"--meta {meta_csv}: column {group_col!r} is empty for every matched film; fill it in.")
    return [c for c in df.columns if c != key]


def _shown(source: str, root: Path) -> str:
    """A reader's skipped entry as the manifest shows it: a file relative to the root, else its text."""
    return rel_to(source, root) if os.path.isabs(source) else source


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
    film.pixel_sha256, film.phashes, film.copy_sig = film_hashes(img.pixels)
    film.warnings.extend(img.warnings)
    film.meta.update(img.meta)
    pixels, scale = limit_side(img.pixels, max_side)
    if clahe:
        pixels = apply_clahe(pixels)
    film.height, film.width = pixels.shape[:2]
    suffix = _COPY_SUFFIXES.get(img.kind or "")
    named = SUFFIX_KINDS.get(src.suffix.lower())
    if img.kind is not None and named is not None and named != img.kind:
        how = f"kept as {suffix}" if suffix else "re-encoded as PNG"
        film.warnings.append(f"content is {img.kind.upper()} although named {src.suffix}: {how}")
    # Ultralytics re-saves a JPEG whose last two bytes are not the end marker, inside the dataset: re-encode.
    jpeg_ends = img.kind != "jpeg" or data[-2:] == b"\xff\xd9"
    clean = (
        suffix is not None
        and jpeg_ends
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
            film.boxes.append(Box(b.label, round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)))


def _process_safely(film: _Film, stage: Path, clahe: bool, max_side: int | None) -> None:
    """`_process`, but any unexpected error on one file marks that file skipped instead of stopping the run."""
    try:
        _process(film, stage, clahe, max_side)
    except Exception as exc:  # a decoder/library bug on one odd file must not lose the other thousands
        film.status, film.reason, film.boxes = "skipped", f"failed: {type(exc).__name__}: {exc}", None


def _set_group(film: _Film, group_regex: re.Pattern[str] | None) -> None:
    """Patient/study key and its source: reader > --meta column > DICOM tags > --group-regex (name, then path)."""
    if film.group:
        return
    for tag in ("PatientID", "StudyInstanceUID"):
        if film.meta.get(tag):
            film.group, film.group_source = f"{tag}:{film.meta[tag]}", "dicom_tags"
            return
    if group_regex is not None:
        for text in (Path(film.source).name, film.rel):  # 'P(\d+)_' on names, 'patient(\d+)' on MURA folders
            m = group_regex.search(text)
            if m:
                film.group, film.group_source = (m.group(1) if m.groups() else m.group(0)), "regex"
                return
        film.warnings.append("--group-regex matched neither the file name nor its path")


def _find_preset_file(root: Path, name: str, preset: str, what: str) -> Path:
    """A preset's file (its metadata CSV) in the dataset root or one folder below, where archives put it.

    GRAZPEDWRI-DX unzips to `GRAZPEDWRI-DX/dataset.csv`, so a user often passes the folder holding it.
    """
    candidates = [root / name] + sorted(d / name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    found = [c for c in candidates if c.is_file()]
    if len(found) == 1 or (found and found[0] == root / name):
        return found[0]
    if found:
        listed = ", ".join(rel_to(f, root) for f in found)
        raise UserError(f"--preset {preset}: {name} found {len(found)} times ({listed}); point SOURCE at one of them.")
    raise UserError(
        f"--preset {preset}: {name} ({what}) not found in {root} or one folder below; point SOURCE at the "
        "folder holding it, pass --meta FILE, or pass --film-split to split films one by one."
    )


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


def _safe_dirname(label: str) -> str:
    return re.sub(r"[\\/]", "_", label).strip() or "unlabelled"


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def prepare(
    source: str | Path,
    out: str | Path | None = None,
    *,
    fmt: str = "auto",
    split: tuple[float, float, float] | None = DEFAULT_RATIOS,
    keep_splits: bool = False,
    seed: int = 0,
    group_regex: str | None = None,
    meta: str | Path | None = None,
    mapping: dict[str, str] | None = None,
    clahe: bool = False,
    max_side: int | None = None,
    preset: str | None = None,
    film_split: bool = False,
    audit: bool = True,
    exist_ok: bool = False,
    runs_dir: Path | None = Path("runs"),
    progress: bool = False,
) -> PrepareResult:
    """Turn the raw dataset at `source` into `out` (default `datasets/<source name>`); see the module doc.

    Returns a PrepareResult: the prepared dataset, its summary (prepare.json) and its audit.

    A used `out` is refused unless `exist_ok`; then only what prepare wrote there before is replaced, and
    runs under `runs_dir` trained on the old dataset are named in a note when their data_hash no longer
    matches (None: look nowhere).

    split: train/val/test fractions for the re-split; None means keep the source's splits
    (like keep_splits=True). With keep_splits, images the source puts in no split (FracAtlas lists
    only fractured films) are re-split with these fractions, next to the kept ones.
    Grouping never falls back in silence: a preset's metadata CSV that is not found (in SOURCE or one
    folder below), a --meta CSV that joins no film, or a --group-regex that matches no film is a
    UserError, unless `film_split` asks for a film-level split (patient keys then unused; exact and
    near-duplicate films are still kept together).
    """
    t0 = time.perf_counter()
    source, out, meta = user_path(source), maybe_path(out), maybe_path(meta)
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
        if meta is None and p.meta_csv and not film_split:
            meta = _find_preset_file(root, p.meta_csv, preset, "patient ids" if p.group_column else "metadata")
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
    if out is None:
        out = user_path(Path("datasets") / (source.name if source.is_dir() else source.stem))
    earlier = _check_out(root, out, exist_ok)
    old_hash = _data_hash(out) if earlier else None
    cleaned = clean_stale_tmp(out)

    from fracturekit.ingest.source import load_source

    ingest = load_source(source, fmt=fmt, mapping=mapping)
    t_ingest = time.perf_counter()

    films: list[_Film] = [
        _Film(source=s.source, record=None, rel=_shown(s.source, root), status="skipped", reason=s.reason)
        for s in ingest.skipped
    ]
    seen: set[Path] = set()
    for rec in ingest.records:
        film = _Film(
            source=str(rec.source),
            record=rec,
            rel=rel_to(rec.source, root),
            group=rec.group,
            group_source="annotations" if rec.group else "none",
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
    meta_columns = _join_meta(usable, meta, group_column, key_column) if meta else []
    if (
        regex is not None
        and usable
        and not film_split
        and not any(regex.search(Path(f.source).name) or regex.search(f.rel) for f in usable)
    ):
        raise UserError(
            f"--group-regex '{group_regex}' matches none of the {len(usable)} films "
            f"(e.g. {usable[0].rel}); fix the pattern, or pass --film-split to split films one by one."
        )
    _unique_stems(usable)

    tmp = new_tmp(out)
    stage = tmp / ".stage"
    stage.mkdir()
    try:
        parallel_map(lambda f: _process_safely(f, stage, clahe, max_side), usable, progress, "decoding films")
        t_decode = time.perf_counter()
        if not any(f.status == "ok" for f in films):
            reasons = "; ".join(f"{n} x {r}" for r, n in Counter(f.reason for f in films).most_common(3))
            raise UserError(f"{source}: none of the {len(films)} images is usable ({reasons or 'no images found'}).")
        summary, audit_result = _assemble(
            tmp, films, ingest.class_names, ratios, keep_splits, seed, None if film_split else regex, meta_columns,
            audit, film_split,
        )  # fmt: skip
        summary["grouping"]["meta_csv"] = rel_to(meta, root) if meta else None
        other = _other_files(root, films, meta, ingest.format)
        summary.update(
            other_files=other, other_files_reasons=dict(Counter(_reason_kind(o["reason"]) for o in other).most_common())
        )
        shutil.rmtree(stage)
        notes = [*ingest.notes, *summary["notes"]]
        notes += [f"removed {p}, left by a killed prepare" for p in cleaned]
        foreign = [f for f in files_under(out) if f.split("/")[0] in ("cls", "det") and f not in earlier]
        if foreign and out.is_dir():
            notes.append(
                f"kept {len(foreign)} file(s) in {out} that prepare did not write, inside its cls/ or det/ folders "
                f"({', '.join(foreign[:2])}): Ultralytics would train on them; move them out"
            )
        if old_hash is not None and old_hash != summary["data_hash"] and runs_dir is not None:
            notes += _stale_runs_notes(out, old_hash, runs_dir)
        summary.update(
            source=str(source),
            format=ingest.format,
            notes=notes,
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
                "film_split": film_split,
            },
        )
        summary["timings_s"] = {
            "read_annotations": round(t_ingest - t0, 3),
            "decode_hash_write": round(t_decode - t_ingest, 3),
            **summary["timings_s"],
            "total": round(time.perf_counter() - t0, 3),
        }
        (tmp / "prepare.json").write_text(json.dumps(summary, indent=2) + "\n")
        _install(tmp, out, earlier)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PrepareResult(dataset=PreparedDataset(out), summary=summary, audit=audit_result)


def _data_hash(out: Path) -> str | None:
    """The data_hash of the prepared dataset at `out` (None when it has no readable prepare.json)."""
    try:
        return json.loads((out / "prepare.json").read_text()).get("data_hash")
    except (OSError, ValueError):
        return None


def _stale_runs_notes(out: Path, old_hash: str, runs_dir: Path) -> list[str]:
    """One note per run under `runs_dir` that was trained on the dataset this prepare replaces."""
    from fracturekit.provenance import runs_trained_on

    runs = runs_trained_on(out, old_hash, runs_dir)
    if not runs:
        return [f"no run trained on the previous {out} found (looked in {runs_dir.resolve()}/)"]
    names = ", ".join(str(r) for r in runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
    return [
        f"{len(runs)} run(s) were trained on the previous {out} (data_hash {old_hash[:12]}), which no longer "
        f"matches: {names} (looked in {runs_dir.resolve()}/); `fracturekit evaluate` checks them for seen films"
    ]


def _install(tmp: Path, out: Path, earlier: set[str]) -> None:
    """Move the finished build into `out`: a rename when `out` is new, else file by file over what prepare
    wrote before (`earlier`), the manifest removed first and placed last; the user's own files stay."""
    (tmp / TMP_MARKER).unlink()
    new = files_under(tmp)
    if not out.exists():
        write_record(tmp, "prepare", new)
        os.replace(tmp, out)
        return
    check_free(out, [f for f in new if f != RECORD], earlier, "prepare")
    write_record(out, "prepare", earlier | set(new))  # first: a kill from here on leaves only recorded files
    remove_recorded(out, sorted(earlier, key=lambda f: f != "manifest.csv"))
    for rel in sorted(new, key=lambda f: f == "manifest.csv"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, out / rel)
    shutil.rmtree(tmp)  # only empty folders are left in it
    write_record(out, "prepare", new)


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
    film_split: bool = False,
) -> tuple[dict, AuditResult | None]:
    """Split the decoded films, move them into cls/ and det/, write data.yaml, manifest, audit."""
    ok = [f for f in films if f.status == "ok"]
    for film in ok:
        if film_split:  # asked for explicitly: no patient key is used, whatever the source says
            film.group, film.group_source = None, "none"
        else:
            _set_group(film, regex)
    items = [
        AuditItem(f.rel, "", f.label, f.group, f.sha256, f.pixel_sha256, f.phashes, f.copy_sig)  # type: ignore[arg-type]
        for f in ok
    ]
    t_links = time.perf_counter()
    duplicates = duplicate_links(items)
    t_links = time.perf_counter() - t_links
    for link in duplicates:  # films with no patient key that the split still keeps with their copies
        for i in link.members:
            if ok[i].group_source == "none":
                ok[i].group_source = "duplicate_cluster"
    for film in ok:
        film.copy_sig = None  # the signatures are done with: free them before the files are moved
    by_group: dict[str, list[int]] = {}
    for i, film in enumerate(ok):
        if film.group:
            by_group.setdefault(film.group, []).append(i)
    fixed = [f.record.split if keep_splits and f.record else None for f in ok]
    together = [*(link.members for link in duplicates), *by_group.values()]
    splits = assign_splits([f.label for f in ok], together, fixed, ratios, seed)

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

    for item, s in zip(items, splits, strict=True):
        item.split = s
    audit_result = audit_items(items, duplicates=duplicates)
    cluster_of = {m.path: str(c.id) for c in audit_result.clusters for m in c.members}
    for film in ok:
        film.cluster = cluster_of.get(film.rel, "")
    _write_manifest(root / "manifest.csv", films, meta_columns)
    summary = _summary(films, det_names, audit_result if run_audit else None, film_split)
    summary["grouped_by_link"] = audit_result.files_by_link
    summary["timings_s"] = {"link_duplicates": round(t_links, 3)}
    if run_audit:
        audit_result.write(root / "audit")
        return summary, audit_result
    return summary, None


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
    (root / lbl_rel).write_text(yolo_lines(film.boxes, det_index, film.width, film.height))  # "" for a background
    film.output_det, film.label_file = det_rel.as_posix(), lbl_rel.as_posix()


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


def data_hash(films: Iterable[tuple[str, str, str, str]]) -> str:
    """The dataset's identity runs record: sha256 over sorted `sha256|split|label|boxes JSON` lines, one per film."""
    digest = hashlib.sha256()
    for line in sorted("|".join(f) for f in films):
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()


def _grouping(ok: list[_Film], film_split: bool) -> dict:
    """How many films got a patient group, and from which source (printed and in prepare.json)."""
    sources = Counter(f.group_source for f in ok)
    return {
        "films": len(ok),
        "grouped": len(ok) - sources["none"],
        "groups": len({f.group for f in ok if f.group}),
        "sources": {s: sources[s] for s in GROUP_SOURCES},
        "film_split": film_split,
        "meta_csv": None,
    }


def grouping_line(g: dict) -> str:
    """One line for the CLI: 'grouping: 8 of 8 films grouped (4 patient groups from dataset.csv); by source: ...'."""
    parts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in g["sources"].items() if v)
    where = f" from {g['meta_csv']}" if g.get("meta_csv") else ""
    how = " (--film-split: patient keys not used)" if g["film_split"] else ""
    return (
        f"grouping: {g['grouped']} of {g['films']} films grouped ({g['groups']} patient groups{where}){how}; "
        f"by source: {parts or 'none'}"
    )


def _summary(films: list[_Film], det_names: list[str], audit_result: AuditResult | None, film_split: bool) -> dict:
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
        "skipped_files": [{"source": f.rel, "reason": f.reason} for f in skipped],
        "with_warnings": sum(1 for f in ok if f.warnings),
        "groups": len({f.group for f in ok if f.group}),
        "grouping": _grouping(ok, film_split),
        "audit": audit_result.to_dict() if audit_result else None,
        "data_hash": data_hash((f.sha256, f.split, f.label, _boxes_json(f.boxes)) for f in ok),
        "notes": notes,
    }


callable_stage(__name__)  # `fracturekit.prepare(...)` runs prepare() above: see fracturekit.Stage
