"""Export a trained model (ONNX and the other formats Ultralytics supports), written beside its weights."""

from __future__ import annotations

import importlib.util
import logging
import types
from pathlib import Path
from typing import Any

from fracturekit.errors import UserError
from fracturekit.options import check_export_format, check_imgsz, inference_device
from fracturekit.predict import resolve_weights, training_imgsz
from fracturekit.yolo_env import load_ultralytics

log = logging.getLogger(__name__)


def _dfl_last_axis(self: Any, x: Any) -> Any:
    """DFL.forward with the softmax over the last axis: the same numbers, a faster ONNX graph.

    Ultralytics' DFL takes the softmax over axis 1 of (B, 16, 4, anchors); onnxruntime's Softmax on a
    non-last axis transposes internally and took 10 of 120 ms per 512x640 YOLOv8n image here (its
    profiler). Here the 16 bins are moved last, softmaxed, and the 1x1 "integral" conv becomes a matmul
    with the same weights (0..15): 111 ms, outputs identical.
    """
    b, _, a = x.shape
    p = x.view(b, 4, self.c1, a).transpose(2, 3).softmax(-1)
    return (p @ self.conv.weight.view(self.c1, 1)).view(b, 4, a)


def onnx_friendly(model: Any) -> int:
    """Give each DFL module of `model` (a torch module tree) the last-axis forward; returns how many.

    An instance attribute, so only this in-memory model changes (Ultralytics' export deep-copies it,
    and a deep copy rebinds the method to the copy); the .pt on disk and other models are untouched.
    """
    from ultralytics.nn.modules.block import DFL

    found = [m for m in model.modules() if isinstance(m, DFL)]
    for m in found:
        m.forward = types.MethodType(_dfl_last_axis, m)
    return len(found)


def export(
    weights_or_run: str | Path, fmt: str = "onnx", imgsz: int | None = None, device: str = "auto", **kw: Any
) -> Path:
    """Export `weights_or_run` (a run folder or a .pt) to `fmt`; returns the written file or folder.

    Defaults chosen for `fracturekit predict` on CPU: imgsz = the training imgsz; ONNX models get
    dynamic batch/height/width so predict can batch and letterbox detector input to each film's aspect
    (`dynamic=False` in `kw` gives a fixed square input instead) and the box head's softmax on the
    last axis (`onnx_friendly`, same outputs, about 7% faster in onnxruntime); graph simplification only when
    onnxslim is installed, because Ultralytics would otherwise try to pip-install it (no network
    here) and the unsimplified graph runs correctly. Extra `kw` go to Ultralytics' `export`.
    """
    fmt = check_export_format(fmt)
    imgsz, size_note = check_imgsz(imgsz)
    if size_note:
        log.warning(size_note)
    _, torch_device, device_note = inference_device(device)
    if device_note:
        log.warning(device_note)
    path, run = resolve_weights(weights_or_run)
    if path.suffix.lower() != ".pt":
        raise UserError(f"{path}: only PyTorch .pt weights can be exported; pass the run folder or its best.pt.")
    load_ultralytics(kw.pop("threads", None))
    from ultralytics import YOLO

    model = YOLO(str(path))
    args = getattr(model.model, "args", {}) or {}
    size = imgsz or training_imgsz(run) or (args.get("imgsz") if isinstance(args, dict) else None) or 640
    opts: dict[str, Any] = {"format": fmt, "imgsz": size, "device": torch_device, "verbose": False}
    if fmt == "onnx":
        opts["simplify"] = importlib.util.find_spec("onnxslim") is not None
        opts["dynamic"] = True
        onnx_friendly(model.model)
    opts.update(kw)
    try:
        written = model.export(**opts)
    except (ValueError, TypeError, KeyError, NotImplementedError, ModuleNotFoundError) as exc:
        raise UserError(f"{path}: export to '{fmt}' failed ({exc}); try --format onnx or torchscript.") from exc
    return Path(written)
