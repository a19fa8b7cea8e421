"""Outside models in `evaluate`: a classifier's scores CSV or a detector's COCO results JSON, judged like a run.

A model fracturekit did not train (torchvision, timm, a vendor) enters as its scores: the readers here check
them (every film of the val and evaluated splits scored once, nothing from outside the dataset, finite
probabilities in [0, 1]) and hand the same arrays a run's scoring would give to `classifier_result` /
`detector_result`, so metrics.json, report.html, cases.csv, the unit bootstrap and the warnings are the very
ones of a run. Films are named as manifest.csv's `source` or as the prepared file (`cls/test/fracture/x.png`,
`det/images/test/x.png`, relative to the dataset or absolute); a detection may name its film by `image_id`
equal to the file's stem, as Ultralytics' `save_json` writes it. `--seen FILE` lists the films the outside
model trained on (same names, or image files anywhere) for the seen-film check of `fracturekit.training.provenance`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from fracturekit.audit import AuditItem, hash_film
from fracturekit.core.errors import UserError
from fracturekit.core.layout import SPLITS, PreparedDataset
from fracturekit.core.paths import user_path
from fracturekit.data.hashing import file_sha256
from fracturekit.evaluation.classification import classifier_result, split_films
from fracturekit.evaluation.common import THRESHOLD_SPLIT, EvalContext, ModelResult
from fracturekit.evaluation.detection import check_detection_data, coco_ground_truth, detector_result, image_labels
from fracturekit.training.provenance import _phashes

log = logging.getLogger("fracturekit.evaluate")
_ROLE_OF_SUFFIX = {".csv": "classifier", ".json": "detector"}
_EXAMPLES = 3  # films named in a refusal: enough to recognise the pattern, short enough for one sentence
_SUM_TOLERANCE = 1e-3  # softmax rows written with 4 decimals sum to 1 within 5e-4 for 2-10 classes


@dataclass
class OutsideModel:
    """One outside model: its role, its scores files (one or several, e.g. val.csv + test.csv), its name."""

    role: str  # "classifier" (CSV) | "detector" (COCO results JSON)
    files: list[Path]
    name: str
    seen: Path | None = None  # the list of films it trained on (--seen), None when not given
    data: Any = None  # its scores, read and checked by `read_scores` before evaluate writes anything

    def provenance(self) -> dict[str, Any]:
        """What metrics.json's provenance records instead of a run: the files and their sha256."""
        return {
            "name": self.name,
            "scores": [{"path": str(f.resolve()), "sha256": file_sha256(f)} for f in self.files],
            "seen": str(self.seen.resolve()) if self.seen else None,
        }


def outside_models(files: Sequence[str | Path], name: str | None, seen: str | Path | None) -> list[OutsideModel]:
    """The --scores files grouped by role (.csv: classifier, .json: detector); one UserError per bad file."""
    by_role: dict[str, list[Path]] = {}
    for f in files:
        path = user_path(f)
        if not path.is_file():
            raise UserError(f"--scores {f}: no such file; pass the CSV of class probabilities or COCO results JSON.")
        role = _ROLE_OF_SUFFIX.get(path.suffix.lower())
        if role is None:
            raise UserError(
                f"--scores {f}: unknown kind of file; pass a .csv (path,score) for a classifier or a COCO results "
                ".json for a detector."
            )
        by_role.setdefault(role, []).append(path)
    seen_path = user_path(seen) if seen else None
    if seen_path is not None and not seen_path.is_file():
        raise UserError(f"--seen {seen}: no such file; pass the list of films the outside model trained on.")
    label = name or (next(iter(by_role.values()))[0].stem if by_role else "")
    return [OutsideModel(role, paths, label, seen_path) for role, paths in by_role.items()]


# ------------------------------------------------------------------ naming films


def _posix(text: str) -> str:
    return text.strip().replace("\\", "/")


def film_index(manifest: pd.DataFrame, column: str) -> dict[str, str]:
    """Every name a user may give an `ok` film of the dataset (manifest source, the prepared file) -> its
    dataset-relative prepared file in `column` (output_cls / output_det)."""
    if column not in manifest.columns:
        return {}
    rows = manifest[(manifest.get("status", "ok") == "ok") & manifest[column].notna() & (manifest[column] != "")]
    index: dict[str, str] = {}
    for source, out in zip(rows.get("source", rows[column]).astype(str), rows[column].astype(str), strict=True):
        index[_posix(source)] = _posix(out)
        index[_posix(out)] = _posix(out)
    return index


def resolve(name: str, index: dict[str, str], root: Path) -> str | None:
    """The dataset-relative film `name` stands for: a key of `index`, or a path (absolute or relative to the
    working folder) to a prepared file inside `root`; None when it is not a film of the dataset."""
    key = _posix(name)
    if key in index:
        return index[key]
    path = Path(os.path.abspath(Path(name).expanduser()))  # abspath, not resolve: fold datasets are symlinks
    try:
        rel = path.relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return None
    return index.get(rel)


def _examples(items: Sequence[Any]) -> str:
    return ", ".join(str(i) for i in items[:_EXAMPLES]) + (", ..." if len(items) > _EXAMPLES else "")


def _unknown_sentence(file: Path, unknown: list[str], n_rows: int, ds: PreparedDataset, what: str) -> UserError:
    return UserError(
        f"{file}: {len(unknown)} of {n_rows} {what} name films that are not in {ds.root} (e.g. {_examples(unknown)}); "
        "name each film as manifest.csv's `source` or as its prepared file."
    )


def _missing_sentence(files: list[Path], missing: list[str], split: str) -> UserError:
    splits = THRESHOLD_SPLIT if split == THRESHOLD_SPLIT else f"{THRESHOLD_SPLIT} and {split}"
    return UserError(
        f"{', '.join(map(str, files))}: {len(missing)} films of the {splits} splits have no score "
        f"(e.g. {_examples(missing)}); score every film of both: the threshold and temperature are chosen on "
        f"{THRESHOLD_SPLIT}, the metrics on {split}."
    )


# ------------------------------------------------------------------ classifier: scores CSV


def class_names(ds: PreparedDataset) -> list[str]:
    """The dataset's classes as a classifier trained on it orders them (its cls/ folders, sorted)."""
    return sorted(
        {d.name for s in SPLITS if (ds.cls_dir / s).is_dir() for d in (ds.cls_dir / s).iterdir() if d.is_dir()}
    )


def read_class_scores(file: Path, names: list[str]) -> tuple[list[str], np.ndarray]:
    """(path per row, probabilities (N, len(names))) of one scores CSV, checked; UserError names the fix.

    Columns: `path` and either one column per class (probabilities summing to 1) or, for two classes,
    `score`, the fracture probability (the other class gets 1 - score).
    """
    from fracturekit.evaluation.classification import binary_positive

    try:  # pandas >= 3 parses floats round-trip: the same scores give the same numbers to the last digit
        df = pd.read_csv(file, dtype={"path": str}, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise UserError(f"{file}: not a readable CSV ({exc}); write `path,score` with a header line.") from exc
    if "path" not in df.columns:
        raise UserError(f"{file}: no `path` column (columns: {', '.join(map(str, df.columns))}); write path,score.")
    pos = binary_positive(names)
    if all(n in df.columns for n in names):
        columns = names
    elif "score" in df.columns and pos is not None:
        columns = ["score"]
    else:
        need = "`score` (the fracture probability) or " if pos is not None else ""
        raise UserError(f"{file}: no {need}one column per class ({', '.join(names)}); add them to the header.")
    values = df[columns].apply(pd.to_numeric, errors="coerce").to_numpy(float)
    paths = df["path"].astype(str).tolist()
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if len(bad):
        raise UserError(
            f"{file}: {len(bad)} rows have no number in {', '.join(columns)} (NaN, empty or text; e.g. row "
            f"{bad[0] + 2}, {paths[bad[0]]}); write a probability for every film."
        )
    out_of_range = np.flatnonzero(((values < 0) | (values > 1)).any(axis=1))
    if len(out_of_range):
        i = out_of_range[0]
        raise UserError(
            f"{file}: {len(out_of_range)} rows hold scores outside [0, 1] (e.g. {values[i].max():.4g} for "
            f"{paths[i]}); write probabilities: a sigmoid or softmax of the logits."
        )
    if columns == ["score"]:
        probs = np.empty((len(values), 2))
        probs[:, pos] = values[:, 0]
        probs[:, 1 - pos] = 1.0 - values[:, 0]
        return paths, probs
    sums = values.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1) > _SUM_TOLERANCE)
    if len(off):
        raise UserError(
            f"{file}: the class columns of {len(off)} rows do not sum to 1 (e.g. {sums[off[0]]:.4g} for "
            f"{paths[off[0]]}); write softmax probabilities, one column per class."
        )
    return paths, values


def read_scores(model: OutsideModel, ds: PreparedDataset, manifest: pd.DataFrame, split: str) -> None:
    """Read and check the model's files into `model.data`; a UserError before evaluate writes anything."""
    if model.role == "classifier":
        model.data = _class_arrays(model, ds, manifest, split)
    else:
        check_detection_data(ds, split)
        model.data = _detections(model, ds, manifest, split)


def _class_arrays(model: OutsideModel, ds: PreparedDataset, manifest: pd.DataFrame, split: str) -> tuple:
    """(class names, (val labels, val probabilities), (split paths, labels, probabilities)), every film checked."""
    names = class_names(ds)
    index = film_index(manifest, "output_cls")
    scores: dict[str, np.ndarray] = {}
    where: dict[str, str] = {}
    for file in model.files:
        paths, probs = read_class_scores(file, names)
        films = [resolve(p, index, ds.root) for p in paths]
        unknown = [p for p, f in zip(paths, films, strict=True) if f is None]
        if unknown:
            raise _unknown_sentence(file, unknown, len(paths), ds, "rows")
        twice = sorted(
            {f for f in films if f in where} | {f for f, n in pd.Series(films).value_counts().items() if n > 1}
        )
        if twice:
            raise UserError(
                f"{file}: {len(twice)} films have more than one row (e.g. {_examples(twice)}); keep one row per film."
            )
        for film, p in zip(films, probs, strict=True):
            scores[film], where[film] = p, str(file)

    def arrays(s: str) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
        items = [(Path(p).relative_to(ds.root).as_posix(), y) for p, y in split_films(ds, s, names)]
        missing = [p for p, _ in items if p not in scores]
        kept = [(p, y) for p, y in items if p in scores]
        probs = np.asarray([scores[p] for p, _ in kept], float).reshape(len(kept), len(names))
        return [p for p, _ in kept], np.asarray([y for _, y in kept], int), probs, missing

    val_rel, y_val, p_val, missing = arrays(THRESHOLD_SPLIT)
    rel, y, p, missing_test = (val_rel, y_val, p_val, []) if split == THRESHOLD_SPLIT else arrays(split)
    if missing or missing_test:
        raise _missing_sentence(model.files, missing + missing_test, split)
    unused = len(scores) - len(set(val_rel) | set(rel))
    if unused:
        log.info("%d rows of %s score films of other splits: not used", unused, model.name)
    return names, (y_val, p_val), (rel, y, p)


def evaluate_scores_classifier(model: OutsideModel, ctx: EvalContext) -> ModelResult:
    """The classifier half of evaluate for an outside model's scores CSV(s): classifier_result on its numbers."""
    names, val, test = model.data
    return classifier_result(names, val, test, ctx, run=None)


# ------------------------------------------------------------------ detector: COCO results JSON


def _det_names(ds: PreparedDataset) -> dict[int, str]:
    names = yaml.safe_load(ds.data_yaml.read_text())["names"]
    return dict(enumerate(names)) if isinstance(names, list) else {int(k): str(v) for k, v in names.items()}


def _stem_index(index: dict[str, str]) -> dict[str, str | None]:
    """File stem (of the source and the prepared file) -> film; None where two films share a stem."""
    stems: dict[str, str | None] = {}
    for key, film in index.items():
        stem = Path(key).stem
        stems[stem] = film if stems.get(stem, film) == film else None
    return stems


def read_detections(file: Path, ds: PreparedDataset, index: dict[str, str], categories: set[int]) -> dict[str, list]:
    """Film -> [(bbox xywh, score, category_id)] of one COCO results JSON, checked; UserError names the fix."""
    try:
        entries = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{file}: not readable JSON ({exc}); write COCO results: a list of detections.") from exc
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UserError(
            f"{file}: not COCO results; write a JSON list of {{image_id or file_name, bbox, score, category_id}}."
        )
    stems = _stem_index(index)
    out: dict[str, list] = {}
    unknown: list[str] = []
    seen_rows: set[tuple] = set()
    twice: list[str] = []
    for i, e in enumerate(entries):
        if "file_name" in e:
            film = resolve(str(e["file_name"]), index, ds.root)
            key = str(e["file_name"])
        elif "image_id" in e:
            key = str(e["image_id"])
            film = stems.get(key) or resolve(key, index, ds.root)
        else:
            raise UserError(
                f"{file}: detection {i} has neither `image_id` nor `file_name`; name each detection's film."
            )
        if film is None:
            unknown.append(key)
            continue
        try:
            box = [float(v) for v in e["bbox"]]
            score, category = float(e["score"]), int(e["category_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(
                f"{file}: detection {i} ({key}) lacks a number in bbox, score or category_id ({exc}); "
                "write COCO results: bbox [x, y, width, height] in pixels, score, category_id."
            ) from exc
        if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] < 0 or box[3] < 0:
            raise UserError(
                f"{file}: detection {i} ({key}) has bbox {e['bbox']}; write [x, y, width, height] in pixels."
            )
        if not math.isfinite(score):
            raise UserError(
                f"{file}: detection {i} ({key}) has score {e['score']} (NaN); write a confidence in [0, 1]."
            )
        if not 0 <= score <= 1:
            raise UserError(
                f"{file}: detection {i} ({key}) has score {score:.4g}, outside [0, 1]; write confidences, "
                "a sigmoid of the logits."
            )
        if category not in categories:
            raise UserError(
                f"{file}: detection {i} ({key}) has category_id {category}; the dataset's categories are "
                f"{sorted(categories)} (1 = the first class of det/data.yaml, as Ultralytics' save_json writes)."
            )
        row = (film, *box, score, category)
        if row in seen_rows:
            twice.append(key)
        seen_rows.add(row)
        out.setdefault(film, []).append((box, score, category))
    if unknown:
        raise _unknown_sentence(file, sorted(set(unknown)), len(entries), ds, "detections")
    if twice:
        raise UserError(
            f"{file}: {len(twice)} detections are listed twice, same film, box, score and class (e.g. "
            f"{_examples(sorted(set(twice)))}); keep each detection once."
        )
    return out


def _split_scores(
    ds: PreparedDataset, split: str, names: dict[int, str], dets: dict[str, list], skipped: list[dict]
) -> tuple[dict, dict[str, int], np.ndarray, list[dict]]:
    """detector_result's inputs for `split`: ground truth, ids, image scores (best box, 0 without), COCO results."""
    gt, ids = coco_ground_truth(ds, split, names, skipped)
    scores, coco = np.zeros(len(ids)), []
    for file_name, i in ids.items():
        film = (Path("det") / "images" / split / file_name).as_posix()
        boxes = dets.get(film, [])
        scores[i - 1] = max((s for _, s, _ in boxes), default=0.0)
        coco += [{"image_id": i, "category_id": c, "bbox": b, "score": s} for b, s, c in boxes]
    return gt, ids, scores, coco


def _detections(model: OutsideModel, ds: PreparedDataset, manifest: pd.DataFrame, split: str) -> dict[str, list]:
    """Film -> its detections over all the model's files, checked.

    A film without a detection scores 0, as a run's film without a box; since COCO results cannot list such
    films, the val and evaluated splits must each hold at least one detection (else the file missed a split).
    """
    names = _det_names(ds)
    index = film_index(manifest, "output_det")
    categories = set(range(1, len(names) + 1))
    dets: dict[str, list] = {}
    for file in model.files:
        part = read_detections(file, ds, index, categories)
        both = sorted(set(part) & set(dets))
        if both:
            raise UserError(
                f"{file}: {len(both)} films have detections in another --scores file too (e.g. {_examples(both)}); "
                "give each film's detections once."
            )
        dets |= part
    for s in dict.fromkeys((THRESHOLD_SPLIT, split)):
        if not any(film.startswith(f"det/images/{s}/") for film in dets):
            raise UserError(
                f"{', '.join(map(str, model.files))}: no detection on any film of the {s} split; detect on the "
                f"{THRESHOLD_SPLIT} and {split} films (the threshold is chosen on {THRESHOLD_SPLIT})."
            )
    return dets


def evaluate_scores_detector(model: OutsideModel, ctx: EvalContext) -> ModelResult:
    """The detector half of evaluate for an outside model's COCO results: detector_result on its boxes."""
    ds, split, dets = ctx.ds, ctx.split, model.data
    names = _det_names(ds)
    test = _split_scores(ds, split, names, dets, ctx.skipped)
    val = test if split == THRESHOLD_SPLIT else _split_scores(ds, THRESHOLD_SPLIT, names, dets, [])
    return detector_result(names, test, (image_labels(val[0]), val[2]), ctx, run=None, ultralytics=None)


# ------------------------------------------------------------------ films the outside model saw


def seen_items(file: Path, ds: PreparedDataset) -> list[AuditItem]:
    """The films a `--seen` list names (a `path` CSV column, or one name a line) as AuditItems for the seen check.

    A film of the dataset takes its manifest hashes (as a run's seen.csv does); any other image file is
    hashed where it lies. A name that is neither refuses the evaluation with the count and examples.
    """
    text = file.read_text(encoding="utf-8")
    first = text.splitlines()[0].strip() if text.strip() else ""
    if first.split(",")[0] == "path":
        names = pd.read_csv(file, dtype={"path": str}, keep_default_na=False)["path"].tolist()
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    rows = pd.read_csv(ds.manifest, dtype=str, keep_default_na=False)
    rows = rows[rows["status"] == "ok"] if "status" in rows.columns else rows
    index = film_index(rows, "output_cls") | film_index(rows, "output_det")
    by_film = {_posix(r[c]): r for _, r in rows.iterrows() for c in ("output_cls", "output_det") if r.get(c)}
    items, unknown = [], []
    for name in names:
        film = resolve(name, index, ds.root)
        if film is not None:
            r = by_film[film]
            sha, phash = r.get("sha256", ""), r.get("phash", "")
            items.append(AuditItem(r.get("source") or film, "seen", "", None, sha, "", _phashes(phash)))
            continue
        path = Path(name).expanduser()
        hashed = hash_film(path, copies=False) if path.is_file() else "missing"
        if isinstance(hashed, str):
            unknown.append(name)
            continue
        items.append(AuditItem(str(path), "seen", "", None, hashed[0], hashed[1], hashed[2]))
    if unknown:
        raise UserError(
            f"{file}: {len(unknown)} of {len(names)} lines are neither films of {ds.root} nor readable image files "
            f"(e.g. {_examples(unknown)}); list the outside model's training films, one a line."
        )
    return items
