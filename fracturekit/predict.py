"""Predict on new films: fracture probability, boxes and an annotated copy per image, fast on a plain CPU.

The pipeline is hand-assembled instead of calling `YOLO.predict` because a folder of films needs
what Ultralytics' predictor does not do together: our own reader (16-bit windowing, DICOM, truncated
JPEGs; the same as `prepare`), recursive folders with bad files reported and skipped, batching with
rectangular letterboxing to each film's aspect, decoding of the next batch overlapped with inference,
and the tuned threshold and temperature from `evaluate`. Model-specific steps stay Ultralytics'
own: checkpoint loading, `classify_transforms`, and `non_max_suppression`.

Backends: PyTorch (`.pt`), ONNX (`.onnx`, an onnxruntime CPU session with all allowed cores as
intra-op threads; `.int8.onnx` is the static int8 export) and OpenVINO (an Ultralytics
`*_openvino_model/` folder; bf16 on CPUs with BF16, int8 when exported with NNCF). Our own sessions
are used rather than AutoBackend so that a dynamic-shape export gets rectangular batches and the
thread count is ours; outputs then go through the same NMS, so the backends agree to their precision.
Given a run folder, `predict` uses the fastest export whose accuracy check passed (`choose_weights`).
"""

from __future__ import annotations

import ast
import csv
import glob
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from fracturekit import callable_stage
from fracturekit.calibration import apply_temperature
from fracturekit.errors import UserError
from fracturekit.imageio import ImageReadError, is_image_file, read_image
from fracturekit.ingest.files import junk_reason, walk_files
from fracturekit.layout import NEGATIVE_CLASS, POSITIVE_CLASS, RunDir
from fracturekit.options import NMS_IOU as IOU
from fracturekit.options import check_fraction, check_imgsz, check_task, inference_device
from fracturekit.outputs import check_free, claim, increment, latest, read_record, record_settings, write_record
from fracturekit.paths import user_path
from fracturekit.yolo_env import cpu_threads, load_ultralytics

log = logging.getLogger(__name__)

PAD_VALUE = 114  # Ultralytics' letterbox gray, so padded borders look as they did in training
DEFAULT_THRESHOLD = 0.5
PREFETCH = 8  # films decoded ahead of inference: keeps both cores busy on a 2-core CPU (bench/predict_bench.py)
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


# --------------------------------------------------------------------------------------------- sources
def list_sources(source: str | Path) -> list[Path]:
    """Image files named by `source`: a folder (recursive), one file, or a glob pattern; sorted."""
    src = Path(source)
    if src.is_dir():
        files = sorted(Path(p) for p in walk_files(src))
    elif src.is_file():
        return [user_path(src)]
    elif glob.has_magic(str(source)):
        found = (user_path(p) for p in glob.glob(str(source), recursive=True))
        files = sorted(p for p in found if p.is_file() and junk_reason([p.name]) is None)  # its folders were chosen
    else:
        raise UserError(f"{source}: no such file, folder or glob match; pass --source with a folder of X-rays.")
    images = [p for p in files if is_image_file(p)]
    if len(images) < len(files):
        log.warning("ignored %d files whose suffix is not an image type", len(files) - len(images))
    if not images:
        raise UserError(f"{source}: no image files found (.jpg .png .tif .dcm ...); point --source at X-rays.")
    return images


def source_root(source: str | Path, paths: list[Path]) -> Path:
    """The folder predictions name films relative to: --source itself, else the films' common folder."""
    if isinstance(source, Path) and source.is_dir():
        return source
    return Path(os.path.commonpath([p.parent for p in paths]))


def source_path(source: str | Path) -> str | Path:
    """--source as given: a glob pattern keeps its magic (only `~` expanded), a path is resolved."""
    text = os.path.expanduser(os.fspath(source))
    return text if not Path(text).exists() and glob.has_magic(text) else user_path(text)


def _output_names(paths: list[Path], source: str | Path) -> list[str]:
    """A unique, flat file stem per image: its path under the source folder with '/' turned into '__'."""
    root = Path(source) if Path(source).is_dir() else None
    names: list[str] = []
    seen: set[str] = set()
    for p in paths:
        rel = p.relative_to(root) if root is not None else Path(p.name)
        stem = "__".join(rel.with_suffix("").parts)
        name, k = stem, 1
        while name in seen:  # same stem, different suffix (a.png and a.jpg)
            name, k = f"{stem}_{k}", k + 1
        seen.add(name)
        names.append(name)
    return names


# ----------------------------------------------------------------------------------------------- models
@dataclass
class Model:
    """A loaded detector or classifier (PyTorch or ONNX) with what inference needs to know about it."""

    task: str  # "detect" | "classify"
    backend: str  # "torch" | "onnx" | "openvino"
    weights: Path
    names: dict[int, str]
    imgsz: int
    stride: int
    fixed_shape: tuple[int, int] | None  # (h, w) of a static-shape ONNX input
    fixed_batch: int | None  # the batch size a static-shape ONNX input requires
    run: RunDir | None
    net: Any  # torch nn.Module, onnxruntime.InferenceSession or openvino InferRequest
    metrics: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"  # torch device of a PyTorch model; ONNX and OpenVINO always run on CPU
    precision: str = "float32"  # what the arithmetic runs in: float32, int8, bf16 (OpenVINO's choice), fp16
    chosen: str = ""  # why these weights were used when a run folder was given (choose_weights)

    @property
    def label(self) -> str:
        """E.g. 'OpenVINO int8 (best_int8_openvino_model)': which model and path predict used."""
        kind = {"torch": "PyTorch", "onnx": "ONNX Runtime", "openvino": "OpenVINO"}[self.backend]
        return f"{kind} {self.precision} ({self.weights.name})"

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Run a float32 (B, 3, H, W) batch in 0..1; returns the raw head output as numpy."""
        if self.backend == "torch":
            import torch

            with torch.inference_mode():
                t = torch.from_numpy(x).to(self.device)
                y = self.net(t.half() if self.precision == "fp16" else t)
            return (y[0] if isinstance(y, (list, tuple)) else y).float().cpu().numpy()
        fb = self.fixed_batch
        if fb is None or fb == len(x):
            return self._run(x)
        outs = []
        for i in range(0, len(x), fb):  # static batch: run full chunks, the last one zero-padded
            chunk = x[i : i + fb]
            pad = np.zeros((fb - len(chunk), *x.shape[1:]), x.dtype)
            outs.append(self._run(np.concatenate([chunk, pad]))[: len(chunk)])
        return np.concatenate(outs)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.backend == "onnx":
            return self.net.run(None, {self.net.get_inputs()[0].name: x})[0]
        self.net.infer({0: x})  # an OpenVINO InferRequest: reused, so its output buffer is copied out
        return self.net.get_output_tensor(0).data.copy()


def resolve_weights(path: str | Path) -> tuple[Path, RunDir | None]:
    """A weights file and the run it belongs to (None for a loose file); a run folder means its best.pt."""
    p = user_path(path)
    if _is_openvino(p):
        return p, (RunDir(p.parent.parent) if p.parent.name == "weights" else None)
    if p.is_dir():
        run = RunDir.find(p)
        if not run.best.is_file():
            raise UserError(f"{run.best}: missing; the run has no best weights, train it to completion first.")
        return run.best, run
    if not p.is_file():
        raise UserError(f"{p}: no such weights file or run folder; pass a `fracturekit train` run or a .pt/.onnx.")
    run = RunDir(p.parent.parent) if p.parent.name == "weights" else None
    return p, run


def _is_openvino(p: Path) -> bool:
    """An Ultralytics OpenVINO export: a `*_openvino_model` folder holding the .xml and metadata.yaml."""
    return p.is_dir() and (p / "metadata.yaml").is_file() and any(p.glob("*.xml"))


# Exports of a run's best.pt, as `fracturekit export` names them: backend name -> path under weights/.
EXPORTS = {
    "openvino-int8": "best_int8_openvino_model",
    "openvino": "best_openvino_model",
    "onnx-int8": "best.int8.onnx",
    "onnx": "best.onnx",
}
BACKENDS = ("auto", "torch", *EXPORTS)


def check_path(export_path: Path) -> Path:
    """The sidecar JSON holding an export's accuracy (and speed) check against float32."""
    return export_path.parent / f"{export_path.name}.check.json"


def _fallback_rank(name: str) -> int:
    """Order for exports measured on another kind of CPU (lower = preferred).

    From bench/ figures: on a VNNI/BF16 CPU OpenVINO int8 ran 3x and bf16 2x onnxruntime float32 and
    onnxruntime int8 1.2x; on AVX2 alone int8 ran 0.84x float32 (bench/int8_probe.py), so float32 first.
    """
    from fracturekit.device import cpu_info

    cpu = cpu_info()
    order = list(EXPORTS) if cpu.vnni and cpu.bf16 else ["onnx", "openvino", "onnx-int8", "openvino-int8"]
    return order.index(name)


def choose_weights(run: RunDir, backend: str = "auto") -> tuple[Path, str]:
    """The weights of `run` to predict with, and a sentence saying why.

    `auto`: among the run's exports whose sidecar check passed (no metric lost more than the allowed
    0.01 against float32), the one measured fastest on this kind of CPU (same model name and flags);
    exports measured elsewhere are ranked by `_fallback_rank`; none passed: best.pt (PyTorch).
    A named backend takes that export, even one that failed its check (with a note saying so).
    """
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend}: unknown; use one of {', '.join(BACKENDS)}.")
    if backend == "torch":
        return run.best, "PyTorch float32, as asked (--backend torch)"
    weights = run.best.parent
    if backend != "auto":
        target = weights / EXPORTS[backend]
        if not target.exists():
            fmt = "openvino" if backend.startswith("openvino") else "onnx"
            flag = " --int8" if backend.endswith("int8") else ""
            raise UserError(f"{target}: missing; run `fracturekit export {run.root} --format {fmt}{flag}` first.")
        check = _read_check(check_path(target))
        why = f"{backend}, as asked (--backend {backend})"
        if check and not check.get("passed"):
            why += f"; WARNING: it failed its accuracy check ({check.get('summary', '')})"
        return target, why
    from fracturekit.device import cpu_info

    here = cpu_info()
    candidates = []
    for name, rel in EXPORTS.items():
        check = _read_check(check_path(weights / rel))
        if not (weights / rel).exists() or not check or not check.get("passed"):
            continue
        cpu = check.get("cpu", {})
        same_cpu = cpu.get("model") == here.model and tuple(cpu.get("flags", ())) == here.flags
        speed = float(check.get("speed", {}).get("ratio") or 0.0)
        rank = (0, -speed) if same_cpu else (1, _fallback_rank(name))
        candidates.append((rank, name, check))
    if not candidates:
        return run.best, "PyTorch float32: the run has no export that passed an accuracy check (`fracturekit export`)"
    (same, _), name, check = min(candidates)
    how = f"{check['speed']['ratio']:.2f}x PyTorch float32 measured here" if same == 0 else "measured on another CPU"
    return weights / EXPORTS[name], f"{name}: fastest export that passed its accuracy check ({how}; {check['summary']})"


def _read_check(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}  # an unreadable sidecar means unchecked: auto will not use that export


def _read_metrics(run: RunDir | None) -> dict[str, Any]:
    if run is None or not run.metrics.is_file():
        return {}
    try:
        return json.loads(run.metrics.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{run.metrics}: unreadable ({exc}); re-run `fracturekit evaluate {run.root}`.") from exc


def training_imgsz(run: RunDir | None) -> int | None:
    """The training imgsz recorded in the run's config.yaml, if any."""
    if run is None or not run.config.is_file():
        return None
    cfg = yaml.safe_load(run.config.read_text()) or {}
    for section in (cfg, cfg.get("train", {}) if isinstance(cfg.get("train"), dict) else {}):
        if isinstance(section.get("imgsz"), int):
            return int(section["imgsz"])
    return None


def _imgsz_value(v: Any) -> int | None:
    if isinstance(v, int):
        return v
    if isinstance(v, (list, tuple)) and v:
        return int(max(v))
    return None


def load_model(
    weights: str | Path,
    task: str,
    imgsz: int | None = None,
    threads: int | None = None,
    device: str = "auto",
    backend: str = "auto",
) -> Model:
    """Load a `.pt`, `.onnx` or OpenVINO detector/classifier; UserError when it is the wrong kind of model.

    A run folder loads the export `choose_weights(run, backend)` picks. `device` (auto, cpu, mps, 0,
    cuda:0) places a PyTorch model; ONNX and OpenVINO models run on CPU whatever it says.
    """
    dev, torch_device, _ = inference_device(device)
    path, run = resolve_weights(weights)
    chosen = ""
    if run is not None and Path(weights).is_dir() and not _is_openvino(Path(weights)):
        path, chosen = choose_weights(run, backend)
    n = cpu_threads(threads)
    load_ultralytics(n)
    precision = "float32"
    if _is_openvino(path):
        kind = "openvino"
        net, meta, shape, precision = _load_openvino(path, n)
        model_task, names = meta["task"], meta["names"]
        stride, trained = int(meta.get("stride", 32)), _imgsz_value(meta.get("imgsz"))
    elif path.suffix.lower() == ".onnx":
        import onnxruntime as ort

        kind = "onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = n
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            raise UserError(f"{path}: not a loadable ONNX model ({exc}); re-export with `fracturekit export`.") from exc
        meta = {k: v for k, v in sess.get_modelmeta().custom_metadata_map.items()}
        if "names" not in meta or "task" not in meta:
            raise UserError(f"{path}: ONNX file has no Ultralytics metadata; export it with `fracturekit export`.")
        shape = sess.get_inputs()[0].shape  # [batch, 3, h, w], str for dynamic axes
        model_task = meta["task"]
        names = ast.literal_eval(meta["names"])
        stride = int(meta.get("stride", 32))
        trained = _imgsz_value(ast.literal_eval(meta.get("imgsz", "None")))
        net: Any = sess
        if any(node.op_type == "QuantizeLinear" for node in _onnx_nodes(path)):
            precision = "int8"
    else:
        from ultralytics import YOLO

        kind = "torch"
        try:
            yolo = YOLO(str(path))
        except Exception as exc:  # Ultralytics raises many types for a bad checkpoint
            raise UserError(f"{path}: not a loadable YOLO checkpoint ({exc}); pass a run's weights/best.pt.") from exc
        net = yolo.model.float().eval()
        if hasattr(net, "fuse"):
            net = net.fuse(verbose=False)
        net = net.to(torch_device)
        if dev.kind == "cuda":  # fp16 on CUDA, as Ultralytics' val does during training with AMP
            net, precision = net.half(), "fp16"
        model_task, names = yolo.task, dict(net.names)
        stride = int(max(getattr(net, "stride", [32])))
        args = getattr(net, "args", {}) or {}
        trained = _imgsz_value(args.get("imgsz") if isinstance(args, dict) else None)
        shape = [None, 3, None, None]
    fixed = (int(shape[2]), int(shape[3])) if isinstance(shape[2], int) and isinstance(shape[3], int) else None
    fixed_batch = int(shape[0]) if isinstance(shape[0], int) else None
    check_task(path, model_task, task)
    size = imgsz or training_imgsz(run) or trained or 640
    if fixed is not None:
        size = max(fixed)
    return Model(
        task=task,
        backend=kind,
        weights=path,
        names={int(k): str(v) for k, v in names.items()},
        imgsz=int(size),
        stride=stride,
        fixed_shape=fixed,
        fixed_batch=fixed_batch,
        run=run,
        net=net,
        metrics=_read_metrics(run),
        device=torch_device if kind == "torch" else "cpu",
        precision=precision,
        chosen=chosen,
    )


def _onnx_nodes(path: Path) -> list[Any]:
    import onnx

    return list(onnx.load(str(path), load_external_data=False).graph.node)


def _load_openvino(folder: Path, threads: int) -> tuple[Any, dict[str, Any], list[Any], str]:
    """Compile an Ultralytics OpenVINO export for this CPU: (infer request, metadata, input shape, precision).

    OpenVINO's own default precision is kept: bf16 on CPUs with BF16/AMX (the export's accuracy check
    measures it), float32 elsewhere; an NNCF export runs its int8 layers as int8.
    """
    try:
        import openvino as ov
    except ImportError as exc:
        raise UserError(
            f"{folder}: an OpenVINO model, but openvino is not installed; pip install 'fracturekit[openvino]'."
        ) from exc
    meta = yaml.safe_load((folder / "metadata.yaml").read_text()) or {}
    if "task" not in meta or "names" not in meta:
        raise UserError(
            f"{folder}/metadata.yaml: no task/names; re-export with `fracturekit export --format openvino`."
        )
    xml = next(folder.glob("*.xml"))
    core = ov.Core()
    try:
        compiled = core.compile_model(
            str(xml), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        )
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses for bad IR files
        raise UserError(f"{xml}: not a loadable OpenVINO model ({exc}); re-export with `fracturekit export`.") from exc
    ps = compiled.input(0).get_partial_shape()
    shape = [d.get_length() if d.is_static else None for d in ps]
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # f32, bf16 or f16
    precision = "int8" if "_int8_" in folder.name else {"bf16": "bf16", "f16": "fp16"}.get(hint, "float32")
    return compiled.create_infer_request(), meta, shape, precision


# ------------------------------------------------------------------------------------------ preprocessing
def rect_shape(h: int, w: int, imgsz: int, stride: int) -> tuple[int, int]:
    """Letterbox shape (h, w) keeping the film's aspect: long side imgsz, both sides a multiple of stride."""
    r = imgsz / max(h, w)
    nh, nw = round(h * r), round(w * r)
    return int(np.ceil(nh / stride) * stride), int(np.ceil(nw / stride) * stride)


def letterbox(gray: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize to fit `shape` (h, w) and pad centered with gray 114, as Ultralytics' LetterBox does.

    Done on the single gray channel (3x less work than on BGR); returns the image, the scale and the
    (left, top) padding, used to map boxes back to film pixels.
    """
    h, w = gray.shape
    r = min(shape[0] / h, shape[1] / w)
    nh, nw = round(h * r), round(w * r)
    img = cv2.resize(gray, (nw, nh), interpolation=cv2.INTER_LINEAR) if (nh, nw) != (h, w) else gray
    dh, dw = (shape[0] - nh) / 2, (shape[1] - nw) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    bottom, right = shape[0] - nh - top, shape[1] - nw - left
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=PAD_VALUE)
    return img, r, (float(left), float(top))


def _to_batch(images: list[np.ndarray]) -> np.ndarray:
    """uint8 gray (H, W) images of one shape -> float32 (B, 3, H, W) in 0..1 (gray replicated, as in training).

    Scaled in place per image and broadcast straight into one preallocated batch: about 8x faster
    than stack + astype + broadcast_to + ascontiguousarray, and this runs between model calls.
    """
    x = np.empty((len(images), 3, *images[0].shape), np.float32)
    for k, im in enumerate(images):
        f = im.astype(np.float32)
        f *= np.float32(1.0 / 255.0)
        x[k] = f
    return x


@dataclass
class _Item:
    """One film as it moves through the pipeline."""

    index: int
    path: Path
    gray: np.ndarray | None = None
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    det_in: np.ndarray | None = None
    det_scale: float = 1.0
    det_pad: tuple[float, float] = (0.0, 0.0)
    cls_in: np.ndarray | None = None


def _classify_host_transform(imgsz: int, threads: int | None) -> Callable[[np.ndarray], np.ndarray]:
    """Ultralytics' own classify resize + center crop, so probabilities match its predict/val."""
    load_ultralytics(threads)
    import torchvision.transforms as T
    from PIL import Image
    from ultralytics.data.augment import classify_transforms

    host = T.Compose(classify_transforms(imgsz).transforms[:2])
    return lambda gray: np.asarray(host(Image.fromarray(gray)))


def _load(
    index: int,
    path: Path,
    detector: Model | None,
    cls_tf: Callable[[np.ndarray], np.ndarray] | None,
) -> _Item:
    """Decode one film and prepare the model inputs (runs in a worker thread, overlapping inference)."""
    item = _Item(index, path)
    try:
        img = read_image(path)
        item.gray, item.warnings = img.pixels, list(img.warnings)
        if detector is not None:
            shape = detector.fixed_shape or rect_shape(img.height, img.width, detector.imgsz, detector.stride)
            item.det_in, item.det_scale, item.det_pad = letterbox(img.pixels, shape)
        if cls_tf is not None:
            item.cls_in = cls_tf(img.pixels)
    except ImageReadError as exc:
        item.gray, item.error = None, str(exc)
    except Exception as exc:  # one bad file must not end the run: report it with its reason and go on
        item.gray, item.error = None, f"unreadable ({type(exc).__name__}: {exc})"
    return item


def _pad_to(img: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad a letterboxed image centered to a larger batch shape; returns it and the extra (left, top)."""
    dh, dw = shape[0] - img.shape[0], shape[1] - img.shape[1]
    if not dh and not dw:
        return img, (0, 0)
    top, left = dh // 2, dw // 2
    out = cv2.copyMakeBorder(img, top, dh - top, left, dw - left, cv2.BORDER_CONSTANT, value=PAD_VALUE)
    return out, (left, top)


# ------------------------------------------------------------------------------------------ inference
def _nms(raw: np.ndarray, conf: float, nc: int, iou: float = IOU) -> list[np.ndarray]:
    """Ultralytics' NMS on a raw (B, 4 + nc, anchors) head output -> per image (n, 6) x1 y1 x2 y2 conf cls."""
    import torch
    from ultralytics.utils.nms import non_max_suppression

    out = non_max_suppression(torch.from_numpy(raw), conf_thres=conf, iou_thres=iou, nc=nc, max_det=300)
    return [o.numpy() for o in out]


def _detect_batch(
    model: Model, items: list[_Item], conf: float, cam: bool, iou: float = IOU
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Boxes in film pixels for a batch of decoded films (and EigenCAM maps in film pixels when asked)."""
    shape = (max(i.det_in.shape[0] for i in items), max(i.det_in.shape[1] for i in items))  # type: ignore[union-attr]
    ims, extra = [], []
    for it in items:
        im, off = _pad_to(it.det_in, shape)  # type: ignore[arg-type]
        ims.append(im)
        extra.append(off)
    x = _to_batch(ims)
    maps: list[np.ndarray | None] = [None] * len(items)
    if cam and model.backend == "torch":
        from fracturekit.cam import eigencam

        raw, cams = eigencam(model.net, x, model.device)
    else:
        raw, cams = model.forward(x), None
    dets = _nms(raw, conf, len(model.names), iou)
    boxes = []
    for k, (it, d, off) in enumerate(zip(items, dets, extra, strict=True)):
        b = d.copy()
        left, top = it.det_pad[0] + off[0], it.det_pad[1] + off[1]
        b[:, [0, 2]] = (b[:, [0, 2]] - left) / it.det_scale
        b[:, [1, 3]] = (b[:, [1, 3]] - top) / it.det_scale
        h, w = it.gray.shape  # type: ignore[union-attr]
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
        boxes.append(b)
        if cams is not None:
            nh, nw = round(h * it.det_scale), round(w * it.det_scale)
            t, left_i = int(top), int(left)
            crop = cams[k][t : t + nh, left_i : left_i + nw]
            maps[k] = cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)
    return boxes, maps


def _classify_batch(model: Model, items: list[_Item], cam: bool) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Softmax probabilities (B, C) for a batch (and EigenCAM maps in film pixels when asked)."""
    x = _to_batch([it.cls_in for it in items])  # type: ignore[misc]
    maps: list[np.ndarray | None] = [None] * len(items)
    if cam and model.backend == "torch":
        from fracturekit.cam import eigencam

        probs, cams = eigencam(model.net, x, model.device)
        for k, it in enumerate(items):
            maps[k] = _uncrop(cams[k], it.gray.shape)  # type: ignore[union-attr]
    else:
        probs = model.forward(x)
    return probs, maps


def classifier_heatmaps(model: Model, grays: list[np.ndarray], batch: int = 8) -> list[np.ndarray]:
    """EigenCAM of a PyTorch classifier for each gray film, in film pixels (0 outside the centre crop it sees)."""
    tf = _classify_host_transform(model.imgsz, None)
    items = [_Item(i, Path(), gray=g, cls_in=tf(g)) for i, g in enumerate(grays)]
    maps: list[np.ndarray] = []
    for k in range(0, len(items), batch):
        maps += _classify_batch(model, items[k : k + batch], cam=True)[1]  # type: ignore[arg-type]
    return maps


def _uncrop(cam: np.ndarray, film_shape: tuple[int, ...]) -> np.ndarray:
    """Place a classifier map (computed on the center square crop) back onto the whole film."""
    h, w = film_shape[:2]
    s = min(h, w)
    full = np.zeros((h, w), np.float32)
    top, left = (h - s) // 2, (w - s) // 2
    full[top : top + s, left : left + s] = cv2.resize(cam, (s, s), interpolation=cv2.INTER_LINEAR)
    return full


# ------------------------------------------------------------------------------------------ decisions
@dataclass
class _Policy:
    """How a probability becomes a decision: tuned threshold, temperature, positive class, notes."""

    threshold: float = DEFAULT_THRESHOLD
    temperature: float = 1.0
    positive: str = POSITIVE_CLASS
    notes: list[str] = field(default_factory=list)


def _section(model: Model, section: str, sources: list[dict[str, Any]]) -> dict[str, Any]:
    """This model's `section` of a metrics.json: from its own run, or from the other model's run when
    `evaluate` was given both (it then writes one metrics.json, into the classifier's run)."""
    own = model.run.root.resolve() if model.run is not None else None
    for metrics in [model.metrics, *sources]:
        m = metrics.get(section)
        if not isinstance(m, dict):
            continue
        run = m.get("run")
        if (run is None and metrics is model.metrics) or (run is not None and own == Path(run).resolve()):
            return m
    return {}


def _policy(model: Model, section: str, sources: list[dict[str, Any]]) -> _Policy:
    m = _section(model, section, sources)
    pol = _Policy(positive=str(m.get("positive_class") or POSITIVE_CLASS))
    if m.get("threshold") is not None:
        pol.threshold = float(m["threshold"])
    else:
        where = model.run.metrics if model.run is not None else f"{model.weights} (not inside a run folder)"
        pol.notes.append(
            f"{model.task}: no evaluate threshold in {where}; decision at {DEFAULT_THRESHOLD}"
            + ("" if section == "detection" else ", probability not calibrated")
        )
    if section == "classification" and m.get("temperature") is not None:
        pol.temperature = float(m["temperature"])
    return pol


def _positive_index(model: Model, positive: str) -> int:
    for k, v in model.names.items():
        if v == positive:
            return k
    raise UserError(
        f"{model.weights}: classifier classes {sorted(model.names.values())} have no '{positive}'; "
        "pass a classifier trained by `fracturekit train --task classify`."
    )


# ------------------------------------------------------------------------------------------ outputs
def _annotate(gray: np.ndarray, rec: dict[str, Any]) -> np.ndarray:
    """Boxes with class and confidence on the film, the probability and decision on a band above it (BGR)."""
    from fracturekit import annotate as A

    boxes = [
        A.Box((b["x1"], b["y1"], b["x2"], b["y2"]), A.PREDICTED, f"{b['class']} {b['confidence']:.2f}".strip())
        for b in rec["boxes"]
    ]
    caption = []
    if rec["fracture_probability"] is not None:
        color = A.POSITIVE if rec["decision"] == POSITIVE_CLASS else A.NEGATIVE
        p, thr = rec["fracture_probability"], rec["threshold"]
        caption.append([(f"{rec['score_source']} p={p:.3f} -> {rec['decision']} (thr {thr:.2f})", color)])
    return A.annotate(gray, boxes, caption)


def _overlay(gray: np.ndarray, heat: np.ndarray, classifier: bool = False) -> np.ndarray:
    """A JET heatmap blended 50/50 over the film; a classifier's is hatched and labelled outside its centre crop."""
    from fracturekit.annotate import centre_crop, heatmap_panel

    return heatmap_panel(gray, heat, centre_crop(*gray.shape[:2]) if classifier else None)


def _write(path: Path, img: np.ndarray) -> None:
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


def _csv_row(rec: dict[str, Any]) -> dict[str, Any]:
    row = dict(rec)
    row["boxes"] = json.dumps(rec["boxes"])
    row["cam"] = ";".join(rec["cam"])
    row["warnings"] = "; ".join(rec["warnings"])
    return row


_INT_COLUMNS = ("width", "height", "n_boxes")
_FLOAT_COLUMNS = ("fracture_probability", "threshold", "detector_score")


def _record_from_row(row: dict[str, str]) -> dict[str, Any]:
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


def _read_rows(csv_path: Path) -> list[dict[str, Any]]:
    """The records in predictions.csv; a last line cut short by a killed run is dropped from the file."""
    data = csv_path.read_bytes()
    if data and not data.endswith(b"\n"):
        with csv_path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != CSV_COLUMNS:
            raise UserError(f"{csv_path}: not a predictions.csv of this fracturekit version; pass a new --out.")
        return [_record_from_row(r) for r in reader]


def output_folder(out: str | Path | None, resume: bool) -> Path:
    """The explicit --out, else the first free of runs/predict, runs/predict2, ... (the latest one to resume)."""
    if out is not None:
        return Path(out)
    base = Path("runs") / "predict"
    if resume:
        found = latest(base, "predictions.csv")
        if found is None:
            raise UserError(f"--resume: no {base}*/predictions.csv to resume; pass --out with the folder to resume.")
        return found
    return increment(base)


def _resume_state(out: Path, settings: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(files predict recorded in `out`, film paths already in its predictions.csv) for --resume.

    Paths as the CSV holds them: relative to the source root, so a resume from another folder matches too.
    """
    ours = read_record(out, "predict")
    if "predictions.csv" not in ours or not (out / "predictions.csv").is_file():
        raise UserError(f"--resume: {out} holds no predictions.csv written by predict; run without --resume.")
    before = record_settings(out, "predict")
    changed = [k for k in ("detector", "classifier", "conf", "imgsz") if before.get(k) != settings[k]]
    if changed:
        k = changed[0]
        raise UserError(
            f"--resume: {out} was predicted with {k} {before.get(k)}, not {settings[k]}; resume with the same "
            "models and options, or pass --exist-ok without --resume to start over."
        )
    done = {r["path"] for r in _read_rows(out / "predictions.csv")}
    return ours, done


def coco_predictions(records: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
    """The readable films and their kept boxes as one COCO dataset (`score` on each annotation, xywh pixels).

    pycocotools' COCO(), FiftyOne's COCODetectionDataset and supervision's DetectionDataset.from_coco read it;
    image ids are 1.. in predictions.csv order, `file_name` the film's path as given to --source.
    """
    cat = {n: i + 1 for i, n in enumerate(classes)}
    images, annotations = [], []
    for r in records:
        if r["error"]:
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": r["path"], "width": r["width"], "height": r["height"]})
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


# ------------------------------------------------------------------------------------------ main API
def _batches(
    paths: list[Path],
    todo: list[int],
    batch: int,
    pool: ThreadPoolExecutor,
    load: Callable[[int, Path], _Item],
    ahead: int = PREFETCH,
) -> Iterator[list[_Item]]:
    """Yield decoded batches while the next films (at least `ahead`, whole batches) decode in the pool."""
    chunks = [todo[i : i + batch] for i in range(0, len(todo), batch)]
    depth = max(2, -(-ahead // batch))  # batches in flight, the one being yielded included
    queued: deque[list[Future[_Item]]] = deque()
    for k in range(len(chunks)):
        while len(queued) < depth and k + len(queued) < len(chunks):
            queued.append([pool.submit(load, i, paths[i]) for i in chunks[k + len(queued)]])
        yield [f.result() for f in queued.popleft()]


def predict(
    source: str | Path,
    *,
    detector: str | Path | Model | None = None,
    classifier: str | Path | Model | None = None,
    out: str | Path | None = None,
    imgsz: int | None = None,
    conf: float = 0.25,
    iou: float = IOU,
    cam: bool = False,
    batch: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    save_images: bool = True,
    exist_ok: bool = False,
    resume: bool = False,
    progress: bool = False,
    backend: str = "auto",
) -> list[dict[str, Any]]:
    """Predict every film under `source`; write annotated images, predictions.csv/.json into `out`.

    `out` None: the first free of runs/predict, runs/predict2, ... A used `out` is refused unless
    `exist_ok` (then only predict's own earlier files there are replaced). Each film's row is appended to
    predictions.csv and flushed once its annotated image is written, so a killed run keeps every finished
    film; `resume` continues such a run in `out` (default: the latest runs/predict*), skipping the films
    already listed. predictions.json is written from the CSV at the end.

    Returns one record per image (in sorted path order): path (relative to the --source folder, or to
    the films' common folder for a file or glob; predictions.json `source_root` holds it), width,
    height, fracture_probability (the classifier's calibrated probability, else the detector's best
    box confidence), decision (positive/negative class at the tuned threshold), threshold,
    score_source, detector_score, boxes (film pixels with confidence and class), annotated (image
    path relative to `out`), cam (heatmap paths relative to `out`), error
    (why the file was skipped, empty when fine), warnings (reader notes such as truncated JPEG), note
    (set when no `evaluate` metrics were found: the 0.5 default threshold was used).

    `batch` None: 1 film per call when every model is ONNX or OpenVINO (onnxruntime's CPU kernels ran
    ~10% faster one film at a time than in batches of 8, bench/predict_bench.py), else 8 (PyTorch is
    faster batched).
    """
    if detector is None and classifier is None:
        raise UserError("no model given; pass --detector and/or --classifier (a train run folder or weights file).")
    if batch is not None and batch < 1:
        raise UserError(f"--batch {batch}: must be at least 1.")
    check_fraction(conf, "--conf")
    check_fraction(iou, "--iou")
    imgsz, size_note = check_imgsz(imgsz)
    dev, _, device_note = inference_device(device)
    device_spec = dev.spec
    run_notes = [n for n in (size_note, device_note) if n]
    out = user_path(output_folder(out, resume))
    source = source_path(source)
    paths = [p for p in list_sources(source) if not p.is_relative_to(out)]  # not our own output
    if not paths:
        raise UserError(f"{source}: the only images are inside the output folder {out}; pass another --source.")
    names = _output_names(paths, source)
    root = source_root(source, paths)
    backend = "torch" if cam and backend == "auto" else backend  # EigenCAM needs the PyTorch graph
    det, clf = (
        m if isinstance(m, Model) or m is None else load_model(m, task, imgsz, threads, device, backend)
        for m, task in ((detector, "detect"), (classifier, "classify"))
    )
    for m in (det, clf):
        if cam and m is not None and m.backend != "torch":
            raise UserError(
                f"{m.weights}: --cam needs PyTorch weights (.pt); pass the run folder instead of the .onnx."
            )
    if batch is None:
        batch = 1 if all(m.backend != "torch" for m in (det, clf) if m is not None) else 8
    scorer = _Scorer.build(det, clf, conf, iou, cam, root, run_notes)

    settings = {
        "detector": str(det.weights) if det else None,
        "classifier": str(clf.weights) if clf else None,
        "conf": conf,
        "imgsz": imgsz,
    }
    planned = {"predictions.csv", "predictions.json", "predictions_coco.json"}
    if save_images:
        planned.update(f"{n}.jpg" for n in names)
    if cam:
        planned.update(f"cam/{n}{t}.png" for n in names for t in ("", ".det"))
    if resume:
        ours, done = _resume_state(out, settings)
    else:
        ours, done = claim(out, "predict", exist_ok, hint="pass --resume to continue it"), set()
    check_free(out, planned, ours, "predict")
    write_record(out, "predict", ours | planned if resume else planned, settings)  # before writing anything
    csv_path = out / "predictions.csv"
    if not resume:
        with csv_path.open("w", newline="") as f:
            csv.DictWriter(f, fieldnames=CSV_COLUMNS).writeheader()
    todo = [i for i, p in enumerate(paths) if p.relative_to(root).as_posix() not in done]
    if cam:
        (out / "cam").mkdir(exist_ok=True)
    cls_tf = _classify_host_transform(clf.imgsz, threads) if clf is not None else None
    n_threads = cpu_threads(threads)
    # Batches whose rows wait for their image writes: a row is in the CSV only once its film is finished.
    pending: deque[tuple[list[dict[str, Any]], list[Future[None]]]] = deque()

    def load(i: int, p: Path) -> _Item:
        return _load(i, p, det, cls_tf)

    with ThreadPoolExecutor(max_workers=max(2, n_threads)) as pool, csv_path.open("a", newline="") as fh:
        table = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")

        def append_finished(wait: bool) -> None:
            while pending and (wait or all(f.done() for f in pending[0][1])):
                recs, futures = pending.popleft()
                for f in futures:
                    f.result()
                table.writerows(_csv_row(r) for r in recs)
                fh.flush()  # the rows survive a killed process (an fsync would also survive power loss)

        stream = _batches(paths, todo, batch, pool, load)
        if progress:
            from rich.progress import track

            stream = track(stream, total=(len(todo) + batch - 1) // batch, description="predict")
        for items in stream:
            writes: list[Future[None]] = []
            scored = scorer(items)
            for it, rec, cls_map, det_map in scored:
                if it.gray is None:
                    continue
                name = names[it.index]
                if save_images:
                    rec["annotated"] = f"{name}.jpg"  # relative to `out`, like cam/
                    writes.append(pool.submit(_write, out / f"{name}.jpg", _annotate(it.gray, rec)))
                for tag, m, is_cls in (("", cls_map, True), (".det" if clf is not None else "", det_map, False)):
                    if m is not None:
                        target = out / "cam" / f"{name}{tag}.png"
                        rec["cam"].append(target.relative_to(out).as_posix())
                        writes.append(pool.submit(_write, target, _overlay(it.gray, m, is_cls)))
            pending.append(([rec for _, rec, _, _ in scored], writes))
            append_finished(wait=False)
        append_finished(wait=True)

    order = {p.relative_to(root).as_posix(): i for i, p in enumerate(paths)}
    records = sorted(_read_rows(csv_path), key=lambda r: order.get(r["path"], len(order)))
    det_pol, clf_pol = scorer.det_pol, scorer.clf_pol
    notes = run_notes + (det_pol.notes if det_pol else []) + (clf_pol.notes if clf_pol else [])
    meta = {
        "source": str(source),
        "source_root": str(root),
        "detector": str(det.weights) if det else None,
        "classifier": str(clf.weights) if clf else None,
        "detector_imgsz": det.imgsz if det else None,
        "classifier_imgsz": clf.imgsz if clf else None,
        "backend": {"detector": det.backend if det else None, "classifier": clf.backend if clf else None},
        "models": {k: {"used": m.label, "why": m.chosen} for k, m in (("detector", det), ("classifier", clf)) if m},
        "conf": conf,
        "iou": iou,
        "device": device_spec,
        "batch": batch,
        "temperature": clf_pol.temperature if clf_pol else None,
        "notes": notes,
        "resumed_after": len(paths) - len(todo) if resume else None,
        "n_images": len(records),
        "n_errors": sum(1 for r in records if r["error"]),
        "classes": [det.names[i] for i in sorted(det.names)] if det else [],
    }
    (out / "predictions.json").write_text(json.dumps({**meta, "images": records}, indent=1))
    (out / "predictions_coco.json").write_text(json.dumps(coco_predictions(records, meta["classes"])))
    return records


@dataclass
class _Scorer:
    """Scores decoded films into predict's records: boxes, detector image score, probability, decision.

    One place for the per-film arithmetic, so that predict (which then writes images and rows) and
    `score` (records only: export's accuracy check) give the same numbers.
    """

    det: Model | None
    clf: Model | None
    det_pol: _Policy | None
    clf_pol: _Policy | None
    pos_idx: int | None
    conf: float
    iou: float
    cam: bool
    root: Path
    notes: list[str]

    @classmethod
    def build(
        cls, det: Model | None, clf: Model | None, conf: float, iou: float, cam: bool, root: Path, notes: list[str]
    ) -> _Scorer:
        loaded = [m.metrics for m in (det, clf) if m is not None]
        det_pol = _policy(det, "detection", loaded) if det is not None else None
        clf_pol = _policy(clf, "classification", loaded) if clf is not None else None
        pos_idx = _positive_index(clf, clf_pol.positive) if clf is not None and clf_pol is not None else None
        return cls(det, clf, det_pol, clf_pol, pos_idx, conf, iou, cam, root, notes)

    def __call__(self, items: list[_Item]) -> list[tuple[_Item, dict[str, Any], np.ndarray | None, np.ndarray | None]]:
        """(item, record, classifier CAM, detector CAM) per item, in order; unreadable items keep their error."""
        det, clf, det_pol, clf_pol = self.det, self.clf, self.det_pol, self.clf_pol
        good = [it for it in items if it.gray is not None]
        box_floor = min(self.conf, det_pol.threshold) if det_pol is not None else self.conf
        boxes: list[np.ndarray] = [np.zeros((0, 6), np.float32)] * len(good)
        probs = np.zeros((len(good), 0), np.float32)
        det_maps: list[np.ndarray | None] = [None] * len(good)
        cls_maps: list[np.ndarray | None] = [None] * len(good)
        if good and det is not None:
            boxes, det_maps = _detect_batch(det, good, box_floor, self.cam, self.iou)
        if good and clf is not None:
            probs, cls_maps = _classify_batch(clf, good, self.cam)
            if clf_pol is not None and clf_pol.temperature != 1.0:
                probs = apply_temperature(probs, clf_pol.temperature)
        done = {it.index: k for k, it in enumerate(good)}
        scored = []
        for it in items:
            rec = _empty_record(it, self.root)
            k = done.get(it.index)
            if k is None:
                scored.append((it, rec, None, None))
                continue
            h, w = it.gray.shape  # type: ignore[union-attr]
            rec.update(width=w, height=h)
            kept = boxes[k][boxes[k][:, 4] >= self.conf] if det is not None else boxes[k]
            rec["boxes"] = [
                {
                    "x1": round(float(b[0]), 1),
                    "y1": round(float(b[1]), 1),
                    "x2": round(float(b[2]), 1),
                    "y2": round(float(b[3]), 1),
                    "confidence": round(float(b[4]), 4),
                    "class": det.names[int(b[5])] if det is not None else "",
                }
                for b in kept
            ]
            rec["n_boxes"] = len(rec["boxes"])
            if det is not None:
                # Image score as `evaluate` defines it: max box confidence over all classes, 0 with no box.
                rec["detector_score"] = round(float(boxes[k][:, 4].max()) if len(boxes[k]) else 0.0, 4)
            if clf is not None and clf_pol is not None and self.pos_idx is not None:
                p, pol, rec["score_source"] = float(probs[k][self.pos_idx]), clf_pol, "classifier"
            else:
                assert det_pol is not None
                p, pol, rec["score_source"] = rec["detector_score"], det_pol, "detector"
            rec["fracture_probability"] = round(p, 6)
            rec["threshold"] = pol.threshold
            rec["decision"] = pol.positive if p >= pol.threshold else _negative(clf, pol.positive)
            rec["note"] = "; ".join(self.notes + pol.notes)
            scored.append((it, rec, cls_maps[k], det_maps[k]))
        return scored


def score(
    source: str | Path,
    *,
    detector: Model | None = None,
    classifier: Model | None = None,
    conf: float = 0.25,
    iou: float = IOU,
    batch: int = 1,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """predict's records for the films under `source` from loaded models, writing nothing (no images, no tables).

    Export's accuracy check times this, so loading the models stays outside its timing.
    """
    source = source_path(source)
    paths = list_sources(source)
    scorer = _Scorer.build(detector, classifier, conf, iou, False, source_root(source, paths), [])
    cls_tf = _classify_host_transform(classifier.imgsz, threads) if classifier is not None else None
    records: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=max(2, cpu_threads(threads))) as pool:

        def load(i: int, p: Path) -> _Item:
            return _load(i, p, detector, cls_tf)

        for items in _batches(paths, list(range(len(paths))), batch, pool, load):
            records.extend(rec for _, rec, _, _ in scorer(items))
    return records


def _negative(clf: Model | None, positive: str) -> str:
    """The decision label below threshold: the classifier's other class when binary, else no_fracture."""
    if clf is not None and len(clf.names) == 2:
        return next(v for v in clf.names.values() if v != positive)
    return NEGATIVE_CLASS


def _empty_record(it: _Item, root: Path) -> dict[str, Any]:
    return {
        "path": it.path.relative_to(root).as_posix(),
        "width": None,
        "height": None,
        "fracture_probability": None,
        "decision": "",
        "threshold": None,
        "score_source": "",
        "detector_score": None,
        "n_boxes": 0,
        "boxes": [],
        "annotated": "",
        "cam": [],
        "error": it.error,
        "warnings": it.warnings,
        "note": "",
    }


callable_stage(__name__)  # `fracturekit.predict(...)` runs predict() above: see fracturekit.Stage
