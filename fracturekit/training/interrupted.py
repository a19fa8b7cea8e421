"""A training run that stops before its last epoch: killed, out of disk, or refused while setting up.

- Killed (SIGKILL, a power cut): `weights/last.pt` holds the last finished epoch (written whole or not at
  all: `trainers.atomic_checkpoints`), and the folder lock died with the process, so `train --resume`
  continues it to the same total epochs. Each resume is noted in `resumes.json` before training goes on
  (a run can be killed more than once) and lands in `run.json` `interruptions` when the run finishes.
- Out of disk: one sentence naming the run folder and about the space the checkpoints need; the last
  finished epoch is kept for `--resume`, which drops the rows of `results.csv` after it (an epoch whose
  checkpoint was lost, or a row cut short) and trains those epochs again.
- A new run that stops before any epoch was saved (a refusal, a full disk at the first checkpoint) leaves
  no folder behind: everything in it was written by this run (`train` refuses a folder holding anything else).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fracturekit.core.diskspace import no_space
from fracturekit.core.errors import UserError
from fracturekit.core.folderlock import LOCK

RESUMES = "resumes.json"
# Bytes per parameter of a checkpoint saved mid-run: the fp16 EMA (2) and AdamW's two moments, which Ultralytics
# keeps in fp32 (8); a yolov8n-cls mid-run last.pt (1,440,850 parameters) measured 14,565,341 bytes, 10.1 each.
CHECKPOINT_BYTES_PER_PARAM = 10


def note_resume(run_dir: Path) -> list[dict[str, Any]]:
    """Record in `resumes.json` that `run_dir` is resumed now, after the epoch saved in weights/last.pt.

    Returns every interruption of this run so far: `interrupted_at_epoch` is the 1-based epoch that was
    running (its work is redone), `resumed_at` the UTC time of the resume.
    """
    import torch

    last = run_dir / "weights" / "last.pt"
    saved = int(torch.load(last, map_location="cpu", weights_only=False)["epoch"])  # 0-based, finished
    _keep_saved_rows(run_dir / "results.csv", saved + 1)
    path = run_dir / RESUMES
    notes = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    notes.append({"interrupted_at_epoch": saved + 2, "resumed_at": now})
    path.write_text(json.dumps(notes, indent=1), encoding="utf-8")
    return notes


def session_starts(notes: list[dict[str, Any]]) -> set[int]:
    """The 1-based epochs at which a resumed session began (Ultralytics restarts results.csv's clock there)."""
    return {int(n["interrupted_at_epoch"]) for n in notes}


def stopped(run_dir: Path, fresh: bool) -> None:
    """Tidy `run_dir` after training stopped early: a new run with no saved epoch goes entirely (but the lock)."""
    if fresh and not (run_dir / "weights" / "last.pt").is_file():
        for p in run_dir.iterdir():
            if p.name == LOCK:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()


def full_disk(run_dir: Path, params: int) -> UserError:
    """The sentence for a full disk during training: the folder, the space free and needed, and what is kept."""
    last = run_dir / "weights" / "last.pt"
    per_checkpoint = last.stat().st_size if last.is_file() else params * CHECKPOINT_BYTES_PER_PARAM
    if last.is_file():
        import torch

        epoch = int(torch.load(last, map_location="cpu", weights_only=False)["epoch"]) + 1
        after = f"; epoch {epoch} is kept in weights/last.pt: then continue it with --resume"
    else:
        after = "; no epoch was saved, so nothing was kept"
    # last.pt and best.pt are each written beside the old one, then renamed over it: two checkpoints' room
    return no_space(run_dir, 2 * per_checkpoint, "the checkpoints weights/last.pt and best.pt", after)


def _keep_saved_rows(results_csv: Path, epochs: int) -> None:
    """Keep the rows of `results_csv` for the `epochs` saved in last.pt: a row written just before a kill or a
    full disk stopped that epoch's checkpoint (or cut short by the full disk) is redone by the resumed run."""
    if not results_csv.is_file():
        return
    header, *rows = results_csv.read_text(encoding="utf-8").splitlines(keepends=True)
    width = header.count(",")

    def saved(row: str) -> bool:
        first = row.split(",", 1)[0].strip()
        return row.endswith("\n") and row.count(",") == width and first.isdigit() and int(first) <= epochs

    results_csv.write_text(header + "".join(r for r in rows if saved(r)), encoding="utf-8")
