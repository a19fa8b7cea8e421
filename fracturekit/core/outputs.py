"""Output folders: never mix two runs' results, never delete what a user put there.

- Default folders increment, Ultralytics' convention: `eval`, `eval2`, ...; `runs/predict`, `runs/predict2`, ...
- An explicit folder that already holds files is refused unless `exist_ok`.
- Each command records in `RECORD` (inside its output folder) every file it writes there, BEFORE writing
  them, so that a later `exist_ok` run of the same command removes exactly those (a killed run's too) and
  nothing else; a file it would write over that it did not record is refused, never replaced.
- `prepare` builds in `<out>.tmp-<pid>`; a later prepare removes such folders once their process is gone.
- One command at a time per folder: `fracturekit.core.folderlock` (its lock file is not counted as content).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from fracturekit.core.errors import UserError
from fracturekit.core.folderlock import LOCK

RECORD = ".fracturekit-written.json"
TMP_MARKER = ".fracturekit-prepare-tmp"  # inside every `<out>.tmp-<pid>`: only such folders are ever cleaned


def increment(base: Path) -> Path:
    """`base` if it is free, else the first free `base2`, `base3`, ... (Ultralytics' increment_path, sep="").

    Written here rather than imported from Ultralytics so that `prepare` and `predict` defaults need no
    Ultralytics import; the naming is the same.
    """
    base = Path(base)
    if not base.exists():
        return base
    for n in range(2, 10_000):
        candidate = base.with_name(f"{base.name}{n}")
        if not candidate.exists():
            return candidate
    raise UserError(f"{base}: 9,999 numbered folders exist already; pass --out.")


def latest(base: Path, required: str) -> Path | None:
    """The highest-numbered of `base`, `base2`, ... that holds the file `required` (None if none does)."""
    base = Path(base)
    pattern = re.compile(re.escape(base.name) + r"(\d*)")
    found: list[tuple[int, Path]] = []
    if base.parent.is_dir():
        for p in base.parent.iterdir():
            m = pattern.fullmatch(p.name)
            if m and (p / required).is_file():
                found.append((int(m.group(1) or 1), p))
    return max(found)[1] if found else None


def read_record(out: Path, command: str) -> set[str]:
    """Files (posix, relative to `out`) that `command` recorded writing into `out`; empty when none."""
    path = Path(out) / RECORD
    if not path.is_file():
        return set()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(
            f"{path}: unreadable record of earlier outputs; move {out} aside or pass a new --out."
        ) from None
    entry = data.get("commands", {}).get(command, {})
    return set(entry.get("files", []))


def record_settings(out: Path, command: str) -> dict:
    """The settings `command` stored with its record (predict's models, for --resume)."""
    path = Path(out) / RECORD
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data.get("commands", {}).get(command, {}).get("settings", {})


def write_record(out: Path, command: str, files: Iterable[str], settings: dict | None = None) -> None:
    """Record (atomically) that `command` writes `files` into `out`; other commands' entries are kept."""
    out = Path(out)
    path = out / RECORD
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    entry = {
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": sorted(set(files)),
    }
    if settings is not None:
        entry["settings"] = settings
    data.setdefault("commands", {})[command] = entry
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{RECORD}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _entries(out: Path) -> list[str]:
    """Names in `out`, without the lock file of a command holding it (`fracturekit.core.folderlock`)."""
    return sorted(p.name for p in out.iterdir() if p.name != LOCK) if out.is_dir() else []


def claim(out: Path, command: str, exist_ok: bool, flag: str = "--out", hint: str = "") -> set[str]:
    """Make `out` ready for `command`: refuse a used folder unless exist_ok; then remove what ITS last run wrote.

    Returns the files that earlier run recorded (already removed). Files of other commands and the
    user's own files are left alone; `planned` collisions are checked by `check_free`. `hint` is added to
    the refusal when `command` wrote there before (predict: "pass --resume to continue it").
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out} is a file; pass a folder.")
    used = _entries(out)
    if not used:
        return set()
    if not exist_ok:
        visible = [n for n in used if n != RECORD] or used
        shown = ", ".join(visible[:3]) + (f" and {len(visible) - 3} more" if len(visible) > 3 else "")
        resume = f"{hint}, " if hint and read_record(out, command) else ""
        raise UserError(
            f"{flag} {out} already holds files ({shown}); {resume}pass --exist-ok to replace what {command} wrote "
            "there (nothing else is touched), or choose a new folder."
        )
    earlier = read_record(out, command)
    remove_recorded(out, earlier)
    return earlier


def remove_recorded(out: Path, files: Iterable[str]) -> None:
    """Delete the recorded files under `out`, then the folders they leave empty; never anything else."""
    out = Path(out)
    root = out.resolve()
    parents: set[Path] = set()
    for rel in files:
        target = out / rel
        if not target.resolve().is_relative_to(root) or target.is_dir() and not target.is_symlink():
            continue  # a record names only files inside out; anything else is not ours to remove
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        parents.update(p for p in Path(rel).parents if p != Path("."))
    for rel in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty (a user's file is inside) or already gone
            (out / rel).rmdir()


def check_free(out: Path, planned: Iterable[str], ours: set[str], command: str) -> None:
    """Refuse to write over files in `out` that `command` did not record writing (a user's files)."""
    clash = sorted(rel for rel in planned if rel not in ours and (Path(out) / rel).exists())
    if clash:
        shown = ", ".join(clash[:2]) + (f" and {len(clash) - 2} more" if len(clash) > 2 else "")
        raise UserError(
            f"{out} holds {len(clash)} file(s) {command} would write over but did not write ({shown}); "
            "move them or choose a new --out."
        )


def files_under(root: Path) -> list[str]:
    """Every file below `root`, posix and relative to it (the record of a freshly built folder)."""
    root = Path(root)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def new_tmp(out: Path) -> Path:
    """`<out>.tmp-<pid>`, created empty with the marker that lets a later run clean it up."""
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        if not (tmp / TMP_MARKER).is_file():
            raise UserError(f"{tmp} exists and was not made by prepare; move it, then run prepare again.")
        shutil.rmtree(tmp)  # our own pid: left by an earlier call in this very process
    tmp.mkdir(parents=True)
    (tmp / TMP_MARKER).write_text(f"{os.getpid()}\n")
    return tmp


def clean_stale_tmp(out: Path) -> list[Path]:
    """Remove `<out>.tmp-<pid>` build folders of prepare runs whose process is gone; returns them.

    Only folders carrying TMP_MARKER are removed, so a user's folder that happens to match the name stays.
    """
    out = Path(out)
    removed: list[Path] = []
    if not out.parent.is_dir():
        return removed
    pattern = re.compile(re.escape(out.name) + r"\.tmp-(\d+)")
    for p in out.parent.iterdir():
        m = pattern.fullmatch(p.name)
        if m and p.is_dir() and (p / TMP_MARKER).is_file() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed
