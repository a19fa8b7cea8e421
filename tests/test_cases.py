"""Cases to review, COCO interchange, warnings, provenance and readable labels (evaluation.cases, infer.annotate)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fracturekit.evaluate import labelled_confusion, metric_warnings
from fracturekit.evaluation.cases import select, worst_box_iou
from fracturekit.infer.annotate import place_label


# ------------------------------------------------------------------ which films, in which order
@pytest.mark.parametrize(
    ("y", "score", "iou", "n", "expected"),
    [
        # misses lowest score first, false alarms highest first, hits highest first
        ([1, 1, 0, 0, 1, 1], [0.1, 0.3, 0.9, 0.6, 0.8, 0.7], None, 8,
         [(0, "false_negative"), (1, "false_negative"), (2, "false_positive"), (3, "false_positive"),
          (4, "true_positive"), (5, "true_positive")]),
        # worst-localised among hits by IoU; those are not repeated as examples; n caps both
        ([1, 1, 1, 1], [0.9, 0.8, 0.7, 0.6], [0.9, 0.1, np.nan, 0.4], 2,
         [(1, "worst_localised"), (3, "worst_localised"), (0, "true_positive"), (2, "true_positive")]),
        # every mistake is listed even past n; ties keep film order
        ([1, 1, 1], [0.2, 0.2, 0.2], None, 1, [(0, "false_negative"), (1, "false_negative"), (2, "false_negative")]),
        ([0, 0], [0.1, 0.2], None, 8, []),  # correct rejections are not cases
    ],
)  # fmt: skip
def test_select_order(y: list, score: list, iou: list | None, n: int, expected: list) -> None:
    got = select(np.array(y), np.array(score), 0.5, None if iou is None else np.array(iou, float), n)
    assert got == expected


@pytest.mark.parametrize(
    ("gt", "pred", "expected"),
    [
        ([[0, 0, 10, 10]], [[0, 0, 10, 10]], 1.0),  # exact box
        ([[0, 0, 10, 10]], [[5, 0, 10, 10]], 1 / 3),  # half shifted: 50 / 150
        ([[0, 0, 10, 10], [50, 50, 10, 10]], [[0, 0, 10, 10]], 0.0),  # second fracture uncovered: the worst counts
        ([[0, 0, 10, 10]], [], 0.0),  # no box at all
        ([], [[0, 0, 10, 10]], float("nan")),  # no truth: IoU does not apply
    ],
)
def test_worst_box_iou(gt: list, pred: list, expected: float) -> None:
    assert worst_box_iou(gt, pred) == pytest.approx(expected, nan_ok=True)


# ------------------------------------------------------------------ labels stay inside and apart
def _overlaps(rects: list[tuple[int, int, int, int]]) -> int:
    return sum(
        1
        for i, a in enumerate(rects)
        for b in rects[i + 1 :]
        if min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])
    )


def test_labels_inside_and_apart_where_annotator_stacks_them() -> None:
    # Two nearly identical boxes in the film's top-left corner and one at the right edge, 100-px labels.
    frame, size = (300, 200), (100, 20)
    boxes = [(0, 0, 60, 40), (3, 2, 62, 45), (260, 100, 300, 140)]
    taken: list[tuple[int, int, int, int]] = []
    for b in boxes:
        taken.append(place_label(size, b, taken, frame))
    assert _overlaps(taken) == 0
    assert all(r[0] >= 0 and r[2] <= frame[0] and r[1] >= 0 and r[3] <= frame[1] for r in taken)
    # Ultralytics' box_label: above the box if it fits, else inside at the top-left, shifted left at the edge.
    ultra = []
    for x1, y1, _, _ in boxes:
        x = min(x1, frame[0] - size[0])
        y = y1 - size[1] if y1 >= size[1] else y1
        ultra.append((x, y, x + size[0], y + size[1]))
    assert _overlaps(ultra) == 1  # the two corner labels sit on each other


def test_annotate_scales_font_and_keeps_text_on_band(tmp_path: Path) -> None:
    from fracturekit.infer.annotate import PREDICTED, TRUTH, Box, annotate

    small = annotate(np.zeros((64, 64), np.uint8), [Box((0, 0, 20, 20), TRUTH, "truth")], [[("caption", TRUTH)]])
    big = annotate(np.zeros((2000, 1600), np.uint8), [Box((0, 0, 500, 500), PREDICTED, "0.91")], [[("cap", TRUTH)]])
    assert small.shape[1] == 512 and small.shape[0] > 512  # enlarged for display, band above the film
    assert big.shape[1] == 1600  # a large film keeps its size
    band_small, band_big = small.shape[0] - 512, big.shape[0] - 2000
    assert band_big > 2 * band_small  # the caption's font grows with the film


# ------------------------------------------------------------------ metrics.json additions
def test_labelled_confusion() -> None:
    m = labelled_confusion([[5, 1], [2, 7]], ["no_fracture", "fracture"])
    assert m["counts"]["true fracture"]["predicted no_fracture"] == 2  # a missed fracture
    assert m["counts"]["true no_fracture"]["predicted fracture"] == 1  # a false alarm


@pytest.mark.parametrize(
    ("metrics", "fragment"),
    [
        ({"classification": {"temperature": 20.0}}, "search bound"),  # temperature stuck at the upper bound
        ({"classification": {"temperature": 0.05}}, "search bound"),  # ... and at the lower one
        ({"classification": {"temperature": 1.3, "auroc_ci95": [0.55, 0.95]}}, "0.40 wide"),  # very wide CI
        ({"classification": {"n": 212, "n_units": 2}}, "are 2 independent units"),  # one copy family per class
        ({"detection": {"n": 40, "n_units": 29}}, "are 29 independent units"),  # just under MIN_FILMS units
        ({"detection": {"subgroups": {"region": {"hip": {"n": 40, "n_positive": 3}}}}}, "too few to judge"),
        ({"detection": {"subgroups": {"region": {"hip": {"n": 12, "n_positive": 11}}}}}, "hip (12 films"),
        (
            {"provenance": {"dataset": {"data_hash": "aaaa"}, "runs": {"detector": {"data_hash": "bbbb"}}}},
            "another version of the dataset",
        ),  # a run trained on another prepare of the data
    ],
)
def test_warnings_raised(metrics: dict, fragment: str) -> None:
    assert any(fragment in w for w in metric_warnings(metrics))


def test_no_warnings_for_a_sound_evaluation() -> None:
    groups = {"hand": {"n": 300, "n_positive": 60}, "leg": {"n": 200, "n_positive": 40}}
    m = {
        "classification": {
            "temperature": 1.4,
            "auroc_ci95": [0.85, 0.93],
            "n_units": 30,  # MIN_FILMS units: enough
            "subgroups": {"region": groups},
        }
    }
    assert metric_warnings(m) == []
    assert groups["hand"]["too_few_to_judge"] is False


# ------------------------------------------------------------------ evaluate end to end, detector faked
class _Box:
    map, map50, mp, mr = 0.41, 0.62, 0.5, 0.5
    maps = np.array([0.41])


def _fake_score_factory(rng: np.random.Generator):
    """An `infer.scoring.score` stand-in: boxes near each truth box (jittered) plus false alarms, film pixels."""

    def fake_score(paths, **_):  # noqa: ANN001, ANN202
        from PIL import Image

        from fracturekit.infer.scoring import Prediction

        preds = []
        for i, img in enumerate(paths):
            w, h = Image.open(img).size
            label = img.parent.parent.parent / "labels" / img.parent.name / f"{img.stem}.txt"
            boxes = []
            for line in label.read_text().splitlines() if label.is_file() else []:
                _, xc, yc, bw, bh = map(float, line.split())
                jx, jy = rng.uniform(-0.25, 0.25, 2) * [bw * w, bh * h]
                x1, y1 = (xc - bw / 2) * w + jx, (yc - bh / 2) * h + jy
                boxes.append([x1, y1, x1 + bw * w, y1 + bh * h, rng.uniform(0.3, 1), 0])
            if rng.uniform() < 0.5:  # a false alarm somewhere
                boxes.append([2, 2, 14, 14, rng.uniform(), 0])
            b = np.array(boxes, np.float32).reshape(-1, 6)
            preds.append(Prediction(i, img, boxes=b, detector_score=float(b[:, 4].max()) if len(b) else 0.0))
        return preds

    return fake_score


def test_evaluate_detector_cases_coco_and_report(
    prepared_phantoms: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from fracturekit import evaluate as E
    from fracturekit.core.layout import RunDir
    from fracturekit.evaluation import detection as D
    from fracturekit.infer import scoring

    run = RunDir(tmp_path / "det_run")
    (run.root / "weights").mkdir(parents=True)
    model = SimpleNamespace(names={0: "fracture"}, run=run, imgsz=64)
    monkeypatch.setattr(E, "_load_model", lambda *_: model)
    monkeypatch.setattr(D, "ultralytics_val", lambda *_: SimpleNamespace(box=_Box()))
    monkeypatch.setattr(scoring, "score", _fake_score_factory(np.random.default_rng(0)))
    out = tmp_path / "eval"
    m = E.evaluate(prepared_phantoms, detector=run.root, out=out, bootstrap=20, cases=3)
    d = m["detection"]

    # pycocotools on the two files, as a user would run it, gives metrics.json's mAP@0.5:0.95
    gt = COCO(str(out / "ground_truth_coco.json"))
    ev = COCOeval(gt, gt.loadRes(str(out / "detections_coco.json")), "bbox")
    ev.params.maxDets = d["coco_files"]["max_dets"]  # [1, 10, 300]: Ultralytics keeps up to 300 boxes per film
    ev.evaluate()
    ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, -1]  # what summarize() averages, at the largest maxDets
    assert 0.05 < d["pycocotools"]["map50_95"] < 0.95  # a non-trivial score, so equality means something
    assert precision[precision > -1].mean() == pytest.approx(d["pycocotools"]["map50_95"], abs=1e-12)
    # summarize()'s AP@[.5:.95] reads maxDets=100: the same number while no film has more than 100 boxes
    assert d["coco_files"]["most_boxes_per_image"] <= 100
    ev.params.maxDets = [1, 10, 100]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(d["pycocotools"]["map50_95"], abs=1e-12)

    cases = pd.read_csv(out / "cases.csv")
    assert list(cases.columns) == ["path", "model", "label", "score", "threshold", "kind", "iou", "picture"]
    thr = d["threshold"]
    fn, fp = cases[cases["kind"] == "false_negative"], cases[cases["kind"] == "false_positive"]
    cm = d["image_confusion_matrix_labelled"]["counts"]
    assert len(fn) == cm["true fracture"]["predicted no_fracture"] and (fn["score"] < thr).all()
    assert len(fp) == cm["true no_fracture"]["predicted fracture"] and (fp["score"] >= thr).all()
    assert fp["score"].is_monotonic_decreasing and fn["score"].is_monotonic_increasing  # most confident first
    located = cases[cases["kind"] == "worst_localised"]
    assert located["iou"].notna().all() and located["iou"].is_monotonic_increasing
    drawn = cases[cases["picture"].notna()]
    assert drawn.groupby("kind").size().max() <= 3
    assert all((out / p).is_file() for p in drawn["picture"])

    preds = pd.read_csv(out / "predictions.csv")
    boxes = [json.loads(b) for b in preds["boxes"]]
    assert all(b["confidence"] >= thr and b["class"] == "fracture" for film in boxes for b in film)

    page = (out / "report.html").read_text(encoding="utf-8")
    assert "Cases to review" in page and page.count("data:image/jpeg;base64,") == len(drawn)
    first = base64.b64decode(page.split("data:image/jpeg;base64,")[1].split("'")[0])
    assert first[:2] == b"\xff\xd8"  # a real JPEG
    # provenance in the header, before the first plot
    assert page.index(m["provenance"]["dataset"]["data_hash"]) < page.index("data:image/png")
    assert m["provenance"]["split"] == "test" and set(m["provenance"]["versions"]) == {
        "fracturekit",
        "ultralytics",
        "torch",
    }
