"""predict's settings: --resume refuses a folder predicted with other options; boxes are filtered at NMS only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fracturekit.core.errors import UserError
from fracturekit.core.outputs import write_record
from fracturekit.infer.postprocess import nms
from fracturekit.infer.predictions import CSV_COLUMNS
from fracturekit.predict import _resume_state

_BEFORE = {"detector": "det.pt", "classifier": None, "conf": 0.25, "iou": 0.7, "imgsz": None, "full_size": False}


@pytest.mark.parametrize(
    ("changed", "refused"),
    [
        ({}, None),  # the same models and options: resumes
        ({"iou": 0.5}, "iou 0.7, not 0.5"),  # another NMS IoU would give other boxes for the remaining films
        ({"conf": 0.5}, "conf 0.25, not 0.5"),  # another --conf: other boxes listed
        ({"imgsz": 320}, "imgsz None, not 320"),  # another input size: other scores
        ({"detector": "other.pt"}, "detector det.pt, not other.pt"),  # another model
        ({"full_size": True}, "--full-size False, not True"),  # annotated films drawn at another size
    ],
)
def test_resume_refuses_other_settings(tmp_path: Path, changed: dict, refused: str | None) -> None:
    write_record(tmp_path, "predict", ["predictions.csv"], _BEFORE)
    (tmp_path / "predictions.csv").write_text(",".join(CSV_COLUMNS) + "\na.png" + "," * (len(CSV_COLUMNS) - 1) + "\n")
    now = {**_BEFORE, **changed}
    if refused is None:
        assert _resume_state(tmp_path, now)[1] == {"a.png"}
    else:
        with pytest.raises(UserError, match=refused):
            _resume_state(tmp_path, now)


def test_resume_of_a_folder_recorded_before_full_size(tmp_path: Path) -> None:
    """A folder whose record predates the full_size setting was drawn reduced: it resumes without --full-size only."""
    write_record(tmp_path, "predict", ["predictions.csv"], {k: v for k, v in _BEFORE.items() if k != "full_size"})
    (tmp_path / "predictions.csv").write_text(",".join(CSV_COLUMNS) + "\na.png" + "," * (len(CSV_COLUMNS) - 1) + "\n")
    assert _resume_state(tmp_path, _BEFORE)[1] == {"a.png"}
    with pytest.raises(UserError, match="--full-size False, not True"):
        _resume_state(tmp_path, {**_BEFORE, "full_size": True})


def test_nms_keeps_only_boxes_above_conf() -> None:
    """Why predictions.record does not filter by --conf again: the Scorer's NMS at --conf already did."""
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 1, (2, 6, 500)).astype(np.float32)  # (B, 4 + nc, anchors), two classes
    raw[:, :4] *= 64
    for conf in (0.25, 0.9):
        kept = nms(raw, conf, 2)
        assert sum(len(k) for k in kept) > 0 and all((k[:, 4] > conf).all() for k in kept)
