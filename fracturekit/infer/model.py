"""A model loaded for inference, one way for every command: a run folder or weights file -> `Model`.

The backends (PyTorch `.pt`, ONNX Runtime `.onnx` and `.int8.onnx`, OpenVINO `*_openvino_model/` folders, and
whichever others `fracturekit.infer.backends` holds) are plug-ins: this module asks their map which one reads
a file here, and lets it load and run the model. Outputs then go through the same NMS, so the backends agree
to their precision. Given a run folder, `load_model` uses the fastest export whose accuracy check passed
(`choose_weights`). `load_model` runs on the device its command resolved once (`options.InferenceOptions`);
a device string (a direct call) is resolved with `options.inference_device`, the one device rule of every
inference command.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fracturekit.core.device import Device
from fracturekit.core.errors import UserError
from fracturekit.core.layout import RunDir
from fracturekit.core.options import InferenceDevice, as_inference_device, check_task, inference_device
from fracturekit.core.paths import user_path
from fracturekit.core.yolo_env import cpu_threads, load_ultralytics
from fracturekit.infer.backends import BACKEND_MAP, BACKENDS, EXPORTS, REFERENCE_NAME, VARIANTS, backend_for, reads_any
from fracturekit.infer.backends.base import Backend

DEFAULT_IMGSZ = 640  # Ultralytics' default imgsz, for weights that record none


@dataclass
class Model:
    """A loaded detector or classifier, on any backend of `BACKEND_MAP`, with what inference needs to know."""

    task: str  # "detect" | "classify"
    backend: str  # a key of BACKEND_MAP: "torch", "onnx", "openvino", ...
    weights: Path
    names: dict[int, str]
    imgsz: int
    stride: int
    fixed_shape: tuple[int, int] | None  # (h, w) of a static-shape input
    fixed_batch: int | None  # the batch size a static-shape input requires
    run: RunDir | None
    net: Any  # what the backend runs: a torch nn.Module, an onnxruntime session, OpenVINO infer requests, ...
    metrics: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"  # torch device string of where it runs
    precision: str = "float32"  # what the arithmetic runs in: float32, int8, bf16 (OpenVINO's choice), fp16
    chosen: str = ""  # why these weights were used when a run folder was given (choose_weights)
    threads: int = 1  # the CPU threads it was loaded with (`cpu_threads(threads)`)
    # At most `calls(1)` forward calls at once: another model's calls may run several scorer calls at once
    _gate: threading.BoundedSemaphore = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._gate = threading.BoundedSemaphore(max(1, self.runner.calls(self, 1)))

    @property
    def runner(self) -> type[Backend]:
        """The backend class that loaded and runs this model."""
        return BACKEND_MAP[self.backend]

    @property
    def label(self) -> str:
        """E.g. 'OpenVINO int8 (best_int8_openvino_model)': which model and path predict used."""
        return self.runner.label(self)

    @property
    def cam(self) -> bool:
        """Its backend gives EigenCAM heatmaps (the PyTorch graph)."""
        return self.runner.cam

    def inputs(self, images: list[np.ndarray]) -> np.ndarray:
        """The batch `forward` takes for uint8 gray (H, W) images of one shape (`Backend.inputs`)."""
        return self.runner.inputs(self, images)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Run a batch made by `inputs`; returns the raw head output as numpy. Safe from several threads: at most
        as many calls as its backend allows run at once, the others wait."""
        with self._gate:
            return self.runner.forward(self, x)

    @property
    def parallel(self) -> int:
        """Films its backend runs at once without slowing each (one per OpenVINO stream, else 1)."""
        return self.runner.parallel(self)

    def calls(self, batch: int) -> int:
        """Forward calls of `batch` films `scoring.stream` makes at once from several threads (`Backend.calls`)."""
        return self.runner.calls(self, batch)

    @property
    def default_batch(self) -> int:
        """Films per forward call its backend runs fastest with when --batch is not given."""
        return self.runner.default_batch(self)


def resolve_weights(path: str | Path) -> tuple[Path, RunDir | None]:
    """A weights file (or export folder) and the run it belongs to (None for a loose one); a run folder means
    its best.pt."""
    p = user_path(path)
    if p.is_dir() and not reads_any(p):
        run = RunDir.find(p)
        if not run.best.is_file():
            raise UserError(f"{run.best}: missing; the run has no best weights, train it to completion first.")
        return run.best, run
    if not p.exists():
        raise UserError(f"{p}: no such weights file or run folder; pass a `fracturekit train` run or a .pt/.onnx.")
    run = RunDir(p.parent.parent) if p.parent.name == "weights" else None
    return p, run


def check_path(export_path: Path) -> Path:
    """The sidecar JSON holding an export's accuracy (and speed) check against float32."""
    return export_path.parent / f"{export_path.name}.check.json"


def _fallback_rank(name: str) -> int | None:
    """Where export `name` ranks on this kind of CPU when it was measured elsewhere (lower = preferred; None:
    never chosen unmeasured): its backend's `rank`."""
    from fracturekit.core.device import cpu_info

    backend, variant = VARIANTS[name]
    return backend.rank(variant, cpu_info())


def choose_weights(run: RunDir, backend: str = "auto", device: Device | None = None) -> tuple[Path, str]:
    """The weights of `run` to predict with, and a sentence saying why.

    `auto`: among the run's exports whose sidecar check passed (no metric lost more than the allowed
    0.01 against float32), the one measured fastest here: on this kind of CPU (same model name and flags)
    by the backend that would load it here (`backend_for` on `device`, None: `--device auto`); exports
    measured elsewhere are ranked by their backend's `rank`; none passed: best.pt (PyTorch).
    A named backend takes that export, even one that failed its check (with a note saying so).
    """
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend}: unknown; use one of {', '.join(BACKENDS)}.")
    if backend == REFERENCE_NAME:
        return run.best, f"PyTorch float32, as asked (--backend {backend})"
    weights = run.best.parent
    if backend != "auto":
        target = weights / EXPORTS[backend]
        if not target.exists():
            owner, variant = VARIANTS[backend]
            flag = " --int8" if variant.int8 else ""
            raise UserError(
                f"{target}: missing; run `fracturekit export {run.root} --format {owner.export_format}{flag}` first."
            )
        check = _read_check(check_path(target))
        why = f"{backend}, as asked (--backend {backend})"
        if check and not check.get("passed"):
            why += f"; WARNING: it failed its accuracy check ({check.get('summary', '')})"
        return target, why
    from fracturekit.core.device import cpu_info

    here, dev = cpu_info(), device or inference_device("auto")[0]
    candidates = []
    for name, rel in EXPORTS.items():
        check = _read_check(check_path(weights / rel))
        if not (weights / rel).exists() or not check or not check.get("passed"):
            continue
        runner = backend_for(weights / rel, dev)
        cpu = check.get("cpu", {})
        same = cpu.get("model") == here.model and tuple(cpu.get("flags", ())) == here.flags
        same = same and check.get("backend", runner.name) == runner.name  # measured by the backend that runs it
        speed = float(check.get("speed", {}).get("ratio") or 0.0)
        fallback = runner.rank(VARIANTS[name][1], here)
        if not same and fallback is None:
            continue  # a backend that is never chosen unmeasured
        candidates.append(((0, -speed) if same else (1, fallback), name, check))
    if not candidates:
        return run.best, "PyTorch float32: the run has no export that passed an accuracy check (`fracturekit export`)"
    (elsewhere, _), name, check = min(candidates, key=lambda c: c[:2])
    how = "measured on another CPU" if elsewhere else f"{check['speed']['ratio']:.2f}x PyTorch float32 measured here"
    return weights / EXPORTS[name], f"{name}: fastest export that passed its accuracy check ({how}; {check['summary']})"


def _read_check(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}  # an unreadable sidecar means unchecked: auto will not use that export


def read_metrics(run: RunDir | None) -> dict[str, Any]:
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


def default_imgsz(imgsz: int | None, run: RunDir | None, recorded: int | None) -> int:
    """The imgsz to run (or export) at: the one asked, else the run's training imgsz, else the one the weights
    record, else Ultralytics' default."""
    return int(imgsz or training_imgsz(run) or recorded or DEFAULT_IMGSZ)


def load_model(
    weights: str | Path,
    task: str,
    imgsz: int | None = None,
    threads: int | None = None,
    device: str | InferenceDevice = "auto",
    backend: str = "auto",
    with_metrics: bool = True,
) -> Model:
    """Load weights with the backend that reads them here; UserError when it is the wrong kind of model.

    A run folder loads the export `choose_weights(run, backend, device)` picks. `device` (the command's
    resolved InferenceDevice, or auto, cpu, mps, 0, cuda:0: resolved here) is where a backend that can use it
    runs (PyTorch anywhere; ONNX Runtime on a CUDA GPU when onnxruntime-gpu is installed); CPU backends run on
    CPU whatever it says. `with_metrics` False skips the run's evaluate metrics.json (evaluate writes new ones:
    an unreadable old one must not stop it).
    """
    dev, torch_device, _ = as_inference_device(device)
    path, run = resolve_weights(weights)
    chosen = ""
    given = user_path(weights)
    if run is not None and given.is_dir() and not reads_any(given):
        path, chosen = choose_weights(run, backend, dev)
    n = cpu_threads(threads)
    load_ultralytics(n)
    runner = backend_for(path, dev)
    loaded = runner.load(path, n, dev, torch_device)
    shape = loaded.shape
    fixed = (int(shape[2]), int(shape[3])) if isinstance(shape[2], int) and isinstance(shape[3], int) else None
    if fixed is not None and imgsz is not None and imgsz != max(fixed):
        raise UserError(
            f"{path}: exported for a fixed {fixed[1]}x{fixed[0]} input, not --imgsz {imgsz}; leave out --imgsz, "
            "pass --backend torch, or export again with this --imgsz."
        )
    check_task(path, loaded.task, task)
    return Model(
        task=task,
        backend=runner.name,
        weights=path,
        names={int(k): str(v) for k, v in loaded.names.items()},
        imgsz=max(fixed) if fixed is not None else default_imgsz(imgsz, run, loaded.trained_imgsz),
        stride=loaded.stride,
        fixed_shape=fixed,
        fixed_batch=int(shape[0]) if isinstance(shape[0], int) else None,
        run=run,
        net=loaded.net,
        metrics=read_metrics(run) if with_metrics else {},
        device=loaded.device,
        precision=loaded.precision,
        chosen=chosen,
        threads=n,
    )


def load_checkpoint(path: str | Path) -> Any:
    """A `.pt` checkpoint as an Ultralytics YOLO (for inference, val, export, training from it); UserError otherwise.

    Every command that loads `.pt` weights comes here, so a damaged or foreign file reads the same everywhere:
    truncated or not a PyTorch file (torch.save writes a zip archive: its directory sits at the end, so a cut
    file has none), a PyTorch file that is no Ultralytics checkpoint, or a checkpoint whose model is not a YOLO.
    """
    load_ultralytics(apply_threads=False)  # the caller (load_model, evaluate, compare) set the thread count
    import zipfile

    from ultralytics import YOLO

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such weights file; pass a run folder or its weights/best.pt.")
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"{path}: truncated or not a PyTorch checkpoint ({size:,} bytes, no archive directory at its end); "
            "copy it again from the run that wrote it."
        )
    try:
        yolo = YOLO(str(path))
    except Exception:  # Ultralytics raises many types, with several lines of advice (some of it online)
        raise UserError(
            f"{path}: a PyTorch file, but no Ultralytics YOLO checkpoint inside; "
            "pass a run's weights/best.pt written by `fracturekit train`."
        ) from None
    if not hasattr(yolo.model, "names") or yolo.task not in ("detect", "classify", "segment", "pose", "obb"):
        found = type(yolo.model).__name__
        raise UserError(
            f"{path}: holds a {found}, not a YOLO model; pass a run's weights/best.pt written by `fracturekit train`."
        )
    return yolo
