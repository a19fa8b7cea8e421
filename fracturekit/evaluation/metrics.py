"""Clinical classification metrics and COCO detection scoring, NaN-safe for tiny or one-class subsets.

Everything that sklearn or pycocotools computes is taken from them; what is hand-written (cluster bootstrap,
threshold rules, reading COCOeval's precision array) says why. A metric that is undefined on a subset
(AUROC with one class present, precision with no positive call) is NaN, never an exception, so a
subgroup breakdown always completes and shows its counts.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.preprocessing import label_binarize

SPECIFICITY_TARGETS = (0.80, 0.90, 0.95)
THRESHOLD_HELP = "youden | f1 | sens:0.95 (any target sensitivity) | a number in [0, 1]"


def _two_classes(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    """sklearn's ROC AUC for binary labels; NaN when only one class is present."""
    y = np.asarray(y)
    return float(roc_auc_score(y, score)) if _two_classes(y) else float("nan")


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """sklearn's average precision; NaN without any positive."""
    y = np.asarray(y)
    return float(average_precision_score(y, score)) if np.any(y == 1) else float("nan")


def _weighted_aurocs(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC per row of `weights` (B, N): film i counted weights[b, i] times (ties count 1/2); NaN with one class.

    The Mann-Whitney form with weights equals sklearn's roc_auc_score(sample_weight=...) and, for integer
    weights, the AUROC of the films repeated that often, which is what a bootstrap resample is. Scores are
    sorted once; per resample it is one cumulative sum over the tie levels, so all B resamples cost a few
    matrix operations instead of B sorts.
    """
    levels, level_of = np.unique(score, return_inverse=True)
    pos = y == 1
    # (N, K) indicator of film -> tie level, split by class; (B, N) @ (N, K) sums the weights per level.
    onehot = csr_matrix((np.ones(len(y)), (np.arange(len(y)), level_of)), shape=(len(y), len(levels)))
    w_pos = (onehot[pos].T @ weights[:, pos].T).T
    w_neg = (onehot[~pos].T @ weights[:, ~pos].T).T
    below = np.cumsum(w_neg, axis=1) - w_neg  # negatives strictly below each level
    n_pos, n_neg = w_pos.sum(axis=1), w_neg.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (w_pos * (below + 0.5 * w_neg)).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def n_units(units: np.ndarray | None, n: int) -> int:
    """How many independent units `units` (one id per film) holds; each film is its own unit when None."""
    return n if units is None else len(np.unique(np.asarray(units)))


def bootstrap_ci(
    y: np.ndarray,
    score: np.ndarray,
    units: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile cluster-bootstrap CI of the AUROC: resamples UNITS with replacement, each with all its films.

    units: one id per film (patient group / duplicate cluster, see fracturekit.data.split.manifest_units); None
    makes every film its own unit. Films of one unit are not independent (copies of a film, films of one
    patient), so resampling films shrinks the interval by about sqrt(films per unit): 30 originals copied
    50 times each gave a film-level interval 7.5-7.9x narrower than the originals' own (tests/test_metrics.py).
    Hand-written rather than scipy.stats.bootstrap: that one resamples observations, not clusters, and a
    resample with one class only (AUROC undefined) must be dropped, not turn the whole interval into NaN.
    Vectorised over resamples (bench/bootstrap_bench.py). (NaN, NaN) when the AUROC is undefined on the
    full set or `n_boot` is 0.
    """
    y, score = np.asarray(y).astype(int), np.asarray(score, dtype=float)
    if n_boot <= 0 or not _two_classes(y):
        return float("nan"), float("nan")
    values = [_weighted_aurocs(y, score, w) for w in _unit_resamples(units, len(y), n_boot, seed)]
    defined = np.concatenate(values)
    defined = defined[~np.isnan(defined)]
    if not defined.size:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(defined, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _unit_resamples(units: np.ndarray | None, n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of bootstrap weights (resamples, films): each resample draws as many units as there are, with
    replacement, and a film weighs as often as its unit was drawn. None: every film is its own unit."""
    unit_ids = np.unique(np.asarray(units), return_inverse=True)[1] if units is not None else np.arange(n)
    n_u = int(unit_ids.max()) + 1
    rng = np.random.default_rng(seed)
    chunk = max(1, 1_000_000 // max(n_u, n))  # resamples per block: each (block, films) array <= 8 MB
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, n_u, (b, n_u))
        counts = np.bincount((draws + n_u * np.arange(b)[:, None]).ravel(), minlength=b * n_u).reshape(b, n_u)
        yield counts[:, unit_ids].astype(float)


def parse_threshold(method: str) -> str | float:
    """Validate a --threshold value: 'youden', 'f1', 'sens:<0..1>' or a float probability."""
    m = str(method).strip().lower()
    if m in ("youden", "f1"):
        return m
    if m.startswith("sens:"):
        target = float(m.split(":", 1)[1])
        if not 0 < target <= 1:
            raise ValueError(f"sensitivity target must be in (0, 1], got {target}")
        return m
    value = float(m)
    if not 0 <= value <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {value}")
    return value


@dataclass(frozen=True)
class ThresholdRule:
    """A --threshold parsed once where the command enters (`options.check_threshold`), then passed down.

    `text` is the value as given (metrics.json's `threshold_method`, the error sentences); `rule` what
    `choose_threshold` applies: 'youden', 'f1', 'sens:T' or a probability.
    """

    text: str
    rule: str | float

    @classmethod
    def parse(cls, text: str) -> ThresholdRule:
        """The rule `text` names; ValueError when it names none (`parse_threshold`)."""
        return cls(text, parse_threshold(text))


def choose_threshold(y: np.ndarray, score: np.ndarray, method: str | ThresholdRule) -> float:
    """The decision threshold on positive-class scores picked on THESE labels (pass validation data).

    youden: maximises sensitivity + specificity - 1 on the ROC curve; f1: maximises F1 on the PR curve;
    sens:T: the highest threshold whose sensitivity is at least T (fewest false positives for that
    sensitivity); a number: used as given. Predictions are positive when score >= threshold.
    The ROC/PR points come from sklearn; picking the optimum is a one-line argmax, written here.
    `method` a ThresholdRule is applied as parsed; a string is parsed here (a direct call).
    """
    rule = method.rule if isinstance(method, ThresholdRule) else parse_threshold(method)
    if isinstance(rule, float):
        return rule
    y, score = np.asarray(y), np.asarray(score, dtype=float)
    if not _two_classes(y):
        raise ValueError("the threshold split needs both classes to choose a threshold")
    if rule == "youden":
        fpr, tpr, thr = roc_curve(y, score)
        best = int(np.argmax(tpr - fpr))
        return float(min(thr[best], 1.0))
    if rule == "f1":
        precision, recall, thr = precision_recall_curve(y, score)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
        best = int(np.argmax(f1[:-1]))  # the last PR point has no threshold
        return float(thr[best])
    target = float(rule.split(":", 1)[1])
    fpr, tpr, thr = roc_curve(y, score)
    ok = np.flatnonzero(tpr >= target - 1e-12)
    return float(min(thr[ok[0]], 1.0))  # thresholds decrease along the curve: the first is the highest


def sensitivity_at_specificity(
    y: np.ndarray, score: np.ndarray, targets: Sequence[float] = SPECIFICITY_TARGETS
) -> dict[str, float]:
    """Best sensitivity among ROC operating points with specificity >= each target (keys '0.80', ...)."""
    y = np.asarray(y)
    if not _two_classes(y):
        return {f"{t:.2f}": float("nan") for t in targets}
    fpr, tpr, _ = roc_curve(y, score)
    return {f"{t:.2f}": float(tpr[fpr <= 1 - t + 1e-12].max()) for t in targets}


def binary_metrics_at(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, object]:
    """Confusion matrix [[TN, FP], [FN, TP]], sensitivity, specificity, precision, F1 at `threshold`."""
    y = np.asarray(y, dtype=int)
    pred = (np.asarray(score) >= threshold).astype(int)
    cm = confusion_matrix(y, pred, labels=[0, 1])
    (tn, fp), (fn, tp) = cm
    nan = float("nan")
    return {
        "confusion_matrix": cm.tolist(),
        "sensitivity": float(recall_score(y, pred, zero_division=nan)) if tp + fn else nan,
        "specificity": float(tn / (tn + fp)) if tn + fp else nan,
        "precision": float(precision_score(y, pred, zero_division=nan)),
        "f1": float(f1_score(y, pred, zero_division=nan)) if tp + fn + fp else nan,
        "accuracy": float((tp + tn) / len(y)) if len(y) else nan,
    }


def binary_summary(
    y: np.ndarray,
    score: np.ndarray,
    threshold: float,
    n_boot: int = 1000,
    seed: int = 0,
    units: np.ndarray | None = None,
) -> dict[str, object]:
    """Every binary metric of the report for one set of images: counts, AUROC + CI, AP, threshold metrics.

    units: independent unit id per image (see `bootstrap_ci`); `n_units` says how many the CI resampled.
    """
    y = np.asarray(y, dtype=int)
    score = np.asarray(score, dtype=float)
    return {
        "n": len(y),
        "n_positive": int(y.sum()),
        "n_units": n_units(units, len(y)),
        "auroc": auroc(y, score),
        "auroc_ci95": list(bootstrap_ci(y, score, units, n_boot, seed)),
        "average_precision": average_precision(y, score),
        **binary_metrics_at(y, score, threshold),
        "sens_at_spec": sensitivity_at_specificity(y, score),
    }


def multiclass_auroc(y: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, object]:
    """One-vs-rest AUROC per class, macro (mean over classes present) and micro (pooled), via sklearn."""
    y = np.asarray(y, dtype=int)
    onehot = label_binarize(y, classes=list(range(len(classes))))
    per_class = {name: auroc(onehot[:, i], probs[:, i]) for i, name in enumerate(classes)}
    defined = [v for v in per_class.values() if not math.isnan(v)]
    micro = float(roc_auc_score(onehot, probs, average="micro")) if len(defined) == len(classes) else float("nan")
    return {
        "per_class": per_class,
        "macro_auroc": float(np.mean(defined)) if defined else float("nan"),
        "micro_auroc": micro,
    }


# ---------------------------------------------------------------- detection: COCO scoring


def coco_eval(gt: dict, detections: list[dict], max_det: int = 300, image_ids: Sequence[int] | None = None) -> dict:
    """Score COCO-format detections against a COCO ground-truth dict with pycocotools' COCOeval (bbox).

    `max_det` replaces COCO's 100 as the largest maxDets so the count matches Ultralytics val (300).
    Returns map50_95, map50 and per-class AP (category name -> AP@[.5:.95]), read from COCOeval's
    accumulated precision array [iou, recall, class, area, maxdet] (-1 = no ground truth) the same
    way `summarize()` does, without its printing. NaN when the images hold no ground-truth box.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    nan = float("nan")
    empty = {"map50_95": nan, "map50": nan, "per_class_ap": {c["name"]: nan for c in gt["categories"]}}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress on every call
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        ids = list(image_ids) if image_ids is not None else coco_gt.getImgIds()
        if not coco_gt.getAnnIds(imgIds=ids):
            return empty
        if not detections:
            # loadRes rejects an empty list: an empty result set scores AP 0 wherever there is ground truth.
            return {"map50_95": 0.0, "map50": 0.0, "per_class_ap": {c["name"]: 0.0 for c in gt["categories"]}}
        coco_dt = coco_gt.loadRes(detections)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = ids
        ev.params.maxDets = [1, 10, max_det]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, -1]  # all areas, largest maxDets

    def mean_valid(a: np.ndarray) -> float:
        valid = a[a > -1]
        return float(valid.mean()) if valid.size else nan

    names = {c["id"]: c["name"] for c in gt["categories"]}
    return {
        "map50_95": mean_valid(precision),
        "map50": mean_valid(precision[0]),
        "per_class_ap": {names[cid]: mean_valid(precision[:, :, k]) for k, cid in enumerate(ev.params.catIds)},
    }


def paired_auroc_test(
    y: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    units: np.ndarray | None = None,
) -> dict[str, object]:
    """AUROC(a) - AUROC(b) on the same images: a paired percentile bootstrap CI and two-sided p-value.

    Paired: every resample draws the same units (as in `bootstrap_ci`: patients and duplicate clusters, all their
    films) for both scorers, so what the two share (which films are hard) cancels in the difference. The p-value is
    2 x the smaller tail of the resampled differences around 0, as (count + 1) / (resamples + 1) so it is never
    reported as exactly 0. Significant when the CI excludes 0. Hand-written for the same reason as `bootstrap_ci`
    (one-class resamples are dropped).
    """
    y, a, b = np.asarray(y), np.asarray(score_a, dtype=float), np.asarray(score_b, dtype=float)
    auc_a, auc_b = auroc(y, a), auroc(y, b)
    nan = float("nan")
    out: dict[str, object] = {"auroc_a": auc_a, "auroc_b": auc_b, "difference": auc_a - auc_b}
    diffs = np.zeros(0)
    if n_boot > 0 and not math.isnan(auc_a - auc_b):
        yi = y.astype(int)
        d = np.concatenate(
            [
                _weighted_aurocs(yi, a, w) - _weighted_aurocs(yi, b, w)
                for w in _unit_resamples(units, len(y), n_boot, seed)
            ]
        )
        diffs = d[~np.isnan(d)]
    if not diffs.size:
        return out | {"difference_ci95": [nan, nan], "p_value": nan, "significant": None, "resamples": 0}
    d = np.asarray(diffs)
    alpha = (1 - level) / 2
    lo, hi = (float(v) for v in np.quantile(d, [alpha, 1 - alpha]))
    tail = min(int(np.count_nonzero(d <= 0)), int(np.count_nonzero(d >= 0)))
    return out | {
        "difference_ci95": [lo, hi],
        "p_value": min(1.0, 2 * (tail + 1) / (len(d) + 1)),
        "significant": bool(lo > 0 or hi < 0),
        "resamples": len(d),
        "method": f"paired bootstrap over the same units, {len(d)} resamples, {level:.0%} percentile CI",
        "n_units": n_units(units, len(y)),
    }
