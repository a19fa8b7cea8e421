"""The cv folder: where it goes, that it is ours, and when a re-run may resume it (same settings).

`settings` is what makes two cvs the same; cv.json keeps it, and a re-run with other settings is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fracturekit.core.errors import UserError
from fracturekit.core.folderlock import LOCK
from fracturekit.core.layout import PreparedDataset


def cv_folder(project: Path, name: str | None) -> Path:
    """`<project>/cv/<name>`, or the first free of cv, cv2, ... when no name is given."""
    base = project.resolve() / "cv"
    if name:
        if Path(name).name != name or name in (".", ".."):
            raise UserError(f"--name {name!r}: give a plain folder name; use --project for where it goes.")
        return base / name
    n = 1
    while (base / (f"cv{n}" if n > 1 else "cv")).exists():
        n += 1
    return base / (f"cv{n}" if n > 1 else "cv")


def check_ours(cv_dir: Path) -> None:
    """Refuse a non-empty folder that no fracturekit cv wrote (nothing a user put there is touched)."""
    if cv_dir.exists() and any(p.name != LOCK for p in cv_dir.iterdir()) and not (cv_dir / "cv.json").is_file():
        raise UserError(f"{cv_dir} exists and is not a fracturekit cv folder (no cv.json); pass another --name.")


def check_same_settings(cv_dir: Path, settings: dict[str, Any]) -> None:
    """A re-run into an existing cv folder resumes it only when every setting (and so every fold) is the same."""
    path = cv_dir / "cv.json"
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text()).get("settings", {})
    except json.JSONDecodeError:
        raise UserError(f"{path}: not readable JSON; pass another --name.") from None
    old = json_safe(old)
    new = json_safe(settings)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            raise UserError(
                f"{cv_dir} holds a cv with other settings ({key}: {old.get(key)!r} there, {new.get(key)!r} now); "
                "pass another --name, or the same settings to resume it."
            )


def sha(text: str) -> str:
    """The SHA-256 hex digest of `text` (UTF-8)."""
    return hashlib.sha256(text.encode()).hexdigest()


def dataset_identity(ds: PreparedDataset) -> dict[str, Any]:
    """The dataset a cv ran on, for its settings: its folder, recorded data_hash and manifest's sha256."""
    return {
        "data": str(ds.root.resolve()),
        "data_hash": ds.recorded_data_hash(),
        "manifest_sha256": sha(ds.manifest.read_text()),
    }


def cv_settings(
    task: str,
    ds: PreparedDataset,
    folds: int,
    seed: int,
    models: dict[str, str],
    config: str | Path | None,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """What makes two cvs the same (so a re-run may reuse finished folds): not threads, device or executor."""
    skip = ("threads", "device", "project", "seed", "model", "exist_ok")
    return {
        "task": task,
        **dataset_identity(ds),
        "folds": folds,
        "seed": seed,
        "models": models,
        "config": str(Path(config).resolve()) if config else None,
        "config_sha256": sha(Path(config).read_text()) if config else None,
        "train_overrides": {
            k: str(v) if isinstance(v, Path) else v for k, v in sorted(overrides.items()) if k not in skip
        },
        "test_split": "folded in: every ok film is in one fold; the prepared train/val/test split is not used",
        "roles": "fold k tests, fold (k+1) mod K validates (early stopping, threshold, temperature), the rest train",
    }


def json_safe(obj: Any) -> Any:
    """`obj` as cv.json holds it: NaN and inf as null, tuples as lists, anything else JSON lacks as its str."""
    from fracturekit.evaluate import nan_to_none

    return json.loads(json.dumps(nan_to_none(obj), default=str))
