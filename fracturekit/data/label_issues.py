"""Likely label errors of a dataset, ranked: `audit --label-issues` writes them to `label_issues.csv`.

Two reasons a film's label is suspect:
- `conflict`: the film sits in a duplicate cluster (the audit's copies of one film) whose films carry different
  labels. Copies of one film must share its label, so the films outside the cluster's weighted majority are
  flagged with the majority label; a tie flags every film with the other label. Each film votes with the
  strength of its link (`LINK_WEIGHT`: a pixel copy fully, an augmented or name-only copy half), and films
  carrying a ground-truth box outvote films that carry a folder label alone (`conflict_issues`). `score` is the
  weighted share of the votes for the suggested label; `link` names the signals that tie the film to its
  cluster (duplicates.csv's kind), and the strongest of them (exact before near, augmented, name) breaks ties.
- `model`: out-of-sample scores (`cv`'s `oof_predictions.csv`, or any CSV of `path, score` the user brings)
  disagree with the label. cleanlab decides which films are flagged (`find_label_issues`, see `model_issues`)
  and how suspect each is (`score` = 1 - `get_label_quality_scores`, the self-confidence in the given label).
- `box`: a detector's out-of-sample boxes (rows of the scores CSV with `boxes` and `gt_boxes`, as evaluate's
  predictions.csv writes them) miss every ground-truth box of a fractured film while it is confident elsewhere,
  or mark a film labelled without fracture (`box_issues`).
A film flagged for several reasons gets one row, e.g. `conflict+model`. Rows are ranked by the number of reasons,
then by score, then by link kind.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fracturekit.audit import LINK_KINDS, AuditResult
from fracturekit.core.errors import UserError
from fracturekit.core.layout import POSITIVE_CLASS
from fracturekit.core.paths import rel_to, user_path

log = logging.getLogger("fracturekit")

COLUMNS = ("path", "given_label", "suggested_label", "reason", "score", "rank", "source", "cluster", "link")
REASONS = ("conflict", "model", "box")
# A film's vote in its cluster's majority, by its strongest link. exact and near copies are the same pixels, so
# their labels must agree; an augmented or name-only copy may be another crop or projection of the film, where
# a fracture seen in one need not show in the other (FracAtlas cluster 238: four projections of one foot, linked
# as augmented), so its label says half as much about the others'. 0.5 is a judgement, not a fitted number.
LINK_WEIGHT = {"exact": 1.0, "near": 1.0, "augmented": 0.5, "name": 0.5}


@dataclass(frozen=True)
class Film:
    """One labelled film: `path` as the audit names it (duplicates.csv), `source` as in the manifest."""

    path: str
    source: str
    label: str
    det: str = ""  # the film's path under det/ (manifest output_det): how a detector's rows name it
    boxed: bool = False  # the film carries a ground-truth box: a reader marked the finding, not just a folder


@dataclass
class LabelIssue:
    """One suspect film; `reasons` in REASONS order, `score` in [0, 1], higher = more likely wrong."""

    film: Film
    suggested: str
    score: float
    reasons: list[str] = field(default_factory=list)
    cluster: str = ""
    link: str = ""

    @property
    def reason(self) -> str:
        return "+".join(r for r in REASONS if r in self.reasons)


@dataclass
class LabelIssues:
    """The ranked issues, with what they were computed from."""

    issues: list[LabelIssue]
    n_films: int
    scored: int  # films with an out-of-sample score (0 without --scores)
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Rows per reason (a `conflict+model` row counts under both) and in all."""
        return {**{r: sum(r in i.reasons for i in self.issues) for r in REASONS}, "total": len(self.issues)}

    def write(self, path: Path) -> None:
        """label_issues.csv, one row per suspect film, rank 1 first."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for rank, i in enumerate(self.issues, 1):
                w.writerow(
                    [i.film.path, i.film.label, i.suggested, i.reason, f"{i.score:.4f}", rank, i.film.source]
                    + [i.cluster, i.link]
                )


def dataset_films(path: Path) -> list[Film]:
    """The labelled films of a prepared dataset (its manifest's `ok` rows) or of a raw one (its reader's records)."""
    manifest = path / "manifest.csv"
    if manifest.is_file():
        with manifest.open(newline="") as f:
            return [
                Film(
                    row.get("output_cls") or row.get("output_det") or "",
                    row["source"],
                    row.get("label", ""),
                    row.get("output_det") or "",
                    bool(json.loads(row.get("boxes") or "[]")),
                )
                for row in csv.DictReader(f)
                if row.get("status") == "ok" and (row.get("output_cls") or row.get("output_det"))
            ]
    from fracturekit.ingest.source import load_source

    return [
        Film(rel_to(r.source, path), rel_to(r.source, path), r.image_label or "", boxed=bool(r.boxes))
        for r in load_source(path).records
    ]


def conflict_issues(films: list[Film], audit: AuditResult) -> dict[str, LabelIssue]:
    """Films outside their duplicate cluster's weighted majority label (every film with the other label on a tie).

    A film votes for its label with `LINK_WEIGHT` of its strongest link. When films of the cluster carry a
    ground-truth box, only they vote: a box is a reader's mark on the finding, while a copy saved into another
    class folder inherits that folder's label unseen (FracAtlas: a boxed fracture and its unboxed copies among the
    non-fractured films; a plain count of 1 against 3 flagged the boxed film).
    """
    by_path = {f.path: f for f in films}
    found: dict[str, LabelIssue] = {}
    for cid in audit.conflicts:
        cluster = audit.clusters[cid - 1]
        members = [(m, by_path.get(m.path, Film(m.path, m.path, m.label))) for m in cluster.members if m.label]
        voters = [(m, film) for m, film in members if film.boxed] or members
        votes: Counter[str] = Counter()
        for m, _ in voters:
            votes[m.label] += LINK_WEIGHT.get(m.kind.split("+")[0], 0.5)
        top = max(votes.values())
        tied = sorted((label for label, v in votes.items() if v > top - 1e-9), key=lambda label: -votes[label])
        for m, film in members:
            if len(tied) == 1 and m.label == tied[0]:
                continue
            # the suggestion: the majority label, or on a tie the other tied label
            suggested = tied[0] if len(tied) == 1 else next(label for label in tied if label != m.label)
            share = votes[suggested] / sum(votes.values())
            found[m.path] = LabelIssue(film, suggested, share, ["conflict"], str(cid), m.kind)
    return found


def read_scores(scores: Path, films: list[Film], classes: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(film indices, their out-of-sample class probabilities, notes) from a scores CSV.

    The CSV names films by `source` (manifest `source`, as in cv's oof_predictions.csv) or `path` (either the
    manifest's `source` or the dataset path the audit shows). Two classes take one `score` column (the
    probability of `fracture`); any number of classes takes one column per class name. With a `model` column
    holding several models (cv --model n,s), the first model's rows are used.
    """
    if not scores.is_file():
        raise UserError(f"--scores {scores}: no such file; pass cv's oof_predictions.csv or a CSV of path,score.")
    with scores.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        rows = list(reader)
    notes: list[str] = []
    if "path" not in columns and "source" not in columns:
        raise UserError(f"--scores {scores}: no `path` column; write one row per film as path,score.")
    if "model" in columns and len(models := list(dict.fromkeys(r["model"] for r in rows))) > 1:
        notes.append(f"{scores.name} holds {len(models)} models ({', '.join(models)}): used {models[0]}'s scores")
        rows = [r for r in rows if r["model"] == models[0]]
    per_class = all(c in columns for c in classes)
    if not per_class and not (len(classes) == 2 and POSITIVE_CLASS in classes and "score" in columns):
        need = "a `score` column (the probability of fracture)" if len(classes) == 2 else "one column per class"
        raise UserError(f"--scores {scores}: needs {need} for the classes {', '.join(classes)}.")
    index = _film_index(films)
    found, probs, unknown = [], [], []
    for r in rows:
        k = index.get(r.get("source") or "", index.get(r.get("path") or ""))
        if k is None:
            unknown.append(r.get("path") or r.get("source"))
            continue
        try:
            if per_class:
                p = np.array([float(r[c]) for c in classes])
            else:
                s = float(r["score"])
                p = np.array([s if c == POSITIVE_CLASS else 1 - s for c in classes])
        except ValueError:
            raise UserError(f"--scores {scores}: a score that is not a number on the row of {r.get('path')}.") from None
        if not np.all(np.isfinite(p)) or p.min() < 0 or p.sum() <= 0:
            raise UserError(f"--scores {scores}: scores must be probabilities in [0, 1] (row of {r.get('path')}).")
        found.append(k)
        probs.append(p / p.sum())
    if not found:
        raise UserError(
            f"--scores {scores}: none of its {len(rows)} films is in the dataset (e.g. {unknown[:1]}); "
            "name films as manifest.csv's `source`."
        )
    if unknown:
        notes.append(f"{len(unknown)} films of {scores.name} are not in the dataset, e.g. {unknown[0]}")
    if len(set(found)) < len(found):
        raise UserError(f"--scores {scores}: a film has two rows; keep one score per film (and per model).")
    return np.array(found), np.stack(probs), notes


def _film_index(films: list[Film]) -> dict[str, int]:
    """Every name a scores CSV may give a film (manifest source, dataset path, det/ path) -> its index."""
    index: dict[str, int] = {}
    for k, film in enumerate(films):
        for name in (film.source, film.path, film.det):
            if name:
                index.setdefault(name, k)
    return index


def box_issues(scores: Path, films: list[Film]) -> dict[int, tuple[str, float]]:
    """Film index -> (suggested label, score) where a detector's boxes and the ground truth disagree.

    Read from the rows of `scores` that carry `boxes` and `gt_boxes` (evaluate's predictions.csv detector rows,
    whose `boxes` are those at or above the threshold tuned on validation; cv folds' files concatenated): a
    fractured film where none of the detector's boxes touches a ground-truth box although it found one elsewhere
    (the box is likely wrong or missing; suggested: its label, to be reviewed with `b`), and a film without
    fracture with a box (suggested: fracture). `score` is the highest confidence of those boxes.
    """
    with scores.open(newline="") as f:
        reader = csv.DictReader(f)
        if not {"boxes", "gt_boxes"} <= set(reader.fieldnames or []):
            return {}
        rows = [r for r in reader if r["boxes"] or r["gt_boxes"]]
    index = _film_index(films)
    found: dict[int, tuple[str, float]] = {}
    for r in rows:
        k = index.get(r.get("source") or "", index.get(r.get("path") or ""))
        if k is None:
            continue
        try:
            pred = [(b["x1"], b["y1"], b["x2"], b["y2"], b["confidence"]) for b in json.loads(r["boxes"] or "[]")]
            gt = [(b["x1"], b["y1"], b["x2"], b["y2"]) for b in json.loads(r["gt_boxes"] or "[]")]
        except (ValueError, KeyError, TypeError):
            raise UserError(
                f"--scores {scores}: `boxes`/`gt_boxes` on the row of {r.get('path')} are not box JSON."
            ) from None
        if not pred:
            continue
        fractured = films[k].label == POSITIVE_CLASS
        missed = fractured and gt and not any(_touch(p, g) for p in pred for g in gt)
        if missed or (not fractured and not gt):
            found[k] = (POSITIVE_CLASS, max(b[4] for b in pred))
    return found


def _touch(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """True when two x1, y1, x2, y2 boxes overlap by any area."""
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _cleanlab() -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]:
    """cleanlab's `find_label_issues` and `get_label_quality_scores`; UserError naming the extra when it is missing."""
    try:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        raise UserError("--scores needs cleanlab: pip install 'fracturekit[labels]'.") from None
    return find_label_issues, get_label_quality_scores


def model_issues(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flagged row indices, their scores, their suggested class index) by cleanlab.

    labels: the given class index per row; probs: out-of-sample class probabilities (rows sum to 1).
    Flagged: confident learning's pick (`prune_by_noise_rate`, cleanlab's default) and every film whose given
    label the model finds less likely than another class (`predicted_neq_given`). Confident learning alone
    flags about as many films as it estimates are wrong, so it stops short of the flipped ones: 10 labels of
    200 flipped, scores of AUROC 0.99, 7.1 of the 10 in the top 15 with it alone, 9.0 with the union
    (mean of 30 seeds, bench/label_noise.py). Ranked by cleanlab's label quality (self-confidence) either way.
    """
    find_label_issues, get_label_quality_scores = _cleanlab()
    flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate")
    flagged |= find_label_issues(labels, probs, filter_by="predicted_neq_given")
    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    rows = np.flatnonzero(flagged)
    return rows, 1.0 - quality[rows], probs[rows].argmax(axis=1)


def _read_all_scores(
    path: Path, films: list[Film], scores: str | Path
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, list[str], dict[int, tuple[str, float]]]:
    """(classes, scored film indices, their probabilities, their given class indices, notes, box issues) of a
    scores CSV for the films of `path`; UserError, naming the CSV, for anything `label_issues` cannot use."""
    classes = sorted({f.label for f in films if f.label})
    if len(classes) < 2:
        raise UserError(f"{path}: the films carry {len(classes)} label(s); --scores needs two classes or more.")
    if len(classes) == 2 and POSITIVE_CLASS in classes:
        classes = [c for c in classes if c != POSITIVE_CLASS] + [POSITIVE_CLASS]  # fracture = class 1
    idx, probs, notes = read_scores(user_path(scores), films, classes)
    labels = np.array([classes.index(films[k].label) for k in idx])
    missing = [c for c in range(len(classes)) if not (labels == c).any()]
    if missing:
        raise UserError(f"--scores {scores}: no scored film is labelled {classes[missing[0]]}; score every class.")
    return classes, idx, probs, labels, notes, box_issues(user_path(scores), films)


def check_scores(path: str | Path, scores: str | Path) -> None:
    """Refuse (UserError) a scores CSV `label_issues` could not use, and a missing cleanlab, before the audit runs:
    on FracAtlas the audit takes over a minute, which a typo in the CSV should not cost."""
    path = user_path(path)
    _read_all_scores(path, dataset_films(path), scores)
    _cleanlab()


def label_issues(path: str | Path, audit: AuditResult, scores: str | Path | None = None) -> LabelIssues:
    """Rank the likely label errors of the dataset at `path` (audited as `audit`); see the module doc."""
    path = user_path(path)
    films = dataset_films(path)
    found = conflict_issues(films, audit)
    scored, notes = 0, []
    if scores is not None:
        classes, idx, probs, labels, notes, boxes = _read_all_scores(path, films, scores)
        scored = len(idx)
        for row, score, suggested in zip(*model_issues(labels, probs), strict=True):
            film = films[idx[row]]
            issue = found.get(film.path)
            if issue is None:
                found[film.path] = LabelIssue(film, classes[suggested], float(score), ["model"])
            else:
                issue.reasons.append("model")
                issue.score = max(issue.score, float(score))
        if scored < len(films):
            notes.append(f"{len(films) - scored} of {len(films)} films have no score: checked for conflicts only")
        for k, (suggested, score) in boxes.items():
            film = films[k]
            issue = found.get(film.path)
            if issue is None:
                found[film.path] = LabelIssue(film, suggested, float(score), ["box"])
            else:
                issue.reasons.append("box")
                issue.score = max(issue.score, float(score))
    kind_rank = {k: n for n, k in enumerate(LINK_KINDS)}
    ranked = sorted(
        found.values(),
        key=lambda i: (-len(i.reasons), -round(i.score, 4), kind_rank.get(i.link.split("+")[0], 9), i.film.path),
    )
    for note in notes:
        log.warning(note)
    return LabelIssues(ranked, len(films), scored, notes)


__all__ = ["COLUMNS", "LabelIssues", "check_scores", "label_issues"]
