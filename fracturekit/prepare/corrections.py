"""`prepare --corrections decisions.csv`: a review's decisions applied to the films before they are split.

The latest decision per film counts (decisions.csv is append-only; `note` rows change nothing):
- `fracture` / `no_fracture`: the label becomes `new_label`. A film relabelled "no fracture" keeps a place in
  det/ as a background image; a film relabelled "fracture" that has no box leaves det/ (a fractured film
  without its box would teach the detector that the fracture is background).
- `exclude`: the film is skipped, with the reason.
The split is the one prepare makes without the corrections (`uncorrected_labels`, `drop_excluded`): every film
not excluded keeps its split, so runs before and after are tested on the same films. (Stratifying by the
corrected labels re-dealt 1,916 of FracAtlas' 4,083 films for 3 decisions.)
- `box_wrong`: the label stays; the film leaves det/ only (classification keeps it).
Each changed film's manifest row records `decision` and, for a relabel, `corrected_from`; prepare.json
`corrections` holds the counts, the file and its sha256. Films the file names that SOURCE does not hold stop
prepare with them listed.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fracturekit.audit import AuditItem, Link
from fracturekit.core.errors import UserError
from fracturekit.core.layout import POSITIVE_CLASS
from fracturekit.data.hashing import file_sha256
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
        if decision == "exclude":  # skipped after the split (`drop_excluded`), so the split is as without it
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


@contextlib.contextmanager
def uncorrected_labels(films: list[_Film]) -> Iterator[None]:
    """The films' labels as SOURCE gives them, inside the block (for the split); the corrected ones after."""
    corrected = {id(f): f.label for f in films if "corrected_from" in f.meta}
    for f in films:
        if id(f) in corrected:
            f.label = f.meta["corrected_from"]
    try:
        yield
    finally:
        for f in films:
            if id(f) in corrected:
                f.label = corrected[id(f)]


def drop_excluded(
    ok: list[_Film], items: list[AuditItem], splits: list[str], links: list[Link]
) -> tuple[list[_Film], list[AuditItem], list[str], list[Link]]:
    """After the split: excluded films marked skipped and left out, the duplicate links renumbered without them.

    The audit items take the corrected labels, so the audit's label conflicts are those left after the review.
    """
    for film, item in zip(ok, items, strict=True):
        item.label = film.label
    keep = [i for i, f in enumerate(ok) if f.meta.get("decision") != "exclude"]
    for i in set(range(len(ok))) - set(keep):
        ok[i].status, ok[i].reason = "skipped", EXCLUDED
    new = {old: n for n, old in enumerate(keep)}
    renumbered = [Link(tuple(new[i] for i in link.members if i in new), link.kind) for link in links]
    return (
        [ok[i] for i in keep],
        [items[i] for i in keep],
        [splits[i] for i in keep],
        [link for link in renumbered if len(link.members) > 1],
    )
