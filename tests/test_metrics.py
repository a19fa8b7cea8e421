"""Classification metrics against sklearn, threshold rules, and COCO vs Ultralytics mAP on known cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fracturekit.evaluation import metrics as M


@pytest.mark.parametrize(
    ("n", "prevalence", "seed"),
    [
        (50, 0.5, 0),  # small, balanced
        (400, 0.1, 1),  # rare positives, like fractures in a real dataset
        (1000, 0.7, 2),  # mostly positives
    ],
)
def test_auroc_and_ap_equal_sklearn(n: int, prevalence: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(int)
    score = rng.random(n) + 0.5 * y
    assert M.auroc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert M.average_precision(y, score) == pytest.approx(average_precision_score(y, score), abs=1e-12)


@pytest.mark.parametrize(
    ("y", "metric"),
    [
        ([1, 1, 1], M.auroc),  # one class: AUROC undefined
        ([0, 0, 0], M.average_precision),  # no positive: AP undefined
    ],
)
def test_undefined_metrics_are_nan(y: list[int], metric: object) -> None:
    assert math.isnan(metric(np.array(y), np.array([0.1, 0.5, 0.9])))


@pytest.mark.parametrize("seed", [0, 1, 2])  # three random problems
def test_bootstrap_ci_contains_point_estimate(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 120)
    score = rng.random(120) + 0.4 * y
    lo, hi = M.bootstrap_ci(y, score, n_boot=300, seed=seed)
    assert lo < M.auroc(y, score) < hi
    assert 0 < hi - lo < 0.5
    assert M.bootstrap_ci(y, score, n_boot=300, seed=seed) == (lo, hi)  # seeded: reproducible


def test_bootstrap_ci_nan_when_undefined() -> None:
    lo, hi = M.bootstrap_ci(np.ones(10, int), np.random.default_rng(0).random(10))
    assert math.isnan(lo) and math.isnan(hi)


@pytest.mark.parametrize(
    ("decimals", "seed"),
    [
        (None, 0),  # distinct scores
        (1, 1),  # many ties: a tie must count 1/2, as in sklearn
        (0, 2),  # almost all tied (scores 0, 1, 2)
    ],
)
def test_weighted_aurocs_equal_sklearn_sample_weight(decimals: int | None, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 150)
    score = rng.random(150) * 2 + 0.5 * y
    score = np.round(score, decimals) if decimals is not None else score
    weights = rng.integers(0, 4, (6, 150)).astype(float)  # bootstrap counts: 0 = film not drawn
    expected = [roc_auc_score(y, score, sample_weight=w) for w in weights]
    assert M._weighted_aurocs(y, score, weights) == pytest.approx(expected, abs=1e-12)
    # a resample that drew no negative has no AUROC
    only_pos = np.where(y == 1, 1.0, 0.0)[None, :]
    assert math.isnan(M._weighted_aurocs(y, score, only_pos)[0])


def _copied_units(n_units: int, copies: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n_units` originals (label, score), each repeated `copies` times: (y, score, unit id) per film."""
    rng = np.random.default_rng(seed)
    y = np.resize([0, 1], n_units)
    score = rng.random(n_units) + 0.4 * y
    unit = np.repeat(np.arange(n_units), copies)
    return y[unit], score[unit], unit


@pytest.mark.parametrize("seed", [0, 1, 2])  # three random problems
def test_bootstrap_ci_resamples_units_not_films(seed: int) -> None:
    # 30 films, each copied 50 times: 1,500 films but only 30 independent pieces of evidence.
    y, score, unit = _copied_units(30, 50, seed)
    lo, hi = M.bootstrap_ci(y, score, unit, n_boot=500, seed=seed)
    o_lo, o_hi = M.bootstrap_ci(y[::50], score[::50], n_boot=500, seed=seed + 100)  # the 30 originals alone
    f_lo, f_hi = M.bootstrap_ci(y, score, n_boot=500, seed=seed)  # films taken as independent (wrong)
    assert lo <= M.auroc(y, score) <= hi
    assert hi - lo == pytest.approx(o_hi - o_lo, rel=0.25)  # as uncertain as the originals
    assert hi - lo > 4 * (f_hi - f_lo)  # the film-level interval is several times too narrow
    assert M.binary_summary(y, score, 0.5, 50, seed, unit)["n_units"] == 30


def test_bootstrap_ci_units_are_labels_not_positions() -> None:
    # unit ids may be any labels (strings, gaps); each film its own unit equals units=None
    y, score, _ = _copied_units(40, 1, 0)
    plain = M.bootstrap_ci(y, score, n_boot=200, seed=3)
    assert M.bootstrap_ci(y, score, np.arange(40) * 7, n_boot=200, seed=3) == plain
    assert M.bootstrap_ci(y, score, np.array([f"u{i:02d}" for i in range(40)]), n_boot=200, seed=3) == plain


# Seven images: negatives at 0.1 0.2 0.6 0.65, positives at 0.4 0.7 0.9.
_Y = np.array([0, 0, 0, 0, 1, 1, 1])
_S = np.array([0.1, 0.2, 0.6, 0.65, 0.4, 0.7, 0.9])


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("youden", 0.7),  # sens 2/3, spec 1 -> J 0.667; at 0.4: sens 1, spec 1/2 -> J 0.5
        ("f1", 0.7),  # at 0.7: P 1, R 2/3 -> F1 0.8; at 0.4: P 3/5, R 1 -> 0.75
        ("sens:1.0", 0.4),  # highest threshold that still finds every positive
        ("sens:0.6", 0.7),  # two of three positives suffice
        ("0.5", 0.5),  # a number is used as given
    ],
)
def test_choose_threshold_rules(method: str, expected: float) -> None:
    assert M.choose_threshold(_Y, _S, method) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["median", "sens:0", "1.5", "sens:x"])  # unknown rule, bad targets
def test_parse_threshold_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        M.parse_threshold(bad)


def test_binary_metrics_at_known_confusion() -> None:
    # threshold 0.5: TP 2 (0.7, 0.9), FN 1 (0.4), FP 2 (0.6, 0.65), TN 2
    m = M.binary_metrics_at(_Y, _S, 0.5)
    assert m["confusion_matrix"] == [[2, 2], [1, 2]]
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["precision"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(4 / 7)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("0.80", 2 / 3),  # specificity 1.0 reachable with 2 of 3 positives (cut at 0.7)
        ("0.95", 2 / 3),  # same operating point
    ],
)
def test_sensitivity_at_specificity(target: str, expected: float) -> None:
    assert M.sensitivity_at_specificity(_Y, _S)[target] == pytest.approx(expected)


def test_multiclass_auroc_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    mc = M.multiclass_auroc(y, probs, ["a", "b", "c"])
    assert mc["macro_auroc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert mc["per_class"]["b"] == pytest.approx(roc_auc_score(y == 1, probs[:, 1]))
    onehot = np.eye(3)[y]
    assert mc["micro_auroc"] == pytest.approx(roc_auc_score(onehot.ravel(), probs.ravel()))


# ----------------------------------------------------------------- detection: hand-made known answers


def _gt(boxes: list[tuple[int, list[float]]], n_images: int) -> dict:
    """COCO ground truth: (image_id, xywh) per box, one category 'fracture'."""
    return {
        "images": [{"id": i, "width": 100, "height": 100} for i in range(1, n_images + 1)],
        "annotations": [
            {"id": k + 1, "image_id": i, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for k, (i, b) in enumerate(boxes)
        ],
        "categories": [{"id": 1, "name": "fracture"}],
    }


def _xyxy(b: list[float]) -> list[float]:
    return [b[0], b[1], b[0] + b[2], b[1] + b[3]]


_A, _B = [10.0, 10.0, 20.0, 20.0], [50.0, 50.0, 30.0, 30.0]
_A_LOOSE = [10.0, 10.0, 20.0, 15.4]  # IoU with _A = 0.77: a hit at IoU 0.50 ... 0.75 (6 of 10 thresholds)


def _ultralytics_map(
    gt_boxes: list[np.ndarray],
    gt_cls: list[np.ndarray],
    pred_boxes: list[np.ndarray],
    pred_conf: list[np.ndarray],
    pred_cls: list[np.ndarray],
    names: dict[int, str],
) -> dict[str, float]:
    """mAP@0.5:0.95 and mAP@0.5 computed by Ultralytics' own code (box_iou, match_predictions, ap_per_class).

    The per-image lists hold xyxy pixel boxes. This reproduces what `val` does after NMS, so a fixed set of
    boxes can be scored both ways and the gap between Ultralytics' numbers and pycocotools' is pinned down.
    """
    import torch
    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import ap_per_class, box_iou

    iouv = torch.linspace(0.5, 0.95, 10)
    matcher = BaseValidator.__new__(BaseValidator)  # only match_predictions (needs .iouv) is used
    matcher.iouv = iouv
    tp, conf, pcls, tcls = [], [], [], []
    for gb, gc, pb0, pc0, pk0 in zip(gt_boxes, gt_cls, pred_boxes, pred_conf, pred_cls, strict=True):
        order = np.argsort(-np.asarray(pc0, float), kind="stable")  # match_predictions expects descending conf
        pb, pc, pk = (np.asarray(a)[order] for a in (pb0, pc0, pk0))
        if len(pb) and len(gb):
            iou = box_iou(torch.as_tensor(gb, dtype=torch.float32), torch.as_tensor(pb, dtype=torch.float32))
            hits = matcher.match_predictions(torch.as_tensor(pk), torch.as_tensor(gc), iou).numpy()
        else:
            hits = np.zeros((len(pb), len(iouv)), bool)
        tp.append(hits)
        conf.append(np.asarray(pc, float))
        pcls.append(np.asarray(pk, float))
        tcls.append(np.asarray(gc, float))
    results = ap_per_class(
        np.concatenate(tp), np.concatenate(conf), np.concatenate(pcls), np.concatenate(tcls), names=names
    )
    ap = results[5]  # (n_classes_with_labels, 10)
    return {"map50_95": float(ap.mean()) if ap.size else 0.0, "map50": float(ap[:, 0].mean()) if ap.size else 0.0}


@pytest.mark.parametrize(
    ("gt_boxes", "dets", "coco", "ultra"),
    [
        # perfect: pycocotools 1.0; Ultralytics' trapezoid drops to 0 after the last recall point -> 0.995
        ([(1, _A), (2, _B)], [(1, _A, 0.9), (2, _B, 0.8)], (1.0, 1.0), (0.995, 0.995)),
        # one of two objects missed: precision 1 up to recall 0.5 -> 51/101 (COCO) and 0.495 (Ultralytics)
        ([(1, _A), (2, _B)], [(1, _A, 0.9)], (51 / 101, 51 / 101), (0.495, 0.495)),
        # one loose box (IoU 0.77): mAP50 perfect, mAP50-95 = 6/10 of it
        ([(1, _A)], [(1, _A_LOOSE, 0.9)], (0.6, 1.0), (0.6 * 0.995, 0.995)),
        # a confident false positive on a background image ranked above the hit: precision 1/2 at recall 1
        ([(1, _A)], [(2, _B, 0.95), (1, _A, 0.9)], (0.5, 0.5), (0.5 * 0.995, 0.5 * 0.995)),
    ],
)
def test_coco_and_ultralytics_map_known_answers(
    gt_boxes: list[tuple[int, list[float]]],
    dets: list[tuple[int, list[float], float]],
    coco: tuple[float, float],
    ultra: tuple[float, float],
) -> None:
    gt = _gt(gt_boxes, 2)
    results = [{"image_id": i, "category_id": 1, "bbox": b, "score": s} for i, b, s in dets]
    c = M.coco_eval(gt, results)
    assert (c["map50_95"], c["map50"]) == pytest.approx(coco, abs=1e-6)
    assert c["per_class_ap"]["fracture"] == pytest.approx(coco[0], abs=1e-6)

    per_image = [1, 2]
    u = _ultralytics_map(
        gt_boxes=[np.array([_xyxy(b) for i, b in gt_boxes if i == im]).reshape(-1, 4) for im in per_image],
        gt_cls=[np.array([0 for i, _ in gt_boxes if i == im]) for im in per_image],
        pred_boxes=[np.array([_xyxy(b) for i, b, _ in dets if i == im]).reshape(-1, 4) for im in per_image],
        pred_conf=[np.array([s for i, _, s in dets if i == im]) for im in per_image],
        pred_cls=[np.array([0 for i, _, _ in dets if i == im]) for im in per_image],
        names={0: "fracture"},
    )
    assert (u["map50_95"], u["map50"]) == pytest.approx(ultra, abs=1e-6)


def test_coco_eval_no_detections_and_no_ground_truth() -> None:
    # No boxes predicted: AP 0 where there is ground truth; no ground truth in the subset: undefined.
    gt = _gt([(1, _A)], 2)
    assert M.coco_eval(gt, [])["map50_95"] == 0.0
    assert math.isnan(M.coco_eval(gt, [], image_ids=[2])["map50_95"])


def test_bootstrap_ci_equals_a_plain_unit_resampling_loop() -> None:
    # The vectorised form must give exactly what the obvious loop gives: the same unit draws (one
    # rng.integers row per resample), the films of the drawn units, sklearn's AUROC, the same percentiles.
    rng = np.random.default_rng(4)
    unit = rng.integers(0, 25, 90)
    y = rng.integers(0, 2, 90)
    score = np.round(rng.random(90) + 0.3 * y, 2)  # ties included
    draws = np.random.default_rng(9)
    ids = np.unique(unit)
    values = []
    for _ in range(200):
        idx = np.concatenate([np.flatnonzero(unit == ids[k]) for k in draws.integers(0, len(ids), len(ids))])
        if 0 < y[idx].sum() < len(idx):
            values.append(roc_auc_score(y[idx], score[idx]))
    expected = np.quantile(values, [0.025, 0.975])
    assert M.bootstrap_ci(y, score, unit, n_boot=200, seed=9) == pytest.approx(tuple(expected), abs=1e-12)
