"""evaluate's classifier half: calibrated probabilities from the inference core, metrics from them.

The per-film probabilities come from `fracturekit.infer` (the very path predict uses; Ultralytics' `val`
keeps only top-1 accuracy). Temperature is fitted and the threshold chosen on the VALIDATION split, then
both applied unchanged to the evaluated split; predict applies the same temperature to the same softmax.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from fracturekit.core.errors import UserError
from fracturekit.core.layout import PreparedDataset
from fracturekit.core.paths import rel_to
from fracturekit.core.progress import Progress
from fracturekit.data.imageio import is_image_file
from fracturekit.data.split import film_units
from fracturekit.evaluation import metrics as M
from fracturekit.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from fracturekit.evaluation.cases import ModelScores
from fracturekit.evaluation.common import (
    THRESHOLD_SPLIT,
    EvalContext,
    ModelResult,
    films_sha256,
    labelled_confusion,
    skip_errors,
    subgroup_values,
)
from fracturekit.infer import scoring
from fracturekit.infer.model import Model
from fracturekit.infer.policy import positive_index


def binary_positive(names: list[str]) -> int | None:
    """The positive class of a binary classifier (`infer.positive_index`'s rule); None for multi-class."""
    return positive_index(names) if len(names) == 2 else None


def split_films(ds: PreparedDataset, split: str, names: list[str]) -> list[tuple[Path, int]]:
    """(film, class index) for every image under cls/<split>/<class>/, in the one order every classifier is scored in.

    The order (class folder, then file name) is shared by a fracturekit run and outside scores, so the same
    scores give the same bootstrap resamples and the same numbers.
    """
    split_dir = ds.cls_dir / split
    if not split_dir.is_dir():
        return []
    items: list[tuple[Path, int]] = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if class_dir.name not in names:
            raise UserError(
                f"{class_dir}: class '{class_dir.name}' is unknown to the classifier (classes {names}); "
                "evaluate with a model trained on this dataset."
            )
        idx = names.index(class_dir.name)
        items += [(p, idx) for p in sorted(class_dir.iterdir()) if p.is_file() and is_image_file(p)]
    return items


def classify_images(
    model: Model, ds: PreparedDataset, split: str, skipped: list[dict], progress: Progress | None = None
) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Uncalibrated probabilities (N, C) ordered like the model's class ids for every image under cls/<split>/<class>/.

    Scored by the inference core, as predict scores them. A film that cannot be read is appended to
    `skipped` (path, reason) and left out. Returns (paths, label indices, probabilities). `progress` hears
    ("classify <split>", films done, films).
    """
    names = [model.names[i] for i in sorted(model.names)]
    items = split_films(ds, split, names)
    if not items:
        return [], np.zeros(0, int), np.zeros((0, len(names)))
    label = {p: idx for p, idx in items}
    scored = scoring.score([p for p, _ in items], classifier=model, label=f"classify {split}", progress=progress)
    preds = skip_errors(scored, "classifier", skipped)
    probs = np.asarray([p.probs_raw for p in preds], np.float64).reshape(len(preds), len(names))
    return [p.path for p in preds], np.asarray([label[p.path] for p in preds], int), probs


def classification_report(
    names: list[str],
    y_val: np.ndarray,
    p_val: np.ndarray,
    y_test: np.ndarray,
    p_test: np.ndarray,
    threshold: M.ThresholdRule | str,
    n_boot: int,
    seed: int,
    units: np.ndarray | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """All classification metrics; temperature and threshold from (y_val, p_val) ONLY.

    units: independent unit id per test image (patient group / duplicate cluster) for the bootstrap CI.
    threshold: the rule as `options.check_threshold` parsed it (a string is parsed here: a direct call).

    Returns the metrics dict and the calibrated test probabilities. The threshold applies to the
    calibrated positive-class probability `apply_temperature(probs, temperature)[:, positive]`.
    """
    rule = threshold if isinstance(threshold, M.ThresholdRule) else M.ThresholdRule.parse(threshold)
    temperature = fit_temperature(np.log(np.clip(p_val, 1e-12, 1.0)), y_val) if len(y_val) else 1.0
    cal_test = apply_temperature(p_test, temperature) if len(p_test) else p_test
    out: dict[str, Any] = {
        "classes": names,
        "temperature": temperature,
        "temperature_method": "NLL on the val split, scipy bounded scalar search over log T",
        "ece_before": expected_calibration_error(p_test, y_test),
        "ece_after": expected_calibration_error(cal_test, y_test),
    }
    pos = binary_positive(names)
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
    if len(y_val) == 0 and not isinstance(rule.rule, float):
        raise UserError(
            f"the {THRESHOLD_SPLIT} split has no classification images, so '--threshold {rule.text}' "
            "cannot be chosen on it; pass a fixed number such as --threshold 0.5."
        )
    cal_val = apply_temperature(p_val, temperature)[:, pos] if len(p_val) else np.zeros(0)
    try:
        thr = M.choose_threshold((y_val == pos).astype(int), cal_val, rule)
    except ValueError as exc:
        raise UserError(f"--threshold {rule.text}: {exc}; pass a fixed number such as --threshold 0.5.") from exc
    yb = (y_test == pos).astype(int)
    out.update(
        {
            "positive_class": names[pos],
            "threshold": thr,
            "threshold_method": rule.text,
            "threshold_applies_to": "calibrated positive-class probability",
            **M.binary_summary(yb, cal_test[:, pos], thr, n_boot, seed, units),
        }
    )
    return out, cal_test


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
    pos = binary_positive(names)
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


def evaluate_classifier(model: Model, ctx: EvalContext) -> ModelResult:
    """The classifier's metrics on ctx.split, temperature and threshold from THRESHOLD_SPLIT; see ModelResult."""
    ds, split, skipped = ctx.ds, ctx.split, ctx.skipped
    names = [model.names[i] for i in sorted(model.names)]
    val_paths, y_val, p_val = classify_images(model, ds, THRESHOLD_SPLIT, skipped, ctx.progress)
    if split == THRESHOLD_SPLIT:
        paths, y, p = val_paths, y_val, p_val
    else:
        paths, y, p = classify_images(model, ds, split, skipped, ctx.progress)
    if len(y) == 0 and skipped:  # every film failed the same way: say why instead of "no images"
        raise UserError(f"{skipped[0]['path']}: the classifier failed on every film ({skipped[0]['reason']}).")
    run = model.run
    cam_run = str(run.root) if run is not None and run.best.is_file() else None  # EigenCAM needs PyTorch weights
    rel = [rel_to(q, ds.root) for q in paths]
    return classifier_result(names, (y_val, p_val), (rel, y, p), ctx, str(run.root) if run else None, cam_run)


def classifier_result(
    names: list[str],
    val: tuple[np.ndarray, np.ndarray],
    test: tuple[list[str], np.ndarray, np.ndarray],
    ctx: EvalContext,
    run: str | None,
    cam_run: str | None = None,
) -> ModelResult:
    """Every classification output from (labels, uncalibrated probabilities) of val and of ctx.split.

    Shared by a fracturekit run (`evaluate_classifier`) and outside scores (`evaluation.scores`): `test` holds
    the dataset-relative paths, class indices into `names` and probabilities (N, len(names)) of ctx.split.
    """
    ds, split = ctx.ds, ctx.split
    y_val, p_val = val
    rel, y, p = test
    if len(y) == 0:
        raise UserError(f"{ds.cls_dir / split}: no images to classify; check --split or re-run prepare.")
    units = film_units(ctx.manifest, "output_cls", rel)
    metrics, cal = classification_report(names, y_val, p_val, y, p, ctx.threshold, ctx.bootstrap, ctx.seed, units)
    metrics = {"run": run, **metrics, "films_sha256": films_sha256(rel)}
    pos = binary_positive(names)
    if ctx.by:
        metrics["subgroups"] = {
            col: _classification_subgroups(
                subgroup_values(ctx.manifest, col, "output_cls", rel), y, p, cal, names, metrics, units
            )
            for col in ctx.by
        }
    metrics["confusion_matrix_labelled"] = labelled_confusion(metrics["confusion_matrix"], _cm_labels(names, pos))
    plots: dict[str, Any] = {}
    scores = None
    frame: dict[str, Any] = {"path": rel, "split": split, "label": [names[i] for i in y], "model": "classifier"}
    if pos is not None:
        yb = (y == pos).astype(int)
        scores = ModelScores("classifier", rel, yb, cal[:, pos], metrics["threshold"], run=cam_run)
        frame |= {"score": p[:, pos], "score_calibrated": cal[:, pos]}
        plots["curves"] = {"classifier": {"y": yb, "score": cal[:, pos]}}
    else:
        frame |= {"score": cal.max(axis=1), "pred": [names[i] for i in cal.argmax(axis=1)]}
        frame |= {f"prob_{n}": cal[:, i] for i, n in enumerate(names)}
        plots["curves"] = {
            f"classifier: {n} vs rest": {"y": (y == i).astype(int), "score": cal[:, i]} for i, n in enumerate(names)
        }
    plots["reliability"] = {
        "before": reliability_bins(p, y),
        "after": reliability_bins(cal, y),
        "ece_before": metrics["ece_before"],
        "ece_after": metrics["ece_after"],
    }
    plots["cls_confusion"] = {"matrix": metrics["confusion_matrix"], "labels": _cm_labels(names, pos)}
    return ModelResult(metrics, pd.DataFrame(frame), plots, scores)
