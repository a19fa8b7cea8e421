"""Cases to review: the films a model got most confidently wrong, its worst-localised fractures, and some hits.

`evaluate` scores every film; a reader judging the model wants to see the films behind the numbers.
Per model, at the threshold chosen on the validation split:
- `false_negative`: fractured films scored below the threshold, lowest score (most confident miss) first;
- `false_positive`: films without fracture scored at or above it, highest score first;
- `worst_localised` (detector): films found at image level whose fracture boxes are worst covered: for each
  ground-truth box the best IoU of a predicted box at or above the threshold, the film's `iou` being the
  lowest of these; lowest first;
- `true_positive`: fractured films found, highest score first (worst-localised ones left out), as examples.
cases.csv lists every false negative and false positive and the first `n` of the other two kinds; the first
`n` of each kind get a picture in `cases/` (the film, ground-truth and predicted boxes with confidences, a
legend, the classifier's probability and its EigenCAM beside the film) that report.html embeds.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pandas as pd

from fracturekit.core.layout import NEGATIVE_CLASS, POSITIVE_CLASS
from fracturekit.data.imageio import ImageReadError, read_image
from fracturekit.infer import annotate as A

if TYPE_CHECKING:
    from fracturekit.infer.model import Model

COLUMNS = ("path", "model", "label", "score", "threshold", "kind", "iou", "picture")
DEFAULT_N = 8
_MAX_SIDE = 640  # case pictures are embedded in report.html: 640 px keeps ~30 of them near 2 MB
_MAX_BOXES = 10  # predicted boxes drawn per film (the highest-scoring ones)


@dataclass
class ModelScores:
    """One model's image-level results on the evaluated split, plus what its pictures need.

    `paths` are dataset-relative; `score` is the calibrated probability (classifier) or the highest box
    confidence (detector); `iou` the film's worst ground-truth box coverage (NaN where it does not apply).
    """

    model: str  # "classifier" | "detector"
    paths: list[str]
    y: np.ndarray
    score: np.ndarray
    threshold: float
    iou: np.ndarray | None = None
    run: str | None = None  # the run folder (classifier: set when it has PyTorch weights, for EigenCAM)
    extra: dict[str, Any] = field(default_factory=dict)


def select(y: np.ndarray, score: np.ndarray, threshold: float, iou: np.ndarray | None, n: int) -> list[tuple[int, str]]:
    """(film index, kind) in review order: every FN and FP, then the first `n` worst-localised and true positives.

    Ties are broken by film index so the order is stable across runs.
    """
    y, score = np.asarray(y, int), np.asarray(score, float)
    idx = np.arange(len(y))
    hit = score >= threshold
    fn = idx[(y == 1) & ~hit]
    fp = idx[(y == 0) & hit]
    tp = idx[(y == 1) & hit]
    out = [(int(i), "false_negative") for i in fn[np.lexsort((fn, score[fn]))]]
    out += [(int(i), "false_positive") for i in fp[np.lexsort((fp, -score[fp]))]]
    worst: list[int] = []
    if iou is not None:
        located = tp[~np.isnan(iou[tp])]
        worst = [int(i) for i in located[np.lexsort((located, iou[located]))][:n]]
        out += [(i, "worst_localised") for i in worst]
    rest = np.asarray([i for i in tp if i not in set(worst)], int)
    out += [(int(i), "true_positive") for i in rest[np.lexsort((rest, -score[rest]))][:n]]
    return out


def worst_box_iou(gt_xywh: list[list[float]], pred_xywh: list[list[float]]) -> float:
    """The lowest, over ground-truth boxes, of the best IoU any predicted box reaches (NaN without truth).

    IoU by pycocotools (`mask.iou` on xywh boxes), the same computation COCOeval matches with.
    """
    if not gt_xywh:
        return float("nan")
    if not pred_xywh:
        return 0.0
    from pycocotools import mask as mask_utils

    ious = mask_utils.iou(np.asarray(pred_xywh, float), np.asarray(gt_xywh, float), [0] * len(gt_xywh))
    return float(np.asarray(ious).reshape(len(pred_xywh), len(gt_xywh)).max(axis=0).min())


def _xyxy(b: list[float]) -> tuple[float, float, float, float]:
    return b[0], b[1], b[0] + b[2], b[1] + b[3]


def _film_boxes(
    rel: str, ds_root: Path, manifest_boxes: dict[str, list], det: ModelScores | None
) -> tuple[list[list[float]], list[tuple[list[float], float]], bool]:
    """Ground truth (xywh) and detector boxes ((xywh, score), best first) for a film, and whether a detector ran.

    A detector film's truth comes from its label file (as scored); a classifier film's from the manifest,
    and its detector boxes from the detector film of the same manifest row when a detector was evaluated.
    """
    gt = [[b[1], b[2], b[3] - b[1], b[4] - b[2]] for b in manifest_boxes.get(rel, [])]
    if det is None:
        return gt, [], False
    det_rel = det.extra["det_path_of"].get(rel, rel)
    image_id = det.extra["ids"].get(Path(det_rel).name)
    if image_id is None:
        return gt, [], False
    preds = [(d[0], d[1]) for d in sorted(det.extra["dets_by_image"].get(image_id, []), key=lambda d: -d[1])]
    return det.extra["gt_by_image"].get(image_id, gt), preds, True


def write(
    out_dir: Path,
    ds_root: Path,
    manifest: pd.DataFrame,
    models: list[ModelScores],
    n: int = DEFAULT_N,
    classifier: Model | None = None,
) -> pd.DataFrame:
    """Write cases.csv and the first `n` pictures per model and kind into `out_dir/cases/`; return the table.

    `classifier`: the model evaluate loaded (PyTorch), whose EigenCAM goes beside the classifier's pictures.
    """

    manifest_boxes, det_path_of = _manifest_maps(manifest)
    det = next((m for m in models if m.model == "detector"), None)
    if det is not None:
        det.extra["det_path_of"] = det_path_of
    cls = next((m for m in models if m.model == "classifier"), None)
    table = pd.DataFrame(_case_rows(models, n), columns=[*COLUMNS, "rank_in_kind"])
    drawn = table[table["picture"] != ""]
    if len(drawn):
        (out_dir / "cases").mkdir(exist_ok=True)
    cams = _classifier_cams(classifier, drawn, ds_root) if cls is not None and cls.run and classifier else {}
    cls_score = dict(zip(cls.paths, cls.score, strict=True)) if cls is not None else {}
    cls_path_of = {v: k for k, v in det_path_of.items()}
    for row in drawn.itertuples():
        try:
            film = read_image(ds_root / row.path).pixels
        except ImageReadError:  # scored earlier, unreadable now (changed on disk): listed, without a picture
            table.loc[row.Index, "picture"] = ""
            continue
        gt, preds, has_det = _film_boxes(row.path, ds_root, manifest_boxes, det)
        p_cls = cls_score.get(row.path, cls_score.get(cls_path_of.get(row.path, ""), None))
        boxes = _drawn_boxes(gt, preds, has_det, det.threshold if det is not None else None)
        lines = _caption(row, p_cls, cls, preds if has_det else None, det, bool(gt))
        picture = A.annotate(film, boxes, lines, max_side=_MAX_SIDE)
        cam = cams.get(row.path)
        if cam is not None:
            picture = _side_by_side(picture, _cam_panel(film, cam))
        cv2.imwrite(str(out_dir / row.picture), picture, [cv2.IMWRITE_JPEG_QUALITY, 85])
    table = table.drop(columns="rank_in_kind")
    table.to_csv(out_dir / "cases.csv", index=False)
    return table


def _case_rows(models: list[ModelScores], n: int) -> list[dict[str, Any]]:
    """cases.csv's rows in review order, per model; the first `n` of each kind named a picture file."""
    rows: list[dict[str, Any]] = []
    for m in models:
        counts: dict[str, int] = {}
        for i, kind in select(m.y, m.score, m.threshold, m.iou, n):
            counts[kind] = counts.get(kind, 0) + 1
            iou = float(m.iou[i]) if m.iou is not None and kind in ("worst_localised", "true_positive") else None
            rows.append(
                {
                    "path": m.paths[i],
                    "model": m.model,
                    "label": POSITIVE_CLASS if m.y[i] else NEGATIVE_CLASS,
                    "score": float(m.score[i]),
                    "threshold": m.threshold,
                    "kind": kind,
                    "iou": iou,
                    "picture": f"cases/{m.model}_{kind}_{counts[kind]:02d}.jpg" if counts[kind] <= n else "",
                    "rank_in_kind": counts[kind],
                }
            )
    return rows


def _drawn_boxes(
    gt: list[list[float]], preds: list[tuple[list[float], float]], has_det: bool, thr: float | None
) -> list[A.Box]:
    """A picture's boxes: the truth, the detector's boxes at or above `thr` (at most _MAX_BOXES), or else its
    best box marked as below the threshold."""
    boxes = [A.Box(_xyxy(b), A.TRUTH, "truth") for b in gt]
    above = [(b, s) for b, s in preds if thr is not None and s >= thr][:_MAX_BOXES]
    boxes += [A.Box(_xyxy(b), A.PREDICTED, f"{s:.2f}") for b, s in above]
    if has_det and not above and preds:
        b, s = preds[0]
        boxes.append(A.Box(_xyxy(b), A.BELOW, f"best {s:.2f} < {thr:.2f}"))
    return boxes


def _caption(
    row: Any,
    p_cls: float | None,
    cls: ModelScores | None,
    preds: list[tuple[list[float], float]] | None,
    det: ModelScores | None,
    has_truth: bool,
) -> list[list[tuple[str, tuple[int, int, int]]]]:
    """A picture's caption lines: the case and its truth; each model's call against its threshold (`preds`:
    the detector's boxes, None where no detector ran on the film) and the IoU; the legend of the boxes drawn."""
    mistake = row.kind in ("false_negative", "false_positive")
    title = f"{row.kind.replace('_', ' ')} #{row.rank_in_kind} ({row.model})"
    lines = [[(title, A.POSITIVE if mistake else A.NEGATIVE), (f"truth: {row.label}", A.NEUTRAL)]]
    evidence = []
    if p_cls is not None and cls is not None:
        call = POSITIVE_CLASS if p_cls >= cls.threshold else NEGATIVE_CLASS
        evidence.append((f"classifier p {_vs(p_cls, cls.threshold)} -> {call}", _call_colour(call)))
    if preds is not None and det is not None:
        best = preds[0][1] if preds else 0.0
        call = POSITIVE_CLASS if best >= det.threshold else NEGATIVE_CLASS
        evidence.append((f"detector best box {_vs(best, det.threshold)} -> {call}", _call_colour(call)))
    if row.iou is not None and not pd.isna(row.iou):
        evidence.append((f"worst truth-box IoU {row.iou:.2f}", A.NEUTRAL))
    lines.append(evidence)
    legend = [("truth", A.TRUTH)] if has_truth else []
    if preds is not None:
        legend += [("predicted box >= thr", A.PREDICTED), ("best box < thr", A.BELOW)]
    if legend:
        lines.append(legend)
    return lines


def _cam_panel(film: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """The classifier's EigenCAM over the part of the film it saw, captioned, for beside the case picture."""
    seen = A.centre_crop(*film.shape[:2])
    return A.annotate(
        A.heatmap_panel(film, cam, seen),
        caption=[[("classifier EigenCAM: where it looked", A.NEUTRAL)]],
        max_side=_MAX_SIDE,
    )


def _vs(score: float, threshold: float) -> str:
    """'0.538 vs thr 0.412', with as many digits as it takes for the two to print differently."""
    for digits in range(3, 9):
        a, b = f"{score:.{digits}f}", f"{threshold:.{digits}f}"
        if a != b:
            break
    return f"{a} vs thr {b}"


def _call_colour(call: str) -> tuple[int, int, int]:
    return A.POSITIVE if call == POSITIVE_CLASS else A.NEGATIVE


def _manifest_maps(manifest: pd.DataFrame) -> tuple[dict[str, list], dict[str, str]]:
    """Dataset-relative film path -> manifest boxes, and classifier film path -> detector film path."""
    boxes: dict[str, list] = {}
    det_of: dict[str, str] = {}
    cols = set(manifest.columns)
    for row in manifest.to_dict("records"):
        parsed = []
        raw = row.get("boxes")
        if isinstance(raw, str) and raw.strip():
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = []
        for col in ("output_cls", "output_det"):
            if col in cols and isinstance(row.get(col), str):
                boxes[Path(row[col]).as_posix()] = parsed
        if isinstance(row.get("output_cls"), str) and isinstance(row.get("output_det"), str):
            det_of[Path(row["output_cls"]).as_posix()] = Path(row["output_det"]).as_posix()
    return boxes, det_of


def _side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two BGR pictures next to each other, the shorter padded at the bottom with the band colour."""
    h = max(left.shape[0], right.shape[0])

    def pad(im: np.ndarray) -> np.ndarray:
        return cv2.copyMakeBorder(im, 0, h - im.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=A.BAND)

    gap = np.full((h, 8, 3), A.BAND, np.uint8)
    return np.hstack([pad(left), gap, pad(right)])


def _classifier_cams(model: Model, drawn: pd.DataFrame, ds_root: Path) -> dict[str, np.ndarray]:
    """EigenCAM maps (film pixels) of the classifier already loaded (PyTorch) for the films it has pictures of."""
    from fracturekit.infer.scoring import classifier_heatmaps

    paths = sorted(set(drawn.loc[drawn["model"] == "classifier", "path"]))
    if not paths or not model.cam:  # EigenCAM needs the PyTorch graph
        return {}
    films = {}
    for p in paths:
        with contextlib.suppress(ImageReadError):  # such a film gets no picture at all (see write)
            films[p] = read_image(ds_root / p).pixels
    return dict(zip(films, classifier_heatmaps(model, list(films.values())), strict=True))
