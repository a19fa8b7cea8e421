"""fracturekit.infer: the positive class rule, and the detector's image score at the floor, on a fake network."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from fracturekit.infer.model import Model
from fracturekit.infer.policy import positive_index
from fracturekit.infer.preprocess import load_item
from fracturekit.infer.scoring import SCORE_FLOOR, Scorer


@pytest.mark.parametrize(
    ("names", "recorded", "want"),
    [
        (["fracture", "no_fracture"], None, 0),  # our own classes: 'fracture' wherever it sorts
        (["negative", "positive"], None, 1),  # binary without 'fracture': the second (sorted) class, as evaluate
        (["dislocation", "fracture", "normal"], None, 1),  # multi-class with 'fracture': that class
        (["radius", "scaphoid", "ulna"], None, None),  # multi-class without it: none
        (["fracture", "no_fracture"], "no_fracture", 1),  # the class evaluate recorded wins
        (["a", "b"], "fracture", None),  # a recorded class the model lacks: none, never a guess
    ],
)
def test_positive_index(names: list[str], recorded: str | None, want: int | None) -> None:
    assert positive_index(names, recorded) == want


class _FakeSession:
    """onnxruntime-like: one box per film at the centre, its confidence = the film's centre pixel / 255."""

    def get_inputs(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(name="images")]

    def run(self, _names: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds["images"]
        b, _, h, w = x.shape
        raw = np.zeros((b, 5, 1), np.float32)  # (B, 4 + nc, anchors): xywh in input pixels, then class scores
        raw[:, :4, 0] = [w / 2, h / 2, 10, 10]
        raw[:, 4, 0] = x[:, 0, h // 2, w // 2]
        return [raw]


@pytest.mark.parametrize(
    ("gray", "score", "n_boxes"),
    [
        (179, 179 / 255, 1),  # a box: the image score is its confidence, whatever a display --conf would show
        (0, 0.0, 0),  # confidence 0 < SCORE_FLOOR: no box, image score 0
    ],
)
def test_detector_image_score_at_floor(tmp_path: Path, gray: int, score: float, n_boxes: int) -> None:
    det = Model("detect", "onnx", Path("fake.onnx"), {0: "fracture"}, 64, 32, None, None, None, _FakeSession())
    film = tmp_path / "film.png"
    cv2.imwrite(str(film), np.full((64, 96), gray, np.uint8))
    (pred,) = Scorer.build(det, None)([load_item(0, film, det, None)])
    assert pred.detector_score == pytest.approx(score, abs=1e-6) and len(pred.boxes) == n_boxes
    assert pred.score_source == "detector" and pred.probability == pred.detector_score
    assert pred.decision == ("fracture" if score >= 0.5 else "no_fracture")  # the 0.5 default: no metrics.json
    if n_boxes:  # back in film pixels: the 96 x 64 film was scaled by 2/3 to 64 x 43 and padded 10 px on top
        np.testing.assert_allclose(pred.boxes[0, :4], [27 * 1.5, 17 * 1.5, 37 * 1.5, 27 * 1.5], atol=0.01)
    assert SCORE_FLOOR == 0.001
