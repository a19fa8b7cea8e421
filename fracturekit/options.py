"""The options train, evaluate, predict (with its --cam) and export share, checked with one sentence per mistake.

`--device auto|cpu|mps|0|0,1` (auto everywhere), `--conf` / `--iou` in (0, 1], `--imgsz` positive and
rounded up to the model stride, and the classify-vs-detect check (export's `--format` is checked by
`fracturekit.export.check_export_format`, from the backends' map). The CLI passes values through; the
Python API calls these, so both agree.
"""

from __future__ import annotations

import math
from pathlib import Path

from fracturekit.device import Device, resolve_device
from fracturekit.errors import UserError

NMS_IOU = 0.7  # Ultralytics' predict default NMS IoU
STRIDE = 32  # the largest YOLOv8 stride: Ultralytics' check_imgsz rounds up to a multiple of it


def check_fraction(value: float | None, flag: str) -> float | None:
    """A confidence or IoU threshold: in (0, 1], else UserError naming the flag."""
    if value is not None and not (0.0 < float(value) <= 1.0):
        raise UserError(f"{flag} {value}: must lie in (0, 1], e.g. {flag} 0.25.")
    return value


def check_max_pixels(value: int | None) -> int | None:
    """--max-pixels: positive (None: no limit), else UserError with an example."""
    if value is not None and value < 1:
        raise UserError(f"--max-pixels {value}: must be a positive number of pixels, e.g. --max-pixels 200000000.")
    return value


def check_threshold(value: str) -> str:
    """A --threshold rule (youden, f1, sens:T or a probability), else UserError listing the choices."""
    from fracturekit.metrics import THRESHOLD_HELP, parse_threshold

    try:
        parse_threshold(value)
    except ValueError as exc:
        raise UserError(f"--threshold {value}: {exc}; use {THRESHOLD_HELP}.") from exc
    return value


def check_imgsz(value: int | None, stride: int = STRIDE) -> tuple[int | None, str | None]:
    """(imgsz rounded up to a multiple of `stride`, a note when it was rounded); UserError when not positive."""
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UserError(f"--imgsz {value}: must be a positive number of pixels, e.g. --imgsz 640.")
    rounded = max(stride, math.ceil(value / stride) * stride)
    if rounded == value:
        return value, None
    return rounded, f"--imgsz {value} rounded up to {rounded}, a multiple of the model stride {stride}"


def inference_device(requested: str | int | None = "auto") -> tuple[Device, str, str | None]:
    """Device for evaluate/predict/export: (Device, torch device string, a note when one GPU of several is used).

    Inference runs one model on one device; `0,1` (several GPUs, meaningful for training as DDP) uses the
    first listed GPU and says so instead of dropping the others in silence.
    """
    dev = resolve_device(requested)
    if dev.kind != "cuda":
        return dev, dev.spec, None
    first = dev.gpus[0]
    note = None
    if len(dev.gpus) > 1:
        note = f"--device {dev.spec}: inference runs on one GPU, so GPU {first} is used (several GPUs help train only)"
    return dev, f"cuda:{first}", note


def check_task(weights: str | Path, model_task: str | None, wanted: str) -> None:
    """UserError when a classify model is passed where a detect model is needed, or the reverse."""
    if model_task == wanted:
        return
    flag = {"detect": "--detector", "classify": "--classifier"}.get(str(model_task))
    fix = f"pass it as {flag}" if flag else f"pass a `fracturekit train --task {wanted}` run"
    raise UserError(f"{weights}: a {model_task} model was given where a {wanted} model is needed; {fix}.")
