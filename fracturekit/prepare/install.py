"""The output folder: refuse a wrong or used --out, know what an earlier prepare wrote there, move the
finished build in without touching the user's own files, and name the runs trained on a replaced dataset."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from fracturekit.core.errors import UserError
from fracturekit.core.outputs import (
    RECORD,
    TMP_MARKER,
    _entries,
    check_free,
    files_under,
    read_record,
    remove_recorded,
    write_record,
)


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
    used = _entries(out)
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


def _stale_runs_notes(out: Path, old_hash: str, runs_dir: Path) -> list[str]:
    """One note per run under `runs_dir` that was trained on the dataset this prepare replaces."""
    from fracturekit.training.provenance import runs_trained_on

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
