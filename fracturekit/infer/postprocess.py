"""Raw head outputs back to films: Ultralytics' NMS, then boxes and heatmaps from letterbox to film pixels."""

from __future__ import annotations

import cv2
import numpy as np

from fracturekit.core.options import NMS_IOU

MAX_DET = 300  # boxes kept per film, Ultralytics' predict and val default


def nms(raw: np.ndarray, conf: float, nc: int, iou: float = NMS_IOU) -> list[np.ndarray]:
    """Ultralytics' NMS on a raw (B, 4 + nc, anchors) head output -> per image (n, 6) x1 y1 x2 y2 conf cls."""
    import torch
    from ultralytics.utils.nms import non_max_suppression

    out = non_max_suppression(torch.from_numpy(raw), conf_thres=conf, iou_thres=iou, nc=nc, max_det=MAX_DET)
    return [o.numpy() for o in out]


def boxes_to_film(boxes: np.ndarray, scale: float, left: float, top: float, film_shape: tuple[int, ...]) -> np.ndarray:
    """(n, 6) letterboxed boxes -> film pixels: padding removed, scale undone, clipped to the film."""
    b = boxes.copy()
    h, w = film_shape[:2]
    b[:, [0, 2]] = ((b[:, [0, 2]] - left) / scale).clip(0, w)
    b[:, [1, 3]] = ((b[:, [1, 3]] - top) / scale).clip(0, h)
    return b


def map_to_film(cam: np.ndarray, scale: float, left: float, top: float, film_shape: tuple[int, ...]) -> np.ndarray:
    """A detector heatmap on the letterboxed input -> film pixels (the padding cut away, then resized)."""
    h, w = film_shape[:2]
    nh, nw = round(h * scale), round(w * scale)
    t, lft = int(top), int(left)
    return cv2.resize(cam[t : t + nh, lft : lft + nw], (w, h), interpolation=cv2.INTER_LINEAR)


def uncrop(cam: np.ndarray, film_shape: tuple[int, ...]) -> np.ndarray:
    """Place a classifier map (computed on the center square crop) back onto the whole film."""
    h, w = film_shape[:2]
    s = min(h, w)
    full = np.zeros((h, w), np.float32)
    top, left = (h - s) // 2, (w - s) // 2
    full[top : top + s, left : left + s] = cv2.resize(cam, (s, s), interpolation=cv2.INTER_LINEAR)
    return full


def coco_detections(boxes: np.ndarray, image_id: int) -> list[dict]:
    """(n, 6) film-pixel boxes as COCO results (xywh, category_id = class + 1, score) for pycocotools."""
    return [
        {
            "image_id": image_id,
            "category_id": int(b[5]) + 1,
            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
            "score": float(b[4]),
        }
        for b in boxes
    ]
