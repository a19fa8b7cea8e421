"""report.html is self-contained: it parses, and every plot is an embedded base64 PNG."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from fracturekit.evaluate import classification_report, nan_to_none
from fracturekit.evaluation import metrics as M
from fracturekit.evaluation.calibration import reliability_bins
from fracturekit.evaluation.report import summary_table, write_report


class _Collector(HTMLParser):
    """Collect <img src> values and every external reference (src/href) the page makes."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("src", "href") and value and not value.startswith("data:"):
                self.external.append(value)
            if tag == "img" and key == "src" and value:
                self.images.append(value)


def _metrics(with_detection: bool) -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    p1 = np.clip(0.3 * y + rng.uniform(0, 0.7, 80), 0.01, 0.99)
    probs = np.stack([p1, 1 - p1], axis=1)  # class 0 'fracture' is positive
    cls, cal = classification_report(
        ["fracture", "no_fracture"], y[:40], probs[:40], y[40:], probs[40:], "youden", 50, 0
    )
    cls["run"] = "runs/classify/tiny"
    cls["subgroups"] = {"region": {"hand": M.binary_summary(1 - y[40:60], cal[:20, 0], cls["threshold"], 20)}}
    metrics = {"data": "ds", "out": "eval", "split": "test", "threshold_split": "val", "classification": cls}
    plots = {
        "curves": {"classifier": {"y": 1 - y[40:], "score": cal[:, 0]}},
        "reliability": {
            "before": reliability_bins(probs[40:], y[40:]),
            "after": reliability_bins(cal, y[40:]),
            "ece_before": cls["ece_before"],
            "ece_after": cls["ece_after"],
        },
        "cls_confusion": {"matrix": cls["confusion_matrix"], "labels": ["no_fracture", "fracture"]},
    }
    if with_detection:
        gt = {
            "images": [{"id": 1, "width": 64, "height": 64}, {"id": 2, "width": 64, "height": 64}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "area": 100, "iscrowd": 0}
            ],
            "categories": [{"id": 1, "name": "fracture"}],
        }
        coco = M.coco_eval(gt, [{"image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 10], "score": 0.8}])
        image_level = M.binary_summary(np.array([1, 0]), np.array([0.8, 0.0]), 0.5, 20)
        metrics["detection"] = {
            "run": "runs/detect/tiny",
            "classes": ["fracture"],
            "map50_95": 0.995,
            "map50": 0.995,
            "precision": 1.0,
            "recall": 1.0,
            "per_class_ap": {"fracture": 0.995},
            "pycocotools": coco,
            "map_difference": {"map50_95": 0.995 - coco["map50_95"], "map50": 0.995 - coco["map50"]},
            "n_images": 2,
            "n_boxes": 1,
            "image_auroc": image_level["auroc"],
            "image_auroc_ci95": image_level["auroc_ci95"],
            "image_average_precision": image_level["average_precision"],
            "threshold": 0.5,
            "threshold_method": "youden",
            "image_level": image_level,
        }
        plots["curves"]["detector"] = {"y": np.array([1, 0]), "score": np.array([0.8, 0.0])}
    return nan_to_none(metrics), plots


@pytest.mark.parametrize(
    ("with_detection", "n_images"),
    [
        (False, 3),  # classifier only: ROC/PR, confusion matrix, reliability diagram
        (True, 3),  # both models: the detector joins the ROC/PR figure
    ],
)
def test_report_renders_with_embedded_pngs(tmp_path: Path, with_detection: bool, n_images: int) -> None:
    metrics, plots = _metrics(with_detection)
    path = write_report(metrics, plots, tmp_path / "report.html")
    parser = _Collector()
    parser.feed(path.read_text(encoding="utf-8"))
    assert parser.external == []  # opens offline: nothing linked
    assert len(parser.images) == n_images
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    text = path.read_text(encoding="utf-8")
    assert "by region" in text
    assert ("trapezoid" in text) == with_detection  # the mAP difference is explained where mAP is shown


def test_summary_table_prints_headline_numbers() -> None:
    metrics, _ = _metrics(True)
    console = Console(record=True, width=120)
    console.print(summary_table(metrics))
    out = console.export_text()
    assert f"{metrics['classification']['auroc']:.3f}" in out
    assert "0.995 / 1.000" in out  # Ultralytics / pycocotools mAP50-95 side by side
