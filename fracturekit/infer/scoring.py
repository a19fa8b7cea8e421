"""Decoded films -> `Prediction`s: batching, forward pass, NMS, image score, calibrated probability, decision.

One place for the per-film arithmetic, so that predict (which then writes images and rows), evaluate
(which scores the same films for its metrics) and export's accuracy check give the same numbers.
The detector's image score is its highest box confidence over all classes at SCORE_FLOOR, whatever
confidence predict's `--conf` shows boxes at, so a threshold tuned by evaluate means the same in predict.
It is read off the raw head output (the best anchor's best class): NMS never suppresses the top box, so this
equals the best box after NMS at SCORE_FLOOR, without running NMS over the thousands of anchors above 0.001
that an untrained or uncertain detector has (on a random-init YOLOv8n at 640, NMS at 0.001 cut predict from
22 to 14 img/s in bench/predict_bench.py). Boxes themselves are kept from `box_floor` up: SCORE_FLOOR for
evaluate (mAP counts every box), predict's `--conf` for predict.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fracturekit.core.layout import POSITIVE_CLASS
from fracturekit.core.options import NMS_IOU
from fracturekit.core.progress import Progress
from fracturekit.core.yolo_env import cpu_threads
from fracturekit.data.imageio import MAX_PIXELS
from fracturekit.evaluation.calibration import apply_temperature
from fracturekit.infer.model import Model
from fracturekit.infer.policy import Policy, negative_label, policy, positive_index
from fracturekit.infer.postprocess import boxes_to_film, map_to_film, nms, uncrop
from fracturekit.infer.preprocess import Item, classify_host_transform, load_item, pad_to

SCORE_FLOOR = 0.001  # Ultralytics' val conf: every box that can count towards mAP or the image score is kept
PREFETCH = 8  # films decoded ahead of inference: keeps both cores busy on a 2-core CPU (bench/predict_bench.py)


@dataclass
class Prediction:
    """One film's result. Scores are unrounded; `boxes` are film pixels (x1 y1 x2 y2 conf cls)."""

    index: int  # position in the list of films scored
    path: Path
    error: str = ""  # why the film was not scored (unreadable), empty when fine
    warnings: list[str] = field(default_factory=list)  # reader notes such as a truncated JPEG
    width: int | None = None
    height: int | None = None
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), np.float32))  # at the Scorer's box_floor
    detector_score: float | None = None  # max box confidence at SCORE_FLOOR, else 0; None without a detector
    probs_raw: np.ndarray | None = None  # classifier softmax (C,), ordered like its class ids
    probs: np.ndarray | None = None  # the same after the policy's temperature
    probability: float | None = None  # the score the decision is taken on
    score_source: str = ""  # "classifier" | "detector"
    threshold: float | None = None
    decision: str = ""
    notes: list[str] = field(default_factory=list)
    gray: np.ndarray | None = field(default=None, repr=False)  # the decoded film, for drawing
    reduction: int = 1  # film pixels per pixel of `gray` a side: boxes are drawn on it divided by this
    cls_map: np.ndarray | None = field(default=None, repr=False)  # EigenCAM maps in `gray` pixels, when asked
    det_map: np.ndarray | None = field(default=None, repr=False)


def default_batch(models: Sequence[Model | None]) -> int:
    """Films per forward call: the largest of the models' own (`Backend.default_batch`: 8 with PyTorch, 1 with
    ONNX Runtime on CPU, 1 with OpenVINO, a call per stream at once), so that a batched backend is not fed film
    by film."""
    return max((m.default_batch for m in models if m is not None), default=1)


def calls_at_once(models: Sequence[Model | None], batch: int) -> int:
    """Scorer calls `stream` runs at once: the largest of the models' `Model.calls(batch)` (each model lets no more
    of its own forward calls run at once than it allows). OpenVINO at its default batch 1 gets one call per
    stream, ONNX Runtime on CPU one single-thread call per core, each from its own thread, so a core starts its
    next film while the films before are post-processed (NMS, boxes) instead of waiting for that between batches.
    EigenCAM needs PyTorch models (one call at a time): with it, calls run one at a time."""
    return max(1, max((m.calls(batch) for m in models if m is not None), default=1))


def detect_batch(
    model: Model, items: list[Item], cam: bool = False, iou: float = NMS_IOU, box_floor: float = SCORE_FLOOR
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray | None]]:
    """Boxes in film pixels from `box_floor` up, image scores (see the module docstring) and EigenCAM maps
    when asked, for a batch of decoded films."""
    shape = (max(i.det_in.shape[0] for i in items), max(i.det_in.shape[1] for i in items))  # type: ignore[union-attr]
    ims, extra = [], []
    for it in items:
        im, off = pad_to(it.det_in, shape)  # type: ignore[arg-type]
        ims.append(im)
        extra.append(off)
    x = model.inputs(ims)
    maps: list[np.ndarray | None] = [None] * len(items)
    if cam and model.cam:
        from fracturekit.infer.cam import eigencam

        raw, cams = eigencam(model.net, x, model.device)
    else:
        raw, cams = model.forward(x), None
    nc = len(model.names)
    best = raw[:, 4 : 4 + nc, :].max(axis=(1, 2))
    scores = np.where(best > SCORE_FLOOR, best, 0.0)  # NMS keeps candidates strictly above its conf_thres
    boxes = []
    for k, (it, d, off) in enumerate(zip(items, nms(raw, box_floor, nc, iou), extra, strict=True)):
        left, top = it.det_pad[0] + off[0], it.det_pad[1] + off[1]
        # in the film's own pixels, also when it was decoded reduced: gray pixel x covers film pixels [x*r, (x+1)*r)
        boxes.append(boxes_to_film(d, it.det_scale / it.reduction, left, top, it.film_shape))
        if cams is not None:
            maps[k] = map_to_film(cams[k], it.det_scale, left, top, it.gray.shape)  # type: ignore[union-attr]
    return boxes, scores, maps


def classify_batch(model: Model, items: list[Item], cam: bool = False) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Softmax probabilities (B, C) for a batch (and EigenCAM maps in film pixels when asked)."""
    x = model.inputs([it.cls_in for it in items])  # type: ignore[misc]
    maps: list[np.ndarray | None] = [None] * len(items)
    if cam and model.cam:
        from fracturekit.infer.cam import eigencam

        probs, cams = eigencam(model.net, x, model.device)
        for k, it in enumerate(items):
            maps[k] = uncrop(cams[k], it.gray.shape)  # type: ignore[union-attr]
    else:
        probs = model.forward(x)
    return probs, maps


def classifier_heatmaps(model: Model, grays: list[np.ndarray], batch: int = 8) -> list[np.ndarray]:
    """EigenCAM of a PyTorch classifier for each gray film, in film pixels (0 outside the centre crop it sees)."""
    tf = classify_host_transform(model.imgsz, None)
    items = [Item(i, Path(), gray=g, cls_in=tf(g)) for i, g in enumerate(grays)]
    maps: list[np.ndarray] = []
    for k in range(0, len(items), batch):
        maps += classify_batch(model, items[k : k + batch], cam=True)[1]  # type: ignore[arg-type]
    return maps


@dataclass
class Scorer:
    """Scores decoded films with the loaded models and each one's decision policy."""

    det: Model | None
    clf: Model | None
    det_pol: Policy | None
    clf_pol: Policy | None
    pos_idx: int | None  # the classifier's positive class; None: it has none, the detector decides
    cam: bool = False
    iou: float = NMS_IOU
    box_floor: float = SCORE_FLOOR  # boxes kept from this confidence up (the image score is always at SCORE_FLOOR)

    @classmethod
    def build(
        cls,
        det: Model | None,
        clf: Model | None,
        cam: bool = False,
        iou: float = NMS_IOU,
        box_floor: float = SCORE_FLOOR,
    ) -> Scorer:
        loaded = [m.metrics for m in (det, clf) if m is not None]
        det_pol = policy(det, loaded) if det is not None else None
        clf_pol = policy(clf, loaded) if clf is not None else None
        pos_idx = None
        if clf is not None and clf_pol is not None:
            pos_idx = positive_index([clf.names[i] for i in sorted(clf.names)], clf_pol.positive)
        return cls(det, clf, det_pol, clf_pol, pos_idx, cam, iou, box_floor)

    def __call__(self, items: list[Item]) -> list[Prediction]:
        """One Prediction per item, in order; an unreadable item keeps its error and no scores."""
        det, clf, det_pol, clf_pol = self.det, self.clf, self.det_pol, self.clf_pol
        good = [it for it in items if it.gray is not None]
        boxes: list[np.ndarray] = []
        scores = np.zeros(len(good), np.float32)
        det_maps: list[np.ndarray | None] = [None] * len(good)
        cls_maps: list[np.ndarray | None] = [None] * len(good)
        raw = cal = np.zeros((len(good), 0), np.float32)
        if good and det is not None:
            boxes, scores, det_maps = detect_batch(det, good, self.cam, self.iou, self.box_floor)
        if good and clf is not None:
            raw, cls_maps = classify_batch(clf, good, self.cam)
            temperature = clf_pol.temperature if clf_pol is not None else 1.0
            cal = apply_temperature(raw, temperature) if temperature != 1.0 else raw
        done = {it.index: k for k, it in enumerate(good)}
        names = [clf.names[i] for i in sorted(clf.names)] if clf is not None else None
        out = []
        for it in items:
            pred = Prediction(it.index, it.path, error=it.error, warnings=it.warnings)
            out.append(pred)
            k = done.get(it.index)
            if k is None:
                continue
            pred.gray, pred.cls_map, pred.det_map = it.gray, cls_maps[k], det_maps[k]
            pred.reduction, (pred.height, pred.width) = it.reduction, it.film_shape
            if det is not None:
                pred.boxes = boxes[k]
                pred.detector_score = float(scores[k])
            if clf is not None:
                pred.probs_raw, pred.probs = raw[k], cal[k]
            if clf is not None and clf_pol is not None and self.pos_idx is not None:
                pred.probability, pol, pred.score_source = float(cal[k][self.pos_idx]), clf_pol, "classifier"
                positive = clf.names[self.pos_idx]
            elif det_pol is not None:
                pred.probability, pol, pred.score_source = pred.detector_score, det_pol, "detector"
                positive = POSITIVE_CLASS
            else:
                continue  # a classifier without a positive class, alone: probabilities only (evaluate's multi-class)
            pred.threshold = pol.threshold
            pred.decision = positive if pred.probability >= pol.threshold else negative_label(names, positive)
            pred.notes = list(pol.notes)
        return out


def batches(
    paths: list[Path],
    todo: list[int],
    batch: int,
    pool: ThreadPoolExecutor,
    load: Callable[[int, Path], Item],
    ahead: int = PREFETCH,
) -> Iterator[list[Item]]:
    """Yield decoded batches while the next films (at least `ahead`, whole batches) decode in the pool."""
    chunks = [todo[i : i + batch] for i in range(0, len(todo), batch)]
    depth = max(2, -(-ahead // batch))  # batches in flight, the one being yielded included
    queued: deque[list[Future[Item]]] = deque()
    for k in range(len(chunks)):
        while len(queued) < depth and k + len(queued) < len(chunks):
            queued.append([pool.submit(load, i, paths[i]) for i in chunks[k + len(queued)]])
        yield [f.result() for f in queued.popleft()]


def stream(
    scorer: Scorer,
    paths: list[Path],
    pool: ThreadPoolExecutor,
    batch: int,
    todo: list[int] | None = None,
    threads: int | None = None,
    max_pixels: int | None = MAX_PIXELS,
    min_side: int | None = None,
) -> Iterator[list[Prediction]]:
    """Predictions for `paths` (only the indices in `todo` when given), one list per batch, in order, decoding
    ahead in `pool` and running `calls_at_once` scorer calls at once.

    A film of more than `max_pixels` pixels is not decoded: its size is its error. `min_side`: large JPEGs are
    decoded reduced, short side kept >= this (`read_image`); scores then come from the reduced film, boxes and
    sizes stay in the film's own pixels. None: every film at full size.
    """
    det, clf = scorer.det, scorer.clf
    cls_tf = classify_host_transform(clf.imgsz, threads) if clf is not None else None

    def load(i: int, p: Path) -> Item:
        return load_item(i, p, det, cls_tf, max_pixels, min_side)

    decoded = batches(paths, list(range(len(paths))) if todo is None else todo, batch, pool, load)
    at_once = calls_at_once([det, clf], batch)
    if at_once == 1:
        for items in decoded:
            yield scorer(items)
        return
    # One call more than run at once waits with its input ready: a model call that ends is followed at once.
    with ThreadPoolExecutor(at_once + 1, thread_name_prefix="fracturekit-infer") as runs:
        ahead: deque[Future[list[Prediction]]] = deque()
        try:
            for items in decoded:
                ahead.append(runs.submit(scorer, items))
                if len(ahead) > at_once:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:  # stopped early (an error, Ctrl-C, the consumer gone): queued calls are dropped
            for f in ahead:
                f.cancel()


def score(
    paths: list[Path],
    *,
    detector: Model | None = None,
    classifier: Model | None = None,
    batch: int | None = None,
    threads: int | None = None,
    label: str = "score",
    progress: Progress | None = None,
) -> list[Prediction]:
    """Predictions for `paths` from loaded models, writing nothing: what evaluate and export's check score.

    `batch` None: `default_batch`, as predict. The decoded pixels are dropped (not kept for drawing).
    `progress` is called with (`label`, films done, len(paths)) after each batch.
    """
    scorer = Scorer.build(detector, classifier)
    size = batch or default_batch([detector, classifier])
    out: list[Prediction] = []
    with ThreadPoolExecutor(max_workers=max(2, cpu_threads(threads))) as pool:
        for preds in stream(scorer, paths, pool, size, threads=threads):
            for p in preds:
                p.gray = None
            out += preds
            if progress is not None:
                progress(label, len(out), len(paths))
    return out
