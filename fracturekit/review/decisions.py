"""decisions.csv: the review page's append-only log of decisions, and the reader `prepare --corrections` uses.

One row per key press, written and flushed at once, so a reload or a crash loses nothing; a later row for the
same film overrides an earlier one (`latest`). `path` is the film as its source names it (manifest.csv's
`source` for a dataset or an evaluation, the path under `--source` for predictions), so `prepare SOURCE
--corrections` can apply it to the raw films.
"""

from __future__ import annotations

import csv
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from fracturekit.core.errors import UserError
from fracturekit.core.layout import NEGATIVE_CLASS, POSITIVE_CLASS

COLUMNS = ("path", "decision", "new_label", "note", "reviewer", "time")
# decision -> the label it sets ("" : the label stays). `box_wrong` keeps the label and drops the film from
# detection; `note` records a remark and changes nothing.
DECISIONS = {
    POSITIVE_CLASS: POSITIVE_CLASS,
    NEGATIVE_CLASS: NEGATIVE_CLASS,
    "exclude": "",
    "box_wrong": "",
    "note": "",
}


class DecisionLog:
    """Appends decisions to one decisions.csv, one flushed and fsynced row per call, thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, path: str, decision: str, reviewer: str, note: str = "") -> dict[str, str]:
        """Write one decision now; returns the row written."""
        if decision not in DECISIONS:
            raise ValueError(f"unknown decision {decision!r}")
        row = {
            "path": path,
            "decision": decision,
            "new_label": DECISIONS[decision],
            "note": note,
            "reviewer": reviewer,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.is_file() or self.path.stat().st_size == 0
            with self.path.open("a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=COLUMNS)
                if new:
                    w.writeheader()
                w.writerow(row)
                f.flush()
                os.fsync(f.fileno())
        return row

    def rows(self) -> list[dict[str, str]]:
        return read(self.path) if self.path.is_file() else []


def read(path: Path) -> list[dict[str, str]]:
    """The rows of a decisions.csv, checked: the columns are there and every decision is one this version knows."""
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("path", "decision") if c not in (reader.fieldnames or [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot be read as a decisions.csv ({exc}).") from None
    if missing:
        raise UserError(f"{path}: no `{missing[0]}` column; pass the decisions.csv that `fracturekit review` wrote.")
    for n, row in enumerate(rows, 2):
        if row["decision"] not in DECISIONS:
            known = ", ".join(DECISIONS)
            raise UserError(f"{path} line {n}: unknown decision {row['decision']!r}; use one of {known}.")
    return rows


def latest(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    """The last decision per film that changes something (a `note` row keeps the decision before it)."""
    last: dict[str, dict[str, str]] = {}
    for row in rows:
        if row["decision"] != "note":
            last[row["path"]] = row
    return last
