"""evaluate's detector half: boxes and image scores from the inference core, mAP from Ultralytics and pycocotools.

The boxes (at the core's SCORE_FLOOR 0.001, NMS IoU 0.7, at most 300 per film: Ultralytics' val settings)
and the image-level score (highest box confidence, 0 without a box; so every film, backgrounds included,
gets an AUROC) come from `fracturekit.infer`, the very path predict uses. Ultralytics `val` still reports
its own mAP/precision/recall on the same weights; pycocotools scores the core's boxes against a COCO ground
truth built from the YOLO labels, and `map_difference` shows how far the two are apart. They differ by more
than the PR-curve integration (see metrics.coco_eval): Ultralytics val pads each batch rectangle by half a
stride (ultralytics/data/build.py pad=0.5: a 160-px film runs at 192x192), predict and the core pad only to a
stride multiple (160x160). Measured on 49 phantom test films (25-epoch detector, imgsz 160): image scores up to
0.0175 apart; pycocotools mAP50-95 0.0761 on the core's boxes, 0.0696 on val's, Ultralytics' own 0.0685.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fracturekit.core.errors import UserError
from fracturekit.core.layout import NEGATIVE_CLASS, POSITIVE_CLASS, SPLITS, PreparedDataset
from fracturekit.core.options import NMS_IOU
from fracturekit.core.paths import rel_to
from fracturekit.core.progress import Progress
from fracturekit.data.imageio import HeaderError, image_header
from fracturekit.data.split import film_units
from fracturekit.evaluation import cases as C
from fracturekit.evaluation import metrics as M
from fracturekit.evaluation.cases import ModelScores
from fracturekit.evaluation.common import (
    THRESHOLD_SPLIT,
    EvalContext,
    ModelResult,
    films_sha256,
    labelled_confusion,
    subgroup_values,
)
from fracturekit.infer import scoring
from fracturekit.infer.model import Model, load_checkpoint
from fracturekit.infer.postprocess import MAX_DET, coco_detections
from fracturekit.infer.scoring import SCORE_FLOOR
from fracturekit.ingest.coco import coco_dict
from fracturekit.ingest.labels import canonical_label
from fracturekit.ingest.records import Record
from fracturekit.ingest.yolo import parse_yolo_rows


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
    for img in ds.det_images(split):
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


def ultralytics_val(model: Model, ds: PreparedDataset, split: str, device: str, save_dir: Path) -> Any:
    """Ultralytics val on `split` with the same weights, size and settings as the core: its DetMetrics."""
    kwargs = {
        "data": str(ds.data_yaml),
        "split": split,
        "imgsz": model.imgsz,
        "conf": SCORE_FLOOR,
        "iou": NMS_IOU,
        "max_det": MAX_DET,
        "device": device,
        "plots": False,
        "project": str(save_dir.parent.resolve()),  # relative: Ultralytics would re-root it under its runs_dir
        "name": save_dir.name,
        "exist_ok": True,
        "verbose": False,
        "workers": 0,
    }
    return load_checkpoint(model.weights).val(**kwargs)


def score_split(
    model: Model,
    ds: PreparedDataset,
    split: str,
    ids: dict[str, int],
    skipped: list[dict],
    progress: Progress | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Image scores (indexed by image id - 1) and COCO results for the films of `ids`, through the core.

    A film the ground truth could size but our reader cannot decode is reported in `skipped` and scores 0
    with no boxes: it stays in the set, so a missed fracture still counts.
    """
    folder = ds.det_dir / "images" / split
    paths = [folder / name for name in sorted(ids, key=ids.__getitem__)]
    scores, dets = np.zeros(len(ids)), []
    for p in scoring.score(paths, detector=model, label=f"detect {split}", progress=progress):
        i = ids[p.path.name]
        if p.error:
            skipped.append({"path": str(p.path), "model": "detector", "reason": f"{p.error}; scored 0"})
            continue
        scores[i - 1] = p.detector_score
        dets += coco_detections(p.boxes, i)
    return scores, dets


def image_labels(gt: dict) -> np.ndarray:
    """1 for images with at least one ground-truth box, else 0, indexed by image id - 1."""
    y = np.zeros(len(gt["images"]), int)
    for a in gt["annotations"]:
        y[a["image_id"] - 1] = 1
    return y


def check_detection_data(ds: PreparedDataset, split: str) -> None:
    """UserError unless the dataset has a detection half with images in `split`."""
    if not ds.data_yaml.is_file():
        raise UserError(f"{ds.data_yaml}: missing; re-run `fracturekit prepare` to write the detection dataset.")
    if not ds.det_images(split):
        if not any(ds.det_images(s) for s in SPLITS):
            raise UserError(
                f"{ds.root}: det/images holds no film in any split, so there is no box to score a detector on (its "
                "source had no boxes, as class folders have none); score a classify run with --classifier, or "
                "prepare a source with boxes (COCO, VOC, YOLO, FracAtlas)."
            )
        raise UserError(f"{ds.det_dir / 'images' / split}: no images; check --split or re-run prepare.")


def evaluate_detector(model: Model, ctx: EvalContext) -> ModelResult:
    """Ultralytics val + pycocotools on the core's boxes, image-level AUROC, threshold from THRESHOLD_SPLIT.

    Also writes ground_truth_coco.json and detections_coco.json (COCO results format, same image ids)
    into `out_dir`: COCOeval on these two files with maxDets [1, 10, 300] gives `pycocotools.map50_95`.
    """
    ds, split, out_dir, skipped = ctx.ds, ctx.split, ctx.out_dir, ctx.skipped  # evaluate() ran check_detection_data
    names = model.names
    m = ultralytics_val(model, ds, split, ctx.device, out_dir / f"ultralytics_val_{split}")
    gt, ids = coco_ground_truth(ds, split, names, skipped)
    s_img, coco_dets = score_split(model, ds, split, ids, skipped, ctx.progress)  # COCO-scored again per subgroup

    # Image-level threshold: chosen on the val split's detector scores, like the classifier's.
    if split == THRESHOLD_SPLIT:
        y_val, s_val = image_labels(gt), s_img
    elif ds.det_images(THRESHOLD_SPLIT):
        val_gt, val_ids = coco_ground_truth(ds, THRESHOLD_SPLIT, names, [])
        y_val = image_labels(val_gt)
        s_val = score_split(model, ds, THRESHOLD_SPLIT, val_ids, [], ctx.progress)[0]
    else:
        y_val, s_val = np.zeros(0, int), np.zeros(0)
    ultralytics = {
        "map50_95": float(m.box.map),
        "map50": float(m.box.map50),
        "precision": float(m.box.mp),
        "recall": float(m.box.mr),
        "per_class_ap": {names[int(c)]: float(m.box.maps[int(c)]) for c in names},
        "val_settings": {"conf": SCORE_FLOOR, "iou": NMS_IOU, "max_det": MAX_DET, "imgsz": model.imgsz},
    }
    run = str(model.run.root) if model.run is not None else None
    return detector_result(names, (gt, ids, s_img, coco_dets), (y_val, s_val), ctx, run, ultralytics)


def detector_result(
    names: dict[int, str],
    test: tuple[dict, dict[str, int], np.ndarray, list[dict]],
    val: tuple[np.ndarray, np.ndarray],
    ctx: EvalContext,
    run: str | None,
    ultralytics: dict[str, Any] | None,
) -> ModelResult:
    """Every detection output from the ground truth, image scores and COCO results of ctx.split and val's
    (image labels, image scores). Shared by a fracturekit run and outside detections (`evaluation.scores`).

    `test`: (COCO ground truth, file name -> image id, image score per id - 1, COCO results on those ids);
    `ultralytics`: Ultralytics val's numbers on the same weights, None for outside detections (no weights).
    """
    ds, split = ctx.ds, ctx.split
    gt, ids, s_img, coco_dets = test
    coco = M.coco_eval(gt, coco_dets, max_det=MAX_DET)
    _write_coco_files(ctx, gt, coco_dets)
    y_img = image_labels(gt)
    thr = _image_threshold(*val, ctx.threshold)
    id_to_name = {v: k for k, v in ids.items()}
    rel = [rel_to(ds.det_dir / "images" / split / id_to_name[i + 1], ds.root) for i in range(len(ids))]
    units = film_units(ctx.manifest, "output_det", rel)
    image_level = M.binary_summary(y_img, s_img, thr, ctx.bootstrap, ctx.seed, units)
    result = _detection_metrics(names, run, len(ids), (gt, coco_dets, coco), ultralytics, image_level, thr, ctx, rel)
    if ctx.by:
        result["subgroups"] = {
            col: _detection_subgroup(subgroup_values(ctx.manifest, col, "output_det", rel), gt, coco_dets, y_img, s_img,
                                     thr, units)
            for col in ctx.by
        }  # fmt: skip
    gt_by_image, dets_by_image = _by_image(gt, coco_dets)
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
    return ModelResult(
        result, frame, {"curves": {"detector (max box confidence)": {"y": y_img, "score": s_img}}}, scores
    )


def _write_coco_files(ctx: EvalContext, gt: dict, coco_dets: list[dict]) -> None:
    """ground_truth_coco.json (naming the images folder) and detections_coco.json: what COCOeval scored."""
    images_dir = (ctx.ds.det_dir / "images" / ctx.split).resolve()
    info = {"description": f"fracturekit {ctx.split} split ground truth", "images_dir": str(images_dir)}
    (ctx.out_dir / "ground_truth_coco.json").write_text(json.dumps({"info": info, **gt}))
    (ctx.out_dir / "detections_coco.json").write_text(json.dumps(coco_dets))


def _image_threshold(y_val: np.ndarray, s_val: np.ndarray, rule: M.ThresholdRule) -> float:
    """The image-level threshold chosen on the val split's detector scores, like the classifier's."""
    try:
        return M.choose_threshold(y_val, s_val, rule)
    except ValueError as exc:
        raise UserError(
            f"--threshold {rule.text}: cannot choose the detector threshold on the {THRESHOLD_SPLIT} split ({exc}); "
            "pass a fixed number such as --threshold 0.25."
        ) from exc


def _detection_metrics(
    names: dict[int, str],
    run: str | None,
    n_images: int,
    scored: tuple[dict, list[dict], dict[str, Any]],
    ultralytics: dict[str, Any] | None,
    image_level: dict[str, Any],
    thr: float,
    ctx: EvalContext,
    rel: list[str],
) -> dict[str, Any]:
    """metrics.json's detection section, subgroups aside: Ultralytics and pycocotools mAP, image-level numbers.

    `scored`: (COCO ground truth, COCO results, pycocotools' numbers on them).
    """
    gt, coco_dets, coco = scored
    # outside detections: no weights to run Ultralytics val on, so its numbers are null and per-class AP is COCOeval's
    ultra = ultralytics or {
        **dict.fromkeys(("map50_95", "map50", "precision", "recall", "val_settings")),
        "per_class_ap": coco["per_class_ap"],
    }
    return {
        "run": run,
        "classes": [names[i] for i in sorted(names)],
        "positive_class": POSITIVE_CLASS if POSITIVE_CLASS in names.values() else None,
        **ultra,
        "pycocotools": coco,
        "map_difference": {k: None if ultralytics is None else ultralytics[k] - coco[k] for k in ("map50_95", "map50")},
        "n_images": n_images,
        "n_boxes": len(gt["annotations"]),
        "n_detections": len(coco_dets),
        "films_sha256": films_sha256(rel),
        "image_score": "max box confidence (0 when no box)",
        "image_auroc": image_level["auroc"],
        "image_auroc_ci95": image_level["auroc_ci95"],
        "n_units": image_level["n_units"],
        "image_average_precision": image_level["average_precision"],
        "threshold": thr,
        "threshold_method": ctx.threshold.text,
        "image_level": image_level,
        "image_confusion_matrix_labelled": labelled_confusion(
            image_level["confusion_matrix"], [NEGATIVE_CLASS, POSITIVE_CLASS]
        ),
        "coco_files": {
            "ground_truth": "ground_truth_coco.json",
            "detections": "detections_coco.json",
            "max_dets": [1, 10, MAX_DET],
            # COCOeval.summarize() reads AP@[.5:.95] at maxDets 100: equal to ours while this is <= 100
            "most_boxes_per_image": int(np.bincount([d["image_id"] for d in coco_dets]).max()) if coco_dets else 0,
        },
    }


def _detection_subgroup(
    groups: np.ndarray,
    gt: dict,
    coco_dets: list[dict],
    y_img: np.ndarray,
    s_img: np.ndarray,
    thr: float,
    units: np.ndarray,
) -> dict[str, Any]:
    """pycocotools mAP and the image-level numbers per value of one --by column, at the overall threshold."""
    per_value = {}
    for value in sorted(set(groups.tolist())):
        mask = groups == value
        subset_ids = [i + 1 for i in np.flatnonzero(mask)]
        per_value[value] = {
            "pycocotools": M.coco_eval(gt, coco_dets, MAX_DET, image_ids=subset_ids),
            **M.binary_summary(y_img[mask], s_img[mask], thr, 200, 0, units[mask]),
        }
    return per_value


def _by_image(gt: dict, coco_dets: list[dict]) -> tuple[dict[int, list], dict[int, list]]:
    """Image id -> its ground-truth boxes (xywh), and -> its detections (xywh, score, category id)."""
    gt_by_image: dict[int, list] = {}
    for a in gt["annotations"]:
        gt_by_image.setdefault(a["image_id"], []).append(a["bbox"])
    dets_by_image: dict[int, list] = {}
    for d in coco_dets:
        dets_by_image.setdefault(d["image_id"], []).append((d["bbox"], float(d["score"]), d["category_id"]))
    return gt_by_image, dets_by_image


def _xyxy_dict(xywh: list[float]) -> dict[str, float]:
    x, y, w, h = xywh
    return {"x1": round(x, 1), "y1": round(y, 1), "x2": round(x + w, 1), "y2": round(y + h, 1)}


def _box_json(dets: list[tuple[list[float], float, int]], thr: float, names: dict[int, str]) -> str:
    """Boxes as `predict` writes them (x1 y1 x2 y2 confidence class), only those at or above `thr`, best first."""
    kept = sorted((d for d in dets if d[1] >= thr), key=lambda d: -d[1])
    return json.dumps([{**_xyxy_dict(b), "confidence": round(s, 4), "class": names[c - 1]} for b, s, c in kept])
