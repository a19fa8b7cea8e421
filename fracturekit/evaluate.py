"""`fracturekit evaluate`: how good the trained models really are, on one split of a prepared dataset.

Classifier: per-image probabilities from `predict` (Ultralytics `val` keeps only top-1 accuracy),
temperature fitted and threshold chosen on the VALIDATION split, then both applied unchanged to the
evaluated split. Detector: Ultralytics `val` numbers, and the very same boxes (captured from that val
run) rescored by pycocotools against a COCO ground truth built from the YOLO labels; plus an
image-level score (highest box confidence, 0 without a box) so the detector gets an AUROC on every
image, backgrounds included. Writes metrics.json, predictions.csv, report.html, cases.csv + cases/ (the
films to review, see fracturekit.cases) and, for a detector, ground_truth_coco.json + detections_coco.json
(the very boxes COCOeval scored, so anyone can re-score them) into `out`.

Before any inference, every film to be scored is compared with the films each run trained and validated
on (fracturekit.provenance, by the audit's duplicate test): a copy refuses the evaluation unless
`allow_overlap`, and metrics.json's `provenance` (build_provenance) records the count either way.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from sklearn.metrics import confusion_matrix

from fracturekit import callable_stage
from fracturekit import cases as C
from fracturekit import metrics as M
from fracturekit.calibration import (
    TEMPERATURE_BOUNDS,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from fracturekit.cases import DEFAULT_N, ModelScores
from fracturekit.errors import UserError
from fracturekit.imageio import HeaderError, image_header, is_image_file
from fracturekit.ingest.coco import coco_dict
from fracturekit.ingest.labels import canonical_label
from fracturekit.ingest.records import Record
from fracturekit.ingest.yolo import parse_yolo_rows
from fracturekit.layout import NEGATIVE_CLASS, POSITIVE_CLASS, SPLITS, PreparedDataset, RunDir
from fracturekit.options import check_imgsz, check_task, check_threshold, inference_device
from fracturekit.outputs import check_free, claim, files_under, increment, write_record
from fracturekit.paths import rel_to, user_path
from fracturekit.split import film_units, unit_basis

log = logging.getLogger(__name__)
THRESHOLD_SPLIT = "val"
# "Too few to judge": below 10 positives a sensitivity moves in steps of 0.1 or more; below 30 films the
# AUROC CI usually spans more than 0.2. A 95% CI wider than 0.2 AUROC runs from "weak" to "good".
MIN_POSITIVES, MIN_FILMS, WIDE_CI = 10, 30, 0.2
_CHUNK = 32  # images per predict call: bounded memory, and a bad file only costs its own chunk a retry
_VAL_CONF, _VAL_IOU, _MAX_DET = 0.001, 0.7, 300  # Ultralytics' own val settings, so mAP is comparable


def _progress(items: list, label: str, show: bool) -> Iterable:
    if not show:
        return items
    from rich.progress import track

    return track(items, description=label, console=Console(stderr=True), transient=True)


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _load_model(run: str | Path, task: str) -> tuple[Any, RunDir]:
    """The run's best weights as an Ultralytics YOLO; UserError when it is not a `task` model."""
    rd = RunDir.find(run)
    if not rd.best.is_file():
        raise UserError(f"{rd.best}: weights not found; pass a finished `fracturekit train` run.")
    from fracturekit.yolo_env import load_ultralytics

    load_ultralytics()
    from ultralytics import YOLO

    model = YOLO(str(rd.best))
    check_task(rd.best, model.task, task)
    return model, rd


# ------------------------------------------------------------------ classification


def classify_images(
    model: Any,
    ds: PreparedDataset,
    split: str,
    imgsz: int | None,
    device: str,
    skipped: list[dict],
    show_progress: bool = False,
) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Probabilities (N, C) ordered like `model.names` for every image under cls/<split>/<class>/.

    Class folders are iterated because predict on a folder is not recursive. A file that fails is
    appended to `skipped` (path, reason) and left out. Returns (paths, label indices, probabilities).
    """
    names = [model.names[i] for i in range(len(model.names))]
    split_dir = ds.cls_dir / split
    if not split_dir.is_dir():
        return [], np.zeros(0, int), np.zeros((0, len(names)))
    items: list[tuple[Path, int]] = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if class_dir.name not in names:
            raise UserError(
                f"{class_dir}: class '{class_dir.name}' is unknown to the classifier (classes {names}); "
                "evaluate with a model trained on this dataset."
            )
        idx = names.index(class_dir.name)
        items += [(p, idx) for p in sorted(class_dir.iterdir()) if p.is_file() and is_image_file(p)]
    paths, labels, probs = [], [], []
    kwargs = {"imgsz": imgsz, "device": device, "verbose": False}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    for chunk in _progress(list(_chunks(items, _CHUNK)), f"classify {split}", show_progress):
        try:
            results = model.predict([str(p) for p, _ in chunk], **kwargs)
            pairs = list(zip(chunk, results, strict=True))
        except Exception:  # one unreadable file fails the whole batch: retry one by one to find it
            pairs = []
            for item in chunk:
                try:
                    pairs.append((item, model.predict(str(item[0]), **kwargs)[0]))
                except Exception as exc:
                    skipped.append({"path": str(item[0]), "model": "classifier", "reason": str(exc).splitlines()[0]})
        for (path, idx), r in pairs:
            paths.append(path)
            labels.append(idx)
            probs.append(r.probs.data.cpu().numpy().astype(np.float64))
    return paths, np.asarray(labels, int), np.asarray(probs).reshape(len(paths), len(names))


def _positive_index(names: list[str]) -> int | None:
    """Index of the positive class for a binary model: 'fracture' when present, else the second name."""
    if len(names) != 2:
        return None
    return names.index(POSITIVE_CLASS) if POSITIVE_CLASS in names else 1


def classification_report(
    names: list[str],
    y_val: np.ndarray,
    p_val: np.ndarray,
    y_test: np.ndarray,
    p_test: np.ndarray,
    threshold: str,
    n_boot: int,
    seed: int,
    units: np.ndarray | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """All classification metrics; temperature and threshold from (y_val, p_val) ONLY.

    units: independent unit id per test image (patient group / duplicate cluster) for the bootstrap CI.

    Returns the metrics dict and the calibrated test probabilities. The threshold applies to the
    calibrated positive-class probability `apply_temperature(probs, temperature)[:, positive]`.
    """
    temperature = fit_temperature(np.log(np.clip(p_val, 1e-12, 1.0)), y_val) if len(y_val) else 1.0
    cal_test = apply_temperature(p_test, temperature) if len(p_test) else p_test
    out: dict[str, Any] = {
        "classes": names,
        "temperature": temperature,
        "temperature_method": "NLL on the val split, scipy bounded scalar search over log T",
        "ece_before": expected_calibration_error(p_test, y_test),
        "ece_after": expected_calibration_error(cal_test, y_test),
    }
    pos = _positive_index(names)
    if pos is None:
        pred = cal_test.argmax(axis=1)
        mc = M.multiclass_auroc(y_test, cal_test, names)
        out.update(
            {
                "positive_class": None,
                "auroc": mc["macro_auroc"],
                **mc,
                "accuracy": float((pred == y_test).mean()) if len(y_test) else float("nan"),
                "confusion_matrix": confusion_matrix(y_test, pred, labels=list(range(len(names)))).tolist(),
                "threshold": None,
                "threshold_method": None,
                "n": len(y_test),
                "n_units": M.n_units(units, len(y_test)),
            }
        )
        return out, cal_test
    if len(y_val) == 0:
        rule = M.parse_threshold(threshold)
        if not isinstance(rule, float):
            raise UserError(
                f"the {THRESHOLD_SPLIT} split has no classification images, so '--threshold {threshold}' "
                "cannot be chosen on it; pass a fixed number such as --threshold 0.5."
            )
    cal_val = apply_temperature(p_val, temperature)[:, pos] if len(p_val) else np.zeros(0)
    try:
        thr = M.choose_threshold((y_val == pos).astype(int), cal_val, threshold)
    except ValueError as exc:
        raise UserError(f"--threshold {threshold}: {exc}; pass a fixed number such as --threshold 0.5.") from exc
    yb = (y_test == pos).astype(int)
    out.update(
        {
            "positive_class": names[pos],
            "threshold": thr,
            "threshold_method": threshold,
            "threshold_applies_to": "calibrated positive-class probability",
            **M.binary_summary(yb, cal_test[:, pos], thr, n_boot, seed, units),
        }
    )
    return out, cal_test


# ------------------------------------------------------------------ detection


def _split_images(ds: PreparedDataset, split: str) -> list[Path]:
    img_dir = ds.det_dir / "images" / split
    return sorted(p for p in img_dir.iterdir() if is_image_file(p)) if img_dir.is_dir() else []


def coco_ground_truth(
    ds: PreparedDataset, split: str, names: dict[int, str], skipped: list[dict]
) -> tuple[dict, dict[str, int]]:
    """COCO ground truth (pixel xywh boxes) from det/labels/<split>/*.txt; also file name -> image id.

    Label files are read by the YOLO reader's row parser and written by the COCO builder (`fracturekit.ingest`).
    A missing or empty label file is a background image (it stays in the set: false positives count).
    Unreadable images and malformed label lines are added to `skipped`.
    """
    class_names = [canonical_label(names.get(i, f"class_{i}")) for i in range(max(names, default=-1) + 1)]
    records: list[Record] = []
    ids: dict[str, int] = {}
    for img in _split_images(ds, split):
        try:
            header = image_header(img)
        except HeaderError as exc:
            skipped.append({"path": str(img), "model": "detector", "reason": f"unreadable image ({exc})"})
            continue
        if img.name in ids:
            skipped.append({"path": str(img), "model": "detector", "reason": "duplicate file name in split"})
            continue
        ids[img.name] = len(ids) + 1
        label = ds.det_dir / "labels" / split / f"{img.stem}.txt"
        boxes, problems, _ = parse_yolo_rows(label.read_text() if label.is_file() else "", names, header)
        skipped += [{"path": str(label), "model": "detector", "reason": f"bad label line ({p})"} for p in problems]
        records.append(Record(source=img, boxes=boxes))
    return coco_dict(records, class_names, ds.det_dir / "images" / split), ids


def ultralytics_val(
    model: Any, ds: PreparedDataset, split: str, imgsz: int | None, device: str, save_dir: Path
) -> tuple[Any, list[dict]]:
    """Run Ultralytics val on `split` and capture the exact boxes it scored (its save_json records).

    A DetectionValidator subclass keeps `jdict` and skips Ultralytics' own COCO step (it needs
    faster-coco-eval, not a dependency); we score those records with pycocotools instead.
    """
    from ultralytics.models.yolo.detect import DetectionValidator

    captured: list[dict] = []

    class _CaptureValidator(DetectionValidator):
        def eval_json(self, stats: dict[str, Any]) -> dict[str, Any]:
            captured.extend(self.jdict)
            return stats

    kwargs = {
        "data": str(ds.data_yaml),
        "split": split,
        "conf": _VAL_CONF,
        "iou": _VAL_IOU,
        "max_det": _MAX_DET,
        "device": device,
        "plots": False,
        "save_json": True,
        "project": str(save_dir.parent.resolve()),  # relative: Ultralytics would re-root it under its runs_dir
        "name": save_dir.name,
        "exist_ok": True,
        "verbose": False,
        "workers": 0,
    }
    if imgsz:
        kwargs["imgsz"] = imgsz
    m = model.val(validator=_CaptureValidator, **kwargs)
    return m, captured


def image_scores(detections: list[dict], file_ids: dict[str, int]) -> np.ndarray:
    """Image-level detector score per image id (1..N): the highest box confidence, 0 without a box."""
    scores = np.zeros(len(file_ids))
    for d in detections:
        i = file_ids.get(d["file_name"])
        if i is not None:
            scores[i - 1] = max(scores[i - 1], float(d["score"]))
    return scores


def _image_labels(gt: dict) -> np.ndarray:
    """1 for images with at least one ground-truth box, else 0, indexed by image id - 1."""
    y = np.zeros(len(gt["images"]), int)
    for a in gt["annotations"]:
        y[a["image_id"] - 1] = 1
    return y


def _to_coco_results(detections: list[dict], file_ids: dict[str, int]) -> list[dict]:
    return [
        {"image_id": file_ids[d["file_name"]], "category_id": d["category_id"], "bbox": d["bbox"], "score": d["score"]}
        for d in detections
        if d["file_name"] in file_ids
    ]


# ------------------------------------------------------------------ subgroups


def _manifest_lookup(manifest: pd.DataFrame, column: str, path_col: str) -> dict[str, str]:
    """Dataset-relative output path -> value of `column` (missing values become 'NA')."""
    if path_col not in manifest.columns:
        return {}
    rows = manifest.dropna(subset=[path_col])
    values = rows[column].astype(object).where(rows[column].notna(), "NA").astype(str)
    return dict(zip(rows[path_col].astype(str).map(lambda s: Path(s).as_posix()), values, strict=True))


def _subgroup_values(lookup: dict[str, str], rel_paths: list[str]) -> np.ndarray:
    return np.asarray([lookup.get(p, "NA") for p in rel_paths], dtype=object)


# ------------------------------------------------------------------ provenance, warnings, labels


def labelled_confusion(matrix: list[list[int]], labels: list[str]) -> dict[str, Any]:
    """A confusion matrix that says what its rows and columns are: {"true A": {"predicted B": count}}."""
    return {
        "rows": "true class",
        "columns": "predicted class",
        "labels": labels,
        "counts": {f"true {a}": {f"predicted {b}": int(n) for b, n in zip(labels, row, strict=True)}
                   for a, row in zip(labels, matrix, strict=True)},
    }  # fmt: skip


def _ci_width(ci: Any) -> float:
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or any(v is None or math.isnan(v) for v in ci):
        return float("nan")
    return float(ci[1] - ci[0])


def warnings(metrics: dict[str, Any]) -> list[str]:
    """Warning signs a reader should see before the numbers; subgroups too small to judge are marked in place.

    A temperature at its search bound, subgroups under MIN_POSITIVES positives or MIN_FILMS films, 95% CIs
    wider than WIDE_CI, runs trained on another dataset version, evaluation on the threshold split.
    """
    out: list[str] = []
    if metrics.get("warning"):
        out.append(metrics["warning"])
    prov = metrics.get("provenance") or {}
    ds_hash = (prov.get("dataset") or {}).get("data_hash")
    for name, run in (prov.get("runs") or {}).items():
        if ds_hash and run.get("data_hash") and run["data_hash"] != ds_hash:
            out.append(
                f"the {name} was trained on another version of the dataset (data_hash {run['data_hash'][:12]} vs "
                f"{ds_hash[:12]}): its test films may have been training films."
            )
    c = metrics.get("classification") or {}
    t = c.get("temperature")
    lo, hi = TEMPERATURE_BOUNDS
    if t is not None and any(abs(math.log(t / b)) < 1e-3 for b in (lo, hi)):
        out.append(
            f"the classifier's temperature {t:.3g} sits at its search bound ({lo:.2g}-{hi:.0f}): one scalar "
            "cannot calibrate these val scores (a near-constant model or too few val films); "
            "do not read the calibrated probabilities as frequencies."
        )
    d = metrics.get("detection") or {}
    for model, section, ci in (("classifier", c, c.get("auroc_ci95")), ("detector", d, d.get("image_auroc_ci95"))):
        if section and _ci_width(ci) > WIDE_CI:
            out.append(
                f"the {model}'s AUROC 95% CI [{ci[0]:.3f}, {ci[1]:.3f}] is {_ci_width(ci):.2f} wide (> {WIDE_CI}): "
                "too few films to rank it against another model."
            )
        for col, groups in (section.get("subgroups") or {}).items():
            small = []
            for value, g in groups.items():
                n_pos = g.get("n_positive")  # None for a multi-class classifier: the film count alone decides
                g["too_few_to_judge"] = (n_pos is not None and n_pos < MIN_POSITIVES) or (g.get("n") or 0) < MIN_FILMS
                if g["too_few_to_judge"]:
                    small.append(f"{value} ({g.get('n')} films, {g.get('n_positive')} positive)")
            if small:
                out.append(
                    f"{model} by {col}: too few to judge (< {MIN_POSITIVES} positives or < {MIN_FILMS} films): "
                    + ", ".join(small)
                    + "."
                )
    return out


# ------------------------------------------------------------------ main entry


def _nan_to_none(obj: Any) -> Any:
    """JSON has no NaN: write null for undefined metrics."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {str(k): _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, np.generic):
        return _nan_to_none(obj.item())
    return obj


def evaluate(
    data: str | Path,
    *,
    classifier: str | Path | None = None,
    detector: str | Path | None = None,
    split: str = "test",
    out: str | Path | None = None,
    threshold: str = "youden",
    by: list[str] | None = None,
    imgsz: int | None = None,
    device: str = "auto",
    bootstrap: int = 1000,
    seed: int = 0,
    exist_ok: bool = False,
    allow_overlap: bool = False,
    cases: int = DEFAULT_N,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a classifier and/or detector run on `split` of a prepared dataset; returns metrics.json's dict.

    Writes metrics.json, predictions.csv, report.html, cases.csv with `cases` pictures per model and kind
    in cases/, the detector's COCO files (and Ultralytics' val folder) into `out` (default: the first free
    of `<classifier or detector run>/eval`, `eval2`, ...; with both runs and no `out`, the detector run's
    next eval folder gets a copy of metrics.json too). A used `out` is refused unless `exist_ok` (then only
    evaluate's own earlier files there are replaced). Films the runs trained or validated on refuse the
    evaluation unless `allow_overlap`. Prints nothing: notes (imgsz rounded, one GPU of several) go to the
    `fracturekit.evaluate` logger, and `report.summary_table` renders the returned dict as a table.
    """
    from fracturekit.report import write_report

    ds = PreparedDataset.open(data)
    if classifier is None and detector is None:
        raise UserError("nothing to evaluate: pass --classifier RUN and/or --detector RUN.")
    imgsz, size_note = check_imgsz(imgsz)
    _, device, device_note = inference_device(device)  # resolved here: Ultralytics never sees `auto`
    for note in (size_note, device_note):
        if note:
            log.warning(note)
    if split not in SPLITS:
        raise UserError(f"--split {split}: unknown split; use one of {', '.join(SPLITS)}.")
    if cases < 0:
        raise UserError(f"--cases {cases}: must be 0 (no pictures) or more pictures per kind.")
    check_threshold(threshold)
    manifest = pd.read_csv(ds.manifest, dtype={"group": str, "cluster": str})  # keys: '007' is not 7
    by = list(by or [])
    missing = [c for c in by if c not in manifest.columns]
    if missing:
        raise UserError(
            f"{ds.manifest}: no column {', '.join(missing)} for --by; available: {', '.join(manifest.columns)}."
        )
    roles = [(role, RunDir.find(r)) for role, r in (("classifier", classifier), ("detector", detector)) if r]
    # Both models are loaded and their tasks checked before anything is written: a wrong run leaves no folder.
    loaded_clf = _load_model(classifier, "classify") if classifier is not None else None
    loaded_det = _load_model(detector, "detect") if detector is not None else None
    overlaps = _seen_check(ds, split, roles, allow_overlap, show_progress)
    out_dir = user_path(out) if out else increment(roles[0][1].eval_dir)
    planned = ["metrics.json", "predictions.csv", "report.html"]
    ours = claim(out_dir, "evaluate", exist_ok)
    check_free(out_dir, planned, ours, "evaluate")
    write_record(out_dir, "evaluate", planned)  # before writing: a killed run's files are known too
    out_dir.mkdir(parents=True, exist_ok=True)

    result: dict[str, Any] = {
        "provenance": build_provenance(ds, split, roles, overlaps),
        "data": str(ds.root),
        "out": str(out_dir),
        "split": split,
        "threshold_split": THRESHOLD_SPLIT,
        "by": by,
        "units": unit_basis(manifest),  # what the bootstrap CIs resample: films linked by these columns
    }
    if split == THRESHOLD_SPLIT:
        result["warning"] = "evaluated on the split the threshold and temperature were fitted on: optimistic."
    skipped: list[dict] = []
    rows: list[pd.DataFrame] = []
    plots: dict[str, Any] = {}
    scored: list[ModelScores] = []

    if classifier is not None:
        model, rd = loaded_clf  # type: ignore[misc]
        names = [model.names[i] for i in range(len(model.names))]
        val_paths, y_val, p_val = classify_images(model, ds, THRESHOLD_SPLIT, imgsz, device, skipped, show_progress)
        if split == THRESHOLD_SPLIT:
            paths, y, p = val_paths, y_val, p_val
        else:
            paths, y, p = classify_images(model, ds, split, imgsz, device, skipped, show_progress)
        if len(y) == 0 and skipped:  # every film failed the same way: say why instead of "no images"
            raise UserError(f"{skipped[0]['path']}: the classifier failed on every film ({skipped[0]['reason']}).")
        if len(y) == 0:
            raise UserError(f"{ds.cls_dir / split}: no images to classify; check --split or re-run prepare.")
        rel = [rel_to(q, ds.root) for q in paths]
        units = film_units(manifest, "output_cls", rel)
        cls_metrics, cal = classification_report(names, y_val, p_val, y, p, threshold, bootstrap, seed, units)
        cls_metrics = {"run": str(rd.root), **cls_metrics}
        pos = _positive_index(names)
        if by:
            cls_metrics["subgroups"] = {
                col: _classification_subgroups(
                    _subgroup_values(_manifest_lookup(manifest, col, "output_cls"), rel),
                    y,
                    p,
                    cal,
                    names,
                    cls_metrics,
                    units,
                )
                for col in by
            }
        cls_metrics["confusion_matrix_labelled"] = labelled_confusion(
            cls_metrics["confusion_matrix"], _cm_labels(names, pos)
        )
        result["classification"] = cls_metrics
        if pos is not None:
            yb = (y == pos).astype(int)
            cam_run = str(rd.root) if rd.best.is_file() else None  # EigenCAM needs the PyTorch weights
            scored.append(ModelScores("classifier", rel, yb, cal[:, pos], cls_metrics["threshold"], run=cam_run))
        frame = {"path": rel, "split": split, "label": [names[i] for i in y], "model": "classifier"}
        if pos is not None:
            frame |= {"score": p[:, pos], "score_calibrated": cal[:, pos]}
            plots["curves"] = {"classifier": {"y": (y == pos).astype(int), "score": cal[:, pos]}}
        else:
            frame |= {"score": cal.max(axis=1), "pred": [names[i] for i in cal.argmax(axis=1)]}
            frame |= {f"prob_{n}": cal[:, i] for i, n in enumerate(names)}
            plots["curves"] = {
                f"classifier: {n} vs rest": {"y": (y == i).astype(int), "score": cal[:, i]} for i, n in enumerate(names)
            }
        rows.append(pd.DataFrame(frame))
        plots["reliability"] = {
            "before": reliability_bins(p, y),
            "after": reliability_bins(cal, y),
            "ece_before": cls_metrics["ece_before"],
            "ece_after": cls_metrics["ece_after"],
        }
        plots["cls_confusion"] = {"matrix": cls_metrics["confusion_matrix"], "labels": _cm_labels(names, pos)}

    if detector is not None:
        det_metrics, det_rows, det_plot, det_scores = _evaluate_detector(
            loaded_det, ds, split, out_dir, threshold, imgsz, device, bootstrap, seed, manifest, by, skipped
        )
        result["detection"] = det_metrics
        scored.append(det_scores)
        rows.append(det_rows)
        plots.setdefault("curves", {})["detector (max box confidence)"] = det_plot

    result["skipped"] = skipped
    result["warnings"] = warnings(result)
    predictions = pd.concat(rows, ignore_index=True)
    predictions.to_csv(out_dir / "predictions.csv", index=False)
    table = C.write(out_dir, ds.root, manifest, scored, cases, imgsz, device)
    result["cases"] = {
        "csv": "cases.csv",
        "per_kind": cases,
        "counts": {f"{m} {k}": int(v) for (m, k), v in table.groupby(["model", "kind"]).size().items()},
    }
    plots["cases"] = table[table["picture"] != ""]
    clean = _nan_to_none(result)
    (out_dir / "metrics.json").write_text(json.dumps(clean, indent=2))
    if out is None and classifier is not None and detector is not None:
        # `predict` reads each model's threshold from ITS run's latest eval*/metrics.json: give the detector a copy.
        det_eval = increment(RunDir.find(detector).eval_dir)
        write_record(det_eval, "evaluate", ["metrics.json"])
        (det_eval / "metrics.json").write_text(json.dumps(clean, indent=2))
    write_report(clean, plots, out_dir / "report.html", pictures=out_dir)
    ours = ("ultralytics_val_", "cases/", "cases.csv", "ground_truth_coco.json", "detections_coco.json")
    write_record(out_dir, "evaluate", [f for f in files_under(out_dir) if f.startswith(ours)] + planned)
    return clean


def _scored_paths(ds: PreparedDataset, split: str, role: str) -> list[str]:
    """Dataset-relative paths of the films `role` will score on `split` (what classify_images/val read)."""
    if role == "classifier":
        split_dir = ds.cls_dir / split
        files = sorted(p for p in split_dir.rglob("*") if p.is_file() and is_image_file(p))
    else:
        files = _split_images(ds, split)
    return [rel_to(p, ds.root) for p in files]


def _seen_check(
    ds: PreparedDataset, split: str, roles: list[tuple[str, RunDir]], allow: bool, show_progress: bool
) -> list[Any]:
    """Compare the films each run will score with the films it trained/validated on; refuse on overlap."""
    from fracturekit.provenance import load_seen, overlap, require_no_overlap, scored_items

    paths = {role: _scored_paths(ds, split, role) for role, _ in roles}
    items, key_of = scored_items(ds, sorted(set().union(*paths.values())), show_progress)
    overlaps = []
    for role, rd in roles:
        task = "classify" if role == "classifier" else "detect"
        films = [items[k] for k in sorted({key_of[p] for p in paths[role]})]
        overlaps.append(overlap(load_seen(rd, task), rd, films))
    require_no_overlap(overlaps, len(items), ds, split, allow)
    return overlaps


def build_provenance(ds: PreparedDataset, split: str, roles: list[tuple[str, RunDir]], overlaps: list[Any]) -> dict:
    """metrics.json `provenance`: what these numbers were computed from, so a reader can check it.

    versions (fracturekit, ultralytics, torch), date, the scored dataset and its data_hash, the split, and per
    run (classifier/detector) its path, training data and data_hash (from run.json) and the films of this
    evaluation it trained or validated on. train_overlap: scored films that are copies of a film some run
    trained or validated on (0 = clean; None when a run has no record of its films, so no check was made).
    """

    def _version(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    try:
        data_hash = json.loads(ds.summary.read_text(encoding="utf-8")).get("data_hash")
    except (OSError, ValueError):
        data_hash = None
    runs = {}
    for (role, rd), ov in zip(roles, overlaps, strict=True):
        try:
            record = json.loads(rd.record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
        runs[role] = {
            "path": str(rd.root.resolve()),
            "data": record.get("data"),
            "data_hash": record.get("data_hash"),
            "same_data": record.get("data_hash") is not None and record.get("data_hash") == data_hash,
            "seen_checked": ov.checked,
            "train_overlap": len(ov.films) if ov.checked else None,
        }
    films = set().union(*(o.films for o in overlaps))
    return {
        "versions": {k: _version(k) for k in ("fracturekit", "ultralytics", "torch")},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"path": str(ds.root.resolve()), "data_hash": data_hash},
        "split": split,
        "runs": runs,
        "train_overlap": len(films) if all(o.checked for o in overlaps) else None,
        "train_overlap_examples": [
            {"scored": a, "seen_split": s, "seen": b, "run": str(o.run.root)} for o in overlaps for a, s, b in o.pairs
        ][:10],
    }


def _cm_labels(names: list[str], pos: int | None) -> list[str]:
    """Confusion-matrix axis labels: [negative, positive] for binary (matches binary_metrics_at), else names."""
    return names if pos is None else [names[1 - pos], names[pos]]


def _classification_subgroups(
    groups: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    cal: np.ndarray,
    names: list[str],
    overall: dict[str, Any],
    units: np.ndarray,
) -> dict[str, Any]:
    """Every classification metric per subgroup value, at the overall (validation-chosen) threshold."""
    pos = _positive_index(names)
    res: dict[str, Any] = {}
    for value in sorted(set(groups.tolist())):
        m = groups == value
        entry: dict[str, Any] = {
            "ece_before": expected_calibration_error(p[m], y[m]),
            "ece_after": expected_calibration_error(cal[m], y[m]),
        }
        if pos is None:
            entry |= {"n": int(m.sum()), **M.multiclass_auroc(y[m], cal[m], names)}
            entry["auroc"] = entry["macro_auroc"]
        else:
            # Subgroup CIs use fewer resamples: many groups x 1000 would dominate the run time.
            entry |= M.binary_summary((y[m] == pos).astype(int), cal[m, pos], overall["threshold"], 200, 0, units[m])
        res[value] = entry
    return res


def _evaluate_detector(
    loaded: tuple[Any, RunDir],
    ds: PreparedDataset,
    split: str,
    out_dir: Path,
    threshold: str,
    imgsz: int | None,
    device: str,
    n_boot: int,
    seed: int,
    manifest: pd.DataFrame,
    by: list[str],
    skipped: list[dict],
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any], ModelScores]:
    """Ultralytics val + pycocotools on the same boxes, image-level AUROC, threshold from val.

    Also writes ground_truth_coco.json and detections_coco.json (COCO results format, same image ids)
    into `out_dir`: COCOeval on these two files with maxDets [1, 10, 300] gives `pycocotools.map50_95`.
    """
    if not ds.data_yaml.is_file():
        raise UserError(f"{ds.data_yaml}: missing; re-run `fracturekit prepare` to write the detection dataset.")
    model, rd = loaded
    names = {int(k): v for k, v in model.names.items()}
    if not _split_images(ds, split):
        raise UserError(f"{ds.det_dir / 'images' / split}: no images; check --split or re-run prepare.")

    m, dets = ultralytics_val(model, ds, split, imgsz, device, out_dir / f"ultralytics_val_{split}")
    gt, ids = coco_ground_truth(ds, split, names, skipped)
    coco_dets = _to_coco_results(dets, ids)  # scored once here and again per subgroup below
    coco = M.coco_eval(gt, coco_dets, max_det=_MAX_DET)
    images_dir = (ds.det_dir / "images" / split).resolve()
    gt_file = {"info": {"description": f"fracturekit {split} split ground truth", "images_dir": str(images_dir)}, **gt}
    (out_dir / "ground_truth_coco.json").write_text(json.dumps(gt_file))
    (out_dir / "detections_coco.json").write_text(json.dumps(coco_dets))
    y_img = _image_labels(gt)
    s_img = image_scores(dets, ids)

    # Image-level threshold: chosen on the val split's detector scores, like the classifier's.
    if split == THRESHOLD_SPLIT:
        y_val, s_val = y_img, s_img
    elif _split_images(ds, THRESHOLD_SPLIT):
        _, val_dets = ultralytics_val(model, ds, THRESHOLD_SPLIT, imgsz, device, out_dir / "ultralytics_val_val")
        val_gt, val_ids = coco_ground_truth(ds, THRESHOLD_SPLIT, names, [])
        y_val, s_val = _image_labels(val_gt), image_scores(val_dets, val_ids)
    else:
        y_val, s_val = np.zeros(0, int), np.zeros(0)
    try:
        thr = M.choose_threshold(y_val, s_val, threshold)
    except ValueError as exc:
        raise UserError(
            f"--threshold {threshold}: cannot choose the detector threshold on the {THRESHOLD_SPLIT} split ({exc}); "
            "pass a fixed number such as --threshold 0.25."
        ) from exc

    id_to_name = {v: k for k, v in ids.items()}
    rel = [rel_to(ds.det_dir / "images" / split / id_to_name[i + 1], ds.root) for i in range(len(ids))]
    units = film_units(manifest, "output_det", rel)
    image_level = M.binary_summary(y_img, s_img, thr, n_boot, seed, units)
    per_class = {names[int(c)]: float(m.box.maps[int(c)]) for c in names}
    result: dict[str, Any] = {
        "run": str(rd.root),
        "classes": [names[i] for i in sorted(names)],
        "positive_class": POSITIVE_CLASS if POSITIVE_CLASS in names.values() else None,
        "map50_95": float(m.box.map),
        "map50": float(m.box.map50),
        "precision": float(m.box.mp),
        "recall": float(m.box.mr),
        "per_class_ap": per_class,
        "val_settings": {"conf": _VAL_CONF, "iou": _VAL_IOU, "max_det": _MAX_DET},
        "pycocotools": coco,
        "map_difference": {
            "map50_95": float(m.box.map) - coco["map50_95"],
            "map50": float(m.box.map50) - coco["map50"],
        },
        "n_images": len(ids),
        "n_boxes": len(gt["annotations"]),
        "n_detections": len(dets),
        "image_score": "max box confidence (0 when no box)",
        "image_auroc": image_level["auroc"],
        "image_auroc_ci95": image_level["auroc_ci95"],
        "n_units": image_level["n_units"],
        "image_average_precision": image_level["average_precision"],
        "threshold": thr,
        "threshold_method": threshold,
        "image_level": image_level,
        "image_confusion_matrix_labelled": labelled_confusion(
            image_level["confusion_matrix"], [NEGATIVE_CLASS, POSITIVE_CLASS]
        ),
        "coco_files": {
            "ground_truth": "ground_truth_coco.json",
            "detections": "detections_coco.json",
            "max_dets": [1, 10, _MAX_DET],
            # COCOeval.summarize() reads AP@[.5:.95] at maxDets 100: equal to ours while this is <= 100
            "most_boxes_per_image": int(np.bincount([d["image_id"] for d in coco_dets]).max()) if coco_dets else 0,
        },
    }
    if by:
        result["subgroups"] = {}
        for col in by:
            groups = _subgroup_values(_manifest_lookup(manifest, col, "output_det"), rel)
            per_value = {}
            for value in sorted(set(groups.tolist())):
                mask = groups == value
                subset_ids = [i + 1 for i in np.flatnonzero(mask)]
                per_value[value] = {
                    "pycocotools": M.coco_eval(gt, coco_dets, _MAX_DET, image_ids=subset_ids),
                    **M.binary_summary(y_img[mask], s_img[mask], thr, 200, 0, units[mask]),
                }
            result["subgroups"][col] = per_value
    gt_by_image: dict[int, list] = {}
    for a in gt["annotations"]:
        gt_by_image.setdefault(a["image_id"], []).append(a["bbox"])
    dets_by_image: dict[int, list] = {}
    for d in coco_dets:
        dets_by_image.setdefault(d["image_id"], []).append((d["bbox"], float(d["score"]), d["category_id"]))
    above = {i: [d[0] for d in v if d[1] >= thr] for i, v in dets_by_image.items()}
    iou = np.asarray(
        [C.worst_box_iou(gt_by_image.get(i + 1, []), above.get(i + 1, [])) for i in range(len(ids))], float
    )
    frame = pd.DataFrame(
        {
            "path": rel,
            "split": split,
            "label": [POSITIVE_CLASS if v else NEGATIVE_CLASS for v in y_img],
            "model": "detector",
            "score": s_img,
            # the boxes behind the decision: those at or above the image threshold, film pixels, best first
            "boxes": [_box_json(dets_by_image.get(i + 1, []), thr, names) for i in range(len(ids))],
            "gt_boxes": [json.dumps([_xyxy_dict(b) for b in gt_by_image.get(i + 1, [])]) for i in range(len(ids))],
            "iou": iou,
        }
    )
    extra = {"ids": ids, "gt_by_image": gt_by_image, "dets_by_image": dets_by_image}
    scores = ModelScores("detector", rel, y_img, s_img, thr, iou=iou, run=None, extra=extra)
    return result, frame, {"y": y_img, "score": s_img}, scores


def _xyxy_dict(xywh: list[float]) -> dict[str, float]:
    x, y, w, h = xywh
    return {"x1": round(x, 1), "y1": round(y, 1), "x2": round(x + w, 1), "y2": round(y + h, 1)}


def _box_json(dets: list[tuple[list[float], float, int]], thr: float, names: dict[int, str]) -> str:
    """Boxes as `predict` writes them (x1 y1 x2 y2 confidence class), only those at or above `thr`, best first."""
    kept = sorted((d for d in dets if d[1] >= thr), key=lambda d: -d[1])
    return json.dumps([{**_xyxy_dict(b), "confidence": round(s, 4), "class": names[c - 1]} for b, s, c in kept])


callable_stage(__name__)  # `fracturekit.evaluate(...)` runs evaluate() above: see fracturekit.Stage
