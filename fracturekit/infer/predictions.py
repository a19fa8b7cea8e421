"""predict's tables: one film's record, its predictions.csv row (written and read back) and the COCO export.

The CSV is the source of truth: rows are streamed to it film by film (a killed run keeps what it finished,
--resume reads it back), and predictions.json and predictions_coco.json are written from it at the end.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from fracturekit.core.errors import UserError
from fracturekit.infer.model import Model
from fracturekit.infer.scoring import Prediction

CSV_COLUMNS = (
    "path",
    "width",
    "height",
    "fracture_probability",
    "decision",
    "threshold",
    "score_source",
    "detector_score",
    "n_boxes",
    "boxes",
    "annotated",
    "cam",
    "error",
    "warnings",
    "note",
)
# A film from a PACS (predict --source dicomweb://...) is named by its UIDs instead of a path.
UID_COLUMNS = ("study_uid", "series_uid", "sop_uid")
PACS_CSV_COLUMNS = UID_COLUMNS + CSV_COLUMNS[1:]


def film_key(rec: dict[str, Any]) -> str:
    """What names a film in predictions.csv: its SOP Instance UID from a PACS, else its path."""
    return rec.get("sop_uid") or rec["path"]


def record(pred: Prediction, root: Path, det: Model | None, run_notes: list[str]) -> dict[str, Any]:
    """predict's record (a predictions.csv row) for one film: its boxes, scores to 6 decimals.

    The boxes are those the Scorer kept, from predict's `--conf` up (its `box_floor`): no second filter here.
    Scores are rounded to 6 decimals (at most 5e-7 off the core's float): fine for a table, and close enough
    for the evaluate == predict test's 1e-5.
    """
    boxes = [
        {
            "x1": round(float(b[0]), 1),
            "y1": round(float(b[1]), 1),
            "x2": round(float(b[2]), 1),
            "y2": round(float(b[3]), 1),
            "confidence": round(float(b[4]), 4),
            "class": det.names[int(b[5])] if det is not None else "",
        }
        for b in pred.boxes
    ]
    scored = pred.probability is not None
    return {
        "path": pred.path.relative_to(root).as_posix(),
        "width": pred.width,
        "height": pred.height,
        "fracture_probability": round(pred.probability, 6) if scored else None,
        "decision": pred.decision,
        "threshold": pred.threshold,
        "score_source": pred.score_source,
        "detector_score": round(pred.detector_score, 6) if pred.detector_score is not None else None,
        "n_boxes": len(boxes),
        "boxes": boxes,
        "annotated": "",
        "cam": [],
        "error": pred.error,
        "warnings": pred.warnings,
        "note": "; ".join(run_notes + pred.notes) if scored else "",
    }


def csv_row(rec: dict[str, Any]) -> dict[str, Any]:
    row = dict(rec)
    row["boxes"] = json.dumps(rec["boxes"])
    row["cam"] = ";".join(rec["cam"])
    row["warnings"] = "; ".join(rec["warnings"])
    return row


_INT_COLUMNS = ("width", "height", "n_boxes")
_FLOAT_COLUMNS = ("fracture_probability", "threshold", "detector_score")


def record_from_row(row: dict[str, str]) -> dict[str, Any]:
    """A predictions.csv row back as the record `predict` returns (the JSON is written from the CSV)."""
    rec: dict[str, Any] = dict(row)
    for col in _INT_COLUMNS:
        rec[col] = int(row[col]) if row[col] else (0 if col == "n_boxes" else None)
    for col in _FLOAT_COLUMNS:
        rec[col] = float(row[col]) if row[col] else None
    rec["boxes"] = json.loads(row["boxes"]) if row["boxes"] else []
    rec["cam"] = row["cam"].split(";") if row["cam"] else []
    rec["warnings"] = row["warnings"].split("; ") if row["warnings"] else []
    return rec


def read_rows(csv_path: Path) -> list[dict[str, Any]]:
    """The records in predictions.csv; a last line cut short by a killed run is dropped from the file."""
    data = csv_path.read_bytes()
    if data and not data.endswith(b"\n"):
        with csv_path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) not in (CSV_COLUMNS, PACS_CSV_COLUMNS):
            raise UserError(f"{csv_path}: not a predictions.csv of this fracturekit version; pass a new --out.")
        return [record_from_row(r) for r in reader]


def coco_predictions(records: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
    """The readable films and their kept boxes as one COCO dataset (`score` on each annotation, xywh pixels).

    pycocotools' COCO(), FiftyOne's COCODetectionDataset and supervision's DetectionDataset.from_coco read it;
    image ids are 1.. in predictions.csv order, `file_name` the film's path as given to --source (its SOP
    Instance UID for a film from a PACS).
    """
    cat = {n: i + 1 for i, n in enumerate(classes)}
    images, annotations = [], []
    for r in records:
        if r["error"]:
            continue
        image_id = len(images) + 1
        name = film_key(r)
        images.append({"id": image_id, "file_name": name, "width": r["width"], "height": r["height"]})
        for b in r["boxes"]:
            w, h = b["x2"] - b["x1"], b["y2"] - b["y1"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": cat[b["class"]],
                    "bbox": [b["x1"], b["y1"], round(w, 1), round(h, 1)],
                    "area": round(w * h, 1),
                    "iscrowd": 0,
                    "score": b["confidence"],
                }
            )
    categories = [{"id": i, "name": n} for n, i in cat.items()]
    return {"images": images, "annotations": annotations, "categories": categories}
