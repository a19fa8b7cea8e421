"""Export a trained model (ONNX and the other formats Ultralytics supports), written beside its weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fracturekit.errors import UserError
from fracturekit.predict import resolve_weights, training_imgsz
from fracturekit.yolo_env import load_ultralytics


def export(weights_or_run: str | Path, fmt: str = "onnx", imgsz: int | None = None, **kw: Any) -> Path:
    """Export `weights_or_run` (a run folder or a .pt) to `fmt`; returns the written file or folder.

    Defaults chosen for `fracturekit predict` on CPU: imgsz = the training imgsz; ONNX models get
    dynamic batch/height/width so predict can batch and letterbox detector input to each film's aspect
    (`dynamic=False` in `kw` gives a fixed square input instead); graph simplification only when
    onnxslim is installed, because Ultralytics would otherwise try to pip-install it (no network
    here) and the unsimplified graph runs correctly. Extra `kw` go to Ultralytics' `export`.
    """
    path, run = resolve_weights(weights_or_run)
    if path.suffix.lower() != ".pt":
        raise UserError(f"{path}: only PyTorch .pt weights can be exported; pass the run folder or its best.pt.")
    load_ultralytics(kw.pop("threads", None))
    from ultralytics import YOLO

    model = YOLO(str(path))
    args = getattr(model.model, "args", {}) or {}
    size = imgsz or training_imgsz(run) or (args.get("imgsz") if isinstance(args, dict) else None) or 640
    opts: dict[str, Any] = {"format": fmt, "imgsz": size, "device": "cpu", "verbose": False}
    if fmt == "onnx":
        opts["simplify"] = importlib.util.find_spec("onnxslim") is not None
        opts["dynamic"] = True
    opts.update(kw)
    try:
        written = model.export(**opts)
    except (ValueError, TypeError, KeyError, NotImplementedError, ModuleNotFoundError) as exc:
        raise UserError(f"{path}: export to '{fmt}' failed ({exc}); try --format onnx or torchscript.") from exc
    return Path(written)
