"""The options train, evaluate, predict (with its --cam), export and cv share, checked once, one sentence a mistake.

`--device auto|cpu|mps|0|0,1` (auto everywhere), `--conf` / `--iou` in (0, 1], `--imgsz` positive and
rounded up to the model stride, `--threshold`, and the classify-vs-detect check (export's `--format` is
checked by `fracturekit.export.check_export_format`, from the backends' map). The check_* functions are the
validators; `InferenceOptions` holds what they return for one inference command: built once where the
command enters (the Python API function; the CLI passes its flags through) and passed down, so nothing
below checks or resolves a value again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from fracturekit.core.device import Device, resolve_device
from fracturekit.core.errors import UserError

if TYPE_CHECKING:
    from fracturekit.evaluation.metrics import ThresholdRule

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


def check_threshold(value: str | ThresholdRule) -> ThresholdRule:
    """A --threshold rule (youden, f1, sens:T or a probability) parsed, else UserError listing the choices.

    A rule parsed already (a cv fold's, parsed by cv) passes through.
    """
    from fracturekit.evaluation.metrics import THRESHOLD_HELP, ThresholdRule

    if isinstance(value, ThresholdRule):
        return value
    try:
        return ThresholdRule.parse(value)
    except ValueError as exc:
        raise UserError(f"--threshold {value}: {exc}; use {THRESHOLD_HELP}.") from exc


def imgsz_problem(value: object) -> str | None:
    """What is wrong with an imgsz (None: nothing): the one rule, for the flag and for a training config key.

    The rule: any positive integer; `check_imgsz` then rounds it up to a multiple of the stride (so 1-31
    become 32). Not "below 32 rejected": rounding up is what Ultralytics itself does with an imgsz, and
    what the README promises for every command.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return "must be a positive number of pixels"
    return None


def check_imgsz(value: int | None, stride: int = STRIDE) -> tuple[int | None, str | None]:
    """(imgsz rounded up to a multiple of `stride`, a note when it was rounded); UserError when not positive."""
    if value is None:
        return None, None
    problem = imgsz_problem(value)
    if problem:
        raise UserError(f"--imgsz {value}: {problem}, e.g. --imgsz 640.")
    assert isinstance(value, int)
    rounded = max(stride, math.ceil(value / stride) * stride)
    if rounded == value:
        return value, None
    return rounded, f"--imgsz {value} rounded up to {rounded}, a multiple of the model stride {stride}"


class InferenceDevice(NamedTuple):
    """The device of one inference command, resolved once: the Device, the torch device string, and a note
    when one GPU of several is used (`inference_device`)."""

    device: Device
    torch: str
    note: str | None

    @classmethod
    def of(cls, dev: Device) -> InferenceDevice:
        """The inference device for an already resolved `dev` (e.g. the one a cv fold trained on).

        Inference runs one model on one device; `0,1` (several GPUs, meaningful for training as DDP) uses the
        first listed GPU and says so instead of dropping the others in silence.
        """
        if dev.kind != "cuda":
            return cls(dev, dev.spec, None)
        first = dev.gpus[0]
        note = None
        if len(dev.gpus) > 1:
            why = "several GPUs help train only"
            note = f"--device {dev.spec}: inference runs on one GPU, so GPU {first} is used ({why})"
        return cls(dev, f"cuda:{first}", note)


def inference_device(requested: str | int | None = "auto") -> InferenceDevice:
    """Device for evaluate/predict/export: (Device, torch device string, a note when one GPU of several is used)."""
    return InferenceDevice.of(resolve_device(requested))


def as_inference_device(device: str | int | InferenceDevice | None) -> InferenceDevice:
    """`device` as resolved: an InferenceDevice passes through, anything else is resolved here (an entry point)."""
    return device if isinstance(device, InferenceDevice) else inference_device(device)


@dataclass(frozen=True)
class InferenceOptions:
    """The checked options of one inference command (predict, evaluate, export, a cv fold's evaluation).

    Built once by `build` where the command enters, then passed down: below it nothing re-checks a value or
    resolves the device again. `imgsz` is None (each model's own) or rounded up to a multiple of STRIDE;
    `conf` is None for commands without boxes to show; `threshold` None for commands that choose none;
    `notes` say what was adjusted (imgsz rounded, one GPU of several).
    """

    device: InferenceDevice
    imgsz: int | None = None
    conf: float | None = None
    iou: float = NMS_IOU
    threshold: ThresholdRule | None = None
    batch: int | None = None
    threads: int | None = None
    backend: str = "auto"
    notes: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        *,
        device: str | int | InferenceDevice | None = "auto",
        imgsz: int | None = None,
        conf: float | None = None,
        iou: float = NMS_IOU,
        threshold: str | ThresholdRule | None = None,
        batch: int | None = None,
        threads: int | None = None,
        backend: str = "auto",
    ) -> InferenceOptions:
        """Check every option (UserError naming the flag) and resolve the device, once, in this order."""
        if batch is not None and batch < 1:
            raise UserError(f"--batch {batch}: must be at least 1.")
        check_fraction(conf, "--conf")
        check_fraction(iou, "--iou")
        check_backend(backend)
        size, size_note = check_imgsz(imgsz)
        dev = as_inference_device(device)
        rule = check_threshold(threshold) if threshold is not None else None
        notes = tuple(n for n in (size_note, dev.note) if n)
        return cls(dev, size, conf, iou, rule, batch, threads, backend, notes)


def check_backend(backend: str) -> str:
    """A --backend name of the backends' map (or auto), else UserError listing them."""
    from fracturekit.infer.backends import BACKENDS

    if backend not in BACKENDS:
        raise UserError(f"--backend {backend}: unknown; use one of {', '.join(BACKENDS)}.")
    return backend


def check_task(weights: str | Path, model_task: str | None, wanted: str) -> None:
    """UserError when a classify model is passed where a detect model is needed, or the reverse."""
    if model_task == wanted:
        return
    flag = {"detect": "--detector", "classify": "--classifier"}.get(str(model_task))
    fix = f"pass it as {flag}" if flag else f"pass a `fracturekit train --task {wanted}` run"
    raise UserError(f"{weights}: a {model_task} model was given where a {wanted} model is needed; {fix}.")
