"""`prepare`: a raw fracture dataset in, a leak-free YOLO classification + detection dataset out.

Steps: read annotations (`load_source`), join metadata, decode every film once on a thread pool
(hashes, optional CLAHE / downscale, write a staged output file), cluster duplicates, assign
seeded stratified grouped splits, move the staged files into `cls/` and `det/`, write the manifest,
the summary and the audit. Everything is built in `<out>.tmp-<pid>` and then renamed to `out`; over an
earlier dataset (`exist_ok`) only the files that prepare recorded writing there are replaced, the
manifest last, so an interrupted run never leaves a complete-looking dataset and a user's own files in
`out` stay. A later prepare removes the `<out>.tmp-<pid>` of a killed run (see fracturekit.core.outputs).

This package runs those steps; each of its modules owns one concern: `film` (the per-film record),
`decode` (decode, hash, stage), `grouping` (patient groups and the split), `datasets` (cls/ and det/),
`report` (manifest.csv, prepare.json, the data hash, other files) and `install` (the output folder).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fracturekit import callable_stage
from fracturekit.audit import AuditResult, audit_items
from fracturekit.core.diskspace import is_no_space, no_space
from fracturekit.core.errors import UserError
from fracturekit.core.folderlock import lock_folder
from fracturekit.core.layout import PreparedDataset
from fracturekit.core.options import check_max_pixels
from fracturekit.core.outputs import clean_stale_tmp, files_under, new_tmp
from fracturekit.core.parallel import parallel_map
from fracturekit.core.paths import maybe_path, rel_to, user_path
from fracturekit.core.progress import Progress
from fracturekit.data.imageio import MAX_PIXELS
from fracturekit.data.signature_file import write_signatures
from fracturekit.data.split import DEFAULT_RATIOS, check_ratios
from fracturekit.ingest.labels import LabelMap
from fracturekit.ingest.records import IngestResult
from fracturekit.prepare.corrections import apply_corrections, drop_excluded, uncorrected_labels
from fracturekit.prepare.datasets import _write_datasets
from fracturekit.prepare.decode import _process_safely, _unique_stems
from fracturekit.prepare.film import _Film
from fracturekit.prepare.grouping import GROUP_SOURCES, _find_preset_file, _join_meta, _split_films, grouping_line
from fracturekit.prepare.install import _check_out, _install, _stale_runs_notes
from fracturekit.prepare.report import (
    _other_files,
    _reason_kind,
    _summary,
    _write_manifest,
    data_hash,
    pixel_transform,
)

__all__ = ["GROUP_SOURCES", "PrepareResult", "data_hash", "grouping_line", "pixel_transform", "prepare"]


@dataclass
class PrepareResult:
    """What `prepare` made: the dataset on disk, its summary (prepare.json) and its audit."""

    dataset: PreparedDataset
    summary: dict
    audit: AuditResult | None


def _shown(source: str, root: Path) -> str:
    """A reader's skipped entry as the manifest shows it: a file relative to the root, else its text."""
    return rel_to(source, root) if os.path.isabs(source) else source


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
    max_pixels: int | None = MAX_PIXELS,
    preset: str | None = None,
    film_split: bool = False,
    audit: bool = True,
    exist_ok: bool = False,
    corrections: str | Path | None = None,
    runs_dir: Path | None = Path("runs"),
    progress: Progress | None = None,
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
    corrections: a review's decisions.csv, applied before the split (`fracturekit.prepare.corrections`).
    A film of more than `max_pixels` pixels (None: no limit) is skipped, undecoded, with its size as the reason.
    """
    t0 = time.perf_counter()
    source, out, meta, corrections = user_path(source), maybe_path(out), maybe_path(meta), maybe_path(corrections)
    if not source.exists():
        raise UserError(f"{source}: no such folder; pass the folder of a raw dataset (or a COCO JSON file).")
    root = source if source.is_dir() else source.parent  # a COCO JSON file names its images relative to its folder
    group_column = key_column = None
    mapping = LabelMap(mapping) if mapping else mapping  # the caller's own: each key must name something
    if preset:
        fmt, mapping, group_regex, group_column, key_column, meta = _apply_preset(
            preset, root, fmt, mapping, group_regex, meta, film_split
        )
    if split is None:
        keep_splits, ratios = True, DEFAULT_RATIOS
    else:
        ratios = check_ratios(split)
    regex = _check_film_options(max_pixels, max_side, group_regex)
    if out is None:
        out = user_path(Path("datasets") / (source.name if source.is_dir() else source.stem))
    _check_out(root, out, exist_ok)  # a wrong --out is refused before the lock creates it
    lock = lock_folder(out, "prepare")  # held until prepare returns: one prepare per --out
    try:  # an input refused here leaves no folder behind: the lock made it, and goes now
        read = _read_films(
            source, root, out, exist_ok, fmt, mapping, corrections, meta, (group_column, key_column),
            None if film_split else regex,
        )  # fmt: skip
    except BaseException:
        lock.release()
        raise
    films, usable = read.films, read.usable

    tmp = new_tmp(out)
    stage = tmp / ".stage"
    stage.mkdir()
    try:
        decode = partial(
            _process_safely, stage=stage, clahe=clahe, max_side=max_side, max_pixels=max_pixels, signed=set()
        )
        parallel_map(decode, usable, progress, "decoding films")
        t_decode = time.perf_counter()
        _check_some_usable(source, films)
        if not clahe and max_side is None:  # else the films written are not the pixels signed
            _write_signatures(PreparedDataset(tmp).signatures, films)  # now: the split frees the signatures
        summary, audit_result = _assemble(
            tmp, films, read.ingest.class_names, ratios, keep_splits, seed, None if film_split else regex,
            read.meta_columns, audit, film_split, pixel_transform(clahe, max_side),
        )  # fmt: skip
        shutil.rmtree(stage)
        options = _options_record(
            ratios, keep_splits, seed, group_regex, meta, mapping, clahe, max_side, max_pixels, preset, film_split,
            corrections,
        )  # fmt: skip
        _finish_summary(summary, read, source, root, meta, out, runs_dir, options)
        summary["timings_s"] = {
            "read_annotations": round(read.t_ingest - t0, 3),
            "decode_hash_write": round(t_decode - read.t_ingest, 3),
            **summary["timings_s"],
            "total": round(time.perf_counter() - t0, 3),
        }
        (tmp / "prepare.json").write_text(json.dumps(summary, indent=2) + "\n")
        _install(tmp, out, read.earlier)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        lock.release()  # now, not when the traceback that holds this frame is dropped
        if is_no_space(exc):
            need = sum(os.path.getsize(f.source) for f in usable if os.path.isfile(f.source))
            raise no_space(out, need, f"the {len(usable)} films (their size on disk)", "; nothing was kept") from None
        raise
    return PrepareResult(dataset=PreparedDataset(out), summary=summary, audit=audit_result)


@dataclass
class _Read:
    """What prepare read under the --out lock, before decoding: the folder's state and the films."""

    earlier: set[str]  # the files an earlier prepare recorded writing in --out (empty for a new folder)
    old_hash: str | None  # that earlier dataset's data_hash
    cleaned: list[Path]  # killed prepares' build folders removed
    ingest: IngestResult
    films: list[_Film]  # every file the reader saw, skipped ones included
    usable: list[_Film]
    corrected: dict[str, Any] | None  # the --corrections record
    meta_columns: list[str]
    t_ingest: float  # perf_counter when the annotations were read


def _read_films(
    source: Path,
    root: Path,
    out: Path,
    exist_ok: bool,
    fmt: str,
    mapping: dict[str, str] | None,
    corrections: Path | None,
    meta: Path | None,
    meta_keys: tuple[str | None, str | None],
    regex: re.Pattern | None,
) -> _Read:
    """Under the --out lock: check --out again, clean killed runs' leftovers, read the annotations into films,
    apply --corrections, join --meta (`meta_keys`: its group and key columns), check that `regex` (None: no
    check) groups some film and that output names are unique."""
    earlier = _check_out(root, out, exist_ok)  # again under the lock: another prepare may have just finished
    old_hash = PreparedDataset(out).recorded_data_hash() if earlier else None
    cleaned = clean_stale_tmp(out)

    from fracturekit.ingest.source import load_source

    ingest = load_source(source, fmt=fmt, mapping=mapping)
    unused = mapping.unused() if isinstance(mapping, LabelMap) else []
    if unused:
        key = unused[0]
        labels = sorted({r.image_label for r in ingest.records if r.image_label} | set(ingest.class_names))
        raise UserError(
            f"--map {key}={mapping[key]}: changed nothing in {source} (no class name its {ingest.format} reader maps "
            f"is {key!r}; its classes after --map: {', '.join(labels) or 'none'}); fix the name or drop it."
        )
    t_ingest = time.perf_counter()
    films = _films(ingest, root)
    corrected = apply_corrections(films, corrections, root) if corrections is not None else None
    usable = [f for f in films if f.status == "ok"]
    meta_columns = _join_meta(usable, meta, *meta_keys) if meta else []
    if regex is not None:
        _check_regex_matches(regex, usable)
    _unique_stems(usable)
    return _Read(earlier, old_hash, cleaned, ingest, films, usable, corrected, meta_columns, t_ingest)


def _write_signatures(path: Path, films: list[_Film]) -> None:
    """The decoded films' copy signatures, keyed by manifest `source`, for `train`'s seen_copies.npz; a pixel twin,
    left unsigned by the decode (`film_hashes`), gets its twin's. A film --corrections excludes later keeps its entry:
    no run sees it, so nothing reads it."""
    ok = [f for f in films if f.status == "ok"]
    by_pixels = {f.pixel_sha256: f.copy_sig for f in ok if f.copy_sig is not None}
    sigs = [f.copy_sig or by_pixels.get(f.pixel_sha256) for f in ok]
    write_signatures(path, [f.rel for f in ok], sigs, compress=False)  # 1 s, not 7 s, of prepare on FracAtlas


def _finish_summary(
    summary: dict[str, Any],
    read: _Read,
    source: Path,
    root: Path,
    meta: Path | None,
    out: Path,
    runs_dir: Path | None,
    options: dict[str, Any],
) -> None:
    """Add to `_assemble`'s summary what else prepare.json records: the --meta CSV, the corrections, the files
    that are not films, the source and its format, the notes and the options."""
    summary["grouping"]["meta_csv"] = rel_to(meta, root) if meta else None
    if read.corrected is not None:
        summary["corrections"] = read.corrected
    summary.update(_other_files_summary(root, read.films, meta, read.ingest.format))
    notes = _notes(read, summary, out, runs_dir)
    summary.update(source=str(source), format=read.ingest.format, notes=notes, options=options)


def _notes(read: _Read, summary: dict[str, Any], out: Path, runs_dir: Path | None) -> list[str]:
    """prepare.json's notes: the reader's, the summary's, the --out folder's, and the runs under `runs_dir`
    trained on the dataset this prepare replaced when its data_hash changed."""
    notes = [*read.ingest.notes, *summary["notes"], *_folder_notes(out, read.cleaned, read.earlier)]
    if read.old_hash is not None and read.old_hash != summary["data_hash"] and runs_dir is not None:
        notes += _stale_runs_notes(out, read.old_hash, runs_dir)
    return notes


def _options_record(
    ratios: tuple[float, float, float],
    keep_splits: bool,
    seed: int,
    group_regex: str | None,
    meta: Path | None,
    mapping: dict[str, str] | None,
    clahe: bool,
    max_side: int | None,
    max_pixels: int | None,
    preset: str | None,
    film_split: bool,
    corrections: Path | None,
) -> dict[str, Any]:
    """prepare.json's `options`: the options prepare ran with, a preset's filled in."""
    return {
        "split": list(ratios),
        "keep_splits": keep_splits,
        "seed": seed,
        "group_regex": group_regex,
        "meta": str(meta) if meta else None,
        "mapping": mapping,
        "clahe": clahe,
        "max_side": max_side,
        "max_pixels": max_pixels,
        "preset": preset,
        "film_split": film_split,
        "corrections": str(corrections) if corrections else None,
    }


def _apply_preset(
    preset: str,
    root: Path,
    fmt: str,
    mapping: dict[str, str] | None,
    group_regex: str | None,
    meta: Path | None,
    film_split: bool,
) -> tuple[str, dict[str, str] | None, str | None, str | None, str | None, Path | None]:
    """The options a preset fills in where the user gave none: (fmt, mapping, group_regex, group_column,
    meta_key, meta CSV found in `root` or one folder below)."""
    from fracturekit.data.presets import load_preset

    p = load_preset(preset)
    fmt = p.format if fmt == "auto" else fmt
    mapping = mapping if mapping is not None else (p.mapping or None)
    if meta is None and p.meta_csv and not film_split:
        meta = _find_preset_file(root, p.meta_csv, preset, "patient ids" if p.group_column else "metadata")
    return fmt, mapping, group_regex or p.group_regex, p.group_column, p.meta_key, meta


def _check_film_options(max_pixels: int | None, max_side: int | None, group_regex: str | None) -> re.Pattern | None:
    """A UserError for a --max-pixels, --max-side or --group-regex that cannot work; the compiled regex."""
    check_max_pixels(max_pixels)
    if max_side is not None and max_side < 32:
        raise UserError(f"--max-side {max_side}: use at least 32 px.")
    try:
        return re.compile(group_regex) if group_regex else None
    except re.error as exc:
        raise UserError(f"--group-regex {group_regex!r}: not a valid regular expression ({exc}).") from None


def _films(ingest: IngestResult, root: Path) -> list[_Film]:
    """One _Film per file the reader saw: its skipped entries, then its records (a film listed twice, or one
    with no label, skipped with the reason)."""
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
    return films


def _check_regex_matches(regex: re.Pattern, usable: list[_Film]) -> None:
    """A UserError when --group-regex matches none of the films (grouping never falls back in silence)."""
    if usable and not any(regex.search(Path(f.source).name) or regex.search(f.rel) for f in usable):
        raise UserError(
            f"--group-regex '{regex.pattern}' matches none of the {len(usable)} films "
            f"(e.g. {usable[0].rel}); fix the pattern, or pass --film-split to split films one by one."
        )


def _check_some_usable(source: Path, films: list[_Film]) -> None:
    """A UserError naming the three commonest reasons when no film of `source` could be used."""
    if not any(f.status == "ok" for f in films):
        reasons = "; ".join(f"{n} x {r}" for r, n in Counter(f.reason for f in films).most_common(3))
        raise UserError(f"{source}: none of the {len(films)} images is usable ({reasons or 'no images found'}).")


def _other_files_summary(root: Path, films: list[_Film], meta: Path | None, fmt: str) -> dict[str, Any]:
    """prepare.json's `other_files` (each file that is not a film, with its reason) and their count by reason."""
    other = _other_files(root, films, meta, fmt)
    return {
        "other_files": other,
        "other_files_reasons": dict(Counter(_reason_kind(o["reason"]) for o in other).most_common()),
    }


def _folder_notes(out: Path, cleaned: list[Path], earlier: set[str]) -> list[str]:
    """Notes on the --out folder: killed prepares' leftovers removed, files a user put in cls/ or det/ kept."""
    notes = [f"removed {p}, left by a killed prepare" for p in cleaned]
    foreign = [f for f in files_under(out) if f.split("/")[0] in ("cls", "det") and f not in earlier]
    if foreign and out.is_dir():
        notes.append(
            f"kept {len(foreign)} file(s) in {out} that prepare did not write, inside its cls/ or det/ folders "
            f"({', '.join(foreign[:2])}): Ultralytics would train on them; move them out"
        )
    return notes


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
    film_split: bool,
    pixels: str | None,
) -> tuple[dict, AuditResult | None]:
    """Split the decoded films, move them into cls/ and det/, write data.yaml, manifest, audit (`pixels`: how the
    films' pixels were changed, for data_hash)."""
    ok = [f for f in films if f.status == "ok"]
    with uncorrected_labels(ok):  # --corrections change labels and films, not the split
        items, duplicates, splits, t_links = _split_films(ok, ratios, keep_splits, seed, regex, film_split, root)
    ok, items, splits, duplicates = drop_excluded(ok, items, splits, duplicates)
    det_names = _write_datasets(root, ok, splits, class_names)

    for item, s in zip(items, splits, strict=True):
        item.split = s
    audit_result = audit_items(items, duplicates=duplicates)
    cluster_of = {m.path: str(c.id) for c in audit_result.clusters for m in c.members}
    for film in ok:
        film.cluster = cluster_of.get(film.rel, "")
    _write_manifest(root / "manifest.csv", films, meta_columns)
    summary = _summary(films, det_names, audit_result if run_audit else None, film_split, pixels)
    summary["grouped_by_link"] = audit_result.files_by_link
    summary["timings_s"] = {"link_duplicates": round(t_links, 3)}
    if run_audit:
        audit_result.write(PreparedDataset(root).audit_dir)
        return summary, audit_result
    return summary, None


callable_stage(__name__)  # `fracturekit.prepare(...)` runs prepare() above: see fracturekit.Stage
