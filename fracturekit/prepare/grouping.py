"""Keeping a patient's films together: each film's group (reader, --meta CSV, DICOM tags, --group-regex,
a preset's CSV), duplicate clusters, the seeded stratified grouped split, and the grouping report."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

from fracturekit.audit import AuditItem, Link, duplicate_links, joining
from fracturekit.core.errors import UserError
from fracturekit.core.paths import rel_to
from fracturekit.data.split import assign_splits
from fracturekit.ingest.labels import fold
from fracturekit.prepare.film import _Film

# Column names (folded: lower-case alphanumerics) recognised in a --meta CSV.
_KEY_COLUMNS = ("filename", "file", "imageid", "image", "imagename", "filestem", "path", "filepath", "name", "id")
_GROUP_COLUMNS = ("patientid", "patient", "subjectid", "subject", "studyid", "study", "studyinstanceuid")
# Where a film's patient group came from, in the order they are tried (prepare.json `grouping.sources`).
GROUP_SOURCES = ("annotations", "meta_csv", "dicom_tags", "regex", "duplicate_cluster", "none")


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
        raise UserError(f"--meta {meta_csv}: not a readable CSV ({' '.join(str(exc).split())}).") from None
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


def _split_films(
    ok: list[_Film],
    ratios: tuple[float, float, float],
    keep_splits: bool,
    seed: int,
    regex: re.Pattern[str] | None,
    film_split: bool,
    scratch: Path,
) -> tuple[list[AuditItem], list[Link], list[str], float]:
    """Group the decoded films, link duplicates, and assign each its split (patients and copies kept together).

    scratch: a folder of prepare's output where the copy search may keep its temporary signature store.

    Returns the audit items (one per film), the duplicate links, the splits, and the seconds linking took.
    """
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
    duplicates = duplicate_links(items, scratch=scratch)
    t_links = time.perf_counter() - t_links
    for link in joining(duplicates):  # films with no patient key that the split still keeps with their copies
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
    together = [*(link.members for link in joining(duplicates)), *by_group.values()]
    splits = assign_splits([f.label for f in ok], together, fixed, ratios, seed)
    return items, duplicates, splits, t_links


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
