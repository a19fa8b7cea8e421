"""`prepare --corrections decisions.csv`: a review's decisions applied to the films before they are split.

The latest decision per film counts (decisions.csv is append-only; `note` rows change nothing):
- `fracture` / `no_fracture`: the label becomes `new_label`. A film relabelled "no fracture" keeps a place in
  det/ as a background image; a film relabelled "fracture" that has no box leaves det/ (a fractured film
  without its box would teach the detector that the fracture is background).
- `exclude`: the film is skipped, with the reason.
- `box_wrong`: the label stays; the film leaves det/ only (classification keeps it).
Each changed film's manifest row records `decision` and, for a relabel, `corrected_from`; prepare.json
`corrections` holds the counts, the file and its sha256. Films the file names that SOURCE does not hold stop
prepare with them listed.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

from fracturekit.errors import UserError
from fracturekit.hashing import file_sha256
from fracturekit.layout import POSITIVE_CLASS
from fracturekit.prepare.film import _Film
from fracturekit.review.decisions import DECISIONS, latest, read

EXCLUDED = "excluded by review (--corrections)"


def apply_corrections(films: list[_Film], path: Path, root: Path) -> dict[str, Any]:
    """Apply the decisions in `path` to `films` (named by their `rel`, the manifest's `source`); return the record."""
    if not path.is_file():
        raise UserError(f"--corrections {path}: no such file; pass the decisions.csv that `fracturekit review` wrote.")
    rows = read(path)
    by_rel = {f.rel: f for f in films}
    decided = latest(rows)
    unknown = [p for p in dict.fromkeys(r["path"] for r in rows) if p not in by_rel]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise UserError(
            f"--corrections {path}: {len(unknown)} film(s) are not in {root}: {shown}; "
            "review the dataset prepared from this SOURCE, or remove those rows."
        )
    counts: Counter[str] = Counter()
    for rel, row in decided.items():
        film = by_rel[rel]
        decision = row["decision"]
        if film.status != "ok":  # the reader already skipped it (unreadable, no label): nothing to correct
            counts["not_applied"] += 1
            continue
        film.meta["decision"] = decision
        if decision == "exclude":
            film.status, film.reason = "skipped", EXCLUDED
            counts["excluded"] += 1
        elif decision == "box_wrong":
            _set_boxes(film, None)
            counts["box_wrong"] += 1
        else:
            new = row.get("new_label") or DECISIONS[decision]
            if new == film.label:
                counts["confirmed"] += 1
                continue
            film.meta["corrected_from"] = film.label
            film.label = new
            counts["relabelled"] += 1
            boxes = film.record.boxes if film.record is not None else None
            if boxes is not None and new != POSITIVE_CLASS:
                _set_boxes(film, [])  # a background image in det/
            elif boxes is not None and not boxes:
                _set_boxes(film, None)  # fractured, but no box to learn from: out of det/
    return {
        "file": str(path),
        "sha256": file_sha256(path),
        "rows": len(rows),
        "films": len(decided),
        "notes": sum(r["decision"] == "note" for r in rows),
        **{k: counts[k] for k in ("relabelled", "confirmed", "excluded", "box_wrong", "not_applied")},
    }


def _set_boxes(film: _Film, boxes: list | None) -> None:
    """Give the film's record other boxes (None: no place in det/) before decode scales them into film.boxes."""
    if film.record is not None:
        film.record = dataclasses.replace(film.record, boxes=boxes)
