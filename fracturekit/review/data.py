"""What the review page shows, read from a prepared dataset, an `evaluate` folder or a `predict` folder.

Each kind gives the films the server may send (nothing else can be read through it), their boxes, and the
lists to page through: a dataset its label issues (audit/label_issues.csv) and duplicate clusters
(audit/duplicates.csv); an evaluation its cases (every false negative and false positive of cases.csv) with
the detector's boxes (detections_coco.json); predictions their films by fracture probability.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fracturekit.core.errors import UserError
from fracturekit.core.layout import MANIFEST_COLUMNS, PreparedDataset

KINDS = ("dataset", "evaluate", "predict")
_MAX_BOXES = 10  # predicted boxes drawn per film, the highest-scoring: fracturekit.evaluation.cases draws as many
_MAX_GROUPS = 30  # a metadata column with more distinct values (patient ids, dates) is no subgroup to filter by


@dataclass
class ReviewFilm:
    """One film the page may show: `file` on disk, `source` as decisions.csv names it, its boxes and columns."""

    file: Path
    source: str
    label: str = ""
    split: str = ""
    gt: list[list[Any]] = field(default_factory=list)  # [label, x1, y1, x2, y2], in the file's pixels
    pred: list[list[Any]] = field(default_factory=list)  # [label, x1, y1, x2, y2, confidence]
    columns: dict[str, str] = field(default_factory=dict)  # subgroup columns (region, ...)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "label": self.label, "split": self.split, "gt": self.gt, "pred": self.pred}


@dataclass
class ReviewData:
    """The films of PATH by key (the path the lists use) and the lists: name -> (columns, rows)."""

    kind: str
    root: Path
    films: dict[str, ReviewFilm]
    lists: dict[str, dict[str, Any]]
    subgroups: list[str]
    aliases: dict[str, str] = field(default_factory=dict)  # another path of a film (its det/ copy) -> its key

    def key(self, path: str) -> str | None:
        """The film key of a path the page sends, None when it is not a film of PATH."""
        path = self.aliases.get(path, path)
        return path if path in self.films else None

    def to_json(self) -> dict[str, Any]:
        films = {k: {**f.to_json(), **{c: f.columns.get(c, "") for c in self.subgroups}} for k, f in self.films.items()}
        return {
            "kind": self.kind,
            "root": str(self.root),
            "films": films,
            "lists": self.lists,
            "subgroups": self.subgroups,
        }


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _manifest_films(root: Path) -> tuple[dict[str, ReviewFilm], dict[str, str], list[str]]:
    """Films of a prepared dataset by key (output_cls, else output_det), det/ aliases, the metadata columns."""
    films: dict[str, ReviewFilm] = {}
    aliases: dict[str, str] = {}
    rows = _csv(root / "manifest.csv")
    extra = [c for c in (rows[0] if rows else {}) if c not in MANIFEST_COLUMNS]
    for row in rows:
        key = row.get("output_cls") or row.get("output_det")
        if row.get("status") != "ok" or not key:
            continue
        boxes = json.loads(row["boxes"]) if row.get("boxes") else []
        films[key] = ReviewFilm(
            root / key,
            row["source"],
            row.get("label", ""),
            row.get("split", ""),
            [[b[0], *b[1:5]] for b in boxes],
            columns={c: row.get(c, "") for c in extra},
        )
        if row.get("output_det") and row["output_det"] != key:
            aliases[row["output_det"]] = key
    return films, aliases, extra


def _list(columns: list[str], rows: list[dict[str, Any]], sort: str = "") -> dict[str, Any]:
    return {"columns": columns, "rows": rows, "sort": sort}


def _dataset(root: Path) -> ReviewData:
    films, aliases, extra = _manifest_films(root)
    lists: dict[str, dict[str, Any]] = {}
    audit_dir = PreparedDataset(root).audit_dir
    issues = audit_dir / "label_issues.csv"
    if issues.is_file():
        cols = ["rank", "given_label", "suggested_label", "reason", "score", "cluster", "link"]
        lists["label issues"] = _list(
            cols, [{"film": r["path"], **{c: r.get(c, "") for c in cols}} for r in _csv(issues)]
        )
    dups = audit_dir / "duplicates.csv"
    if dups.is_file():
        cols = ["cluster", "split", "label", "kind"]
        lists["duplicate clusters"] = _list(cols, [{"film": r["path"], **{c: r[c] for c in cols}} for r in _csv(dups)])
    lists["films"] = _list(
        ["label", "split"], [{"film": k, "label": f.label, "split": f.split} for k, f in films.items()]
    )
    # subgroup filters: metadata columns that split the films into a few groups (region, view), not ids
    few = [c for c in extra if 2 <= len({f.columns.get(c, "") for f in films.values()}) <= _MAX_GROUPS]
    return ReviewData("dataset", root, films, lists, few, aliases)


def _evaluate(root: Path) -> ReviewData:
    metrics = json.loads((root / "metrics.json").read_text())
    data = Path(metrics.get("data") or "")
    if not (data / "manifest.csv").is_file():
        raise UserError(f"{root}: evaluated on {data}, which holds no manifest.csv any more; re-run evaluate.")
    films, aliases, extra = _manifest_films(data)
    det_file, gt_file = root / "detections_coco.json", root / "ground_truth_coco.json"
    if det_file.is_file() and gt_file.is_file():
        gt = json.loads(gt_file.read_text())
        images_dir = Path(gt["info"]["images_dir"])
        names = {c["id"]: c["name"] for c in gt.get("categories", [])}
        key_of = {}
        for im in gt["images"]:
            det_rel = (images_dir / im["file_name"]).relative_to(data).as_posix()
            key_of[im["id"]] = aliases.get(det_rel, det_rel)
        for d in json.loads(det_file.read_text()):
            film = films.get(key_of.get(d["image_id"], ""))
            if film is not None:
                x, y, w, h = d["bbox"]
                film.pred.append([names.get(d["category_id"], ""), x, y, x + w, y + h, round(d["score"], 4)])
        for film in films.values():  # the detector keeps up to 300 boxes down to 0.001: draw its best, as cases do
            film.pred = sorted(film.pred, key=lambda b: -b[5])[:_MAX_BOXES]
    cols = ["model", "kind", "label", "score", "threshold", "iou"]
    rows = [
        {"film": aliases.get(r["path"], r["path"]), **{c: r.get(c, "") for c in cols}} for r in _csv(root / "cases.csv")
    ]
    by = [c for c in (metrics.get("by") or []) if c in extra]
    return ReviewData("evaluate", root, films, {"cases": _list(cols, rows, "score")}, by, aliases)


def _predict(root: Path) -> ReviewData:
    preds = json.loads((root / "predictions.json").read_text())
    source = Path(preds["source_root"])
    films: dict[str, ReviewFilm] = {}
    rows = []
    for im in preds["images"]:
        boxes = [[b.get("class", ""), b["x1"], b["y1"], b["x2"], b["y2"], b["confidence"]] for b in im["boxes"]]
        films[im["path"]] = ReviewFilm(source / im["path"], im["path"], pred=boxes)
        p = im.get("fracture_probability")
        rows.append({"film": im["path"], "fracture_probability": "" if p is None else p, "decision": im["decision"]})
    cols = ["fracture_probability", "decision"]
    return ReviewData("predict", root, films, {"predictions": _list(cols, rows, "fracture_probability")}, [])


def load(path: Path) -> ReviewData:
    """The review data of PATH, whichever of the three kinds it is; a UserError when it is none of them."""
    if (path / "manifest.csv").is_file():
        return _dataset(path)
    if (path / "metrics.json").is_file() and (path / "cases.csv").is_file():
        return _evaluate(path)
    if (path / "predictions.json").is_file():
        return _predict(path)
    raise UserError(
        f"{path}: not a prepared dataset (manifest.csv), an evaluate folder (metrics.json + cases.csv) or a "
        "predict folder (predictions.json); pass one of those."
    )
