"""Inference backends as plug-ins: one module per backend, each a `Backend` subclass, all in one map.

`BACKEND_MAP` (base.py) holds every backend by name; what lists backends is derived from it here: the
`--backend` choices and `EXPORTS` (the run's files each backend owns), the backend that loads a given
weights file on a given device, the weights chooser's fallback ranks (`Backend.rank`), export's format list
and the CLI help. A new backend is one new module in this package (and, when it has an export format of its
own, its writer in fracturekit/export.py); this file imports every module here, so nothing else changes.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from pathlib import Path

from fracturekit.core.device import Device
from fracturekit.infer.backends.base import BACKEND_MAP, Backend, Loaded, Variant

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

ORDERED: tuple[type[Backend], ...] = tuple(sorted(BACKEND_MAP.values(), key=lambda b: b.order))
# --backend NAME -> (the backend that owns that file of a run, the file)
VARIANTS: dict[str, tuple[type[Backend], Variant]] = {v.name: (b, v) for b in ORDERED for v in b.variants}
REFERENCE: type[Backend] = next(b for b in ORDERED if b.reference)  # reads best.pt, which exports are made from
REFERENCE_NAME = REFERENCE.variants[0].name  # --backend NAME of the run's own float32 checkpoint
CAM_NAME = next(v.name for b in ORDERED if b.cam for v in b.variants)  # --backend NAME that gives EigenCAM
# Exports of a run's best.pt, as `fracturekit export` names them: --backend NAME -> path under weights/.
EXPORTS = {name: v.file for name, (b, v) in VARIANTS.items() if not b.reference}
BACKENDS = ("auto", *VARIANTS)
# `fracturekit export`'s default --format: the first backend export every install can write (onnx).
DEFAULT_FORMAT = next(b.export_format for b in ORDERED if b.export_format and not b.optional)
# Ultralytics export formats that need nothing from the network and that no backend here reads: their module
# (None: torch alone). Ultralytics pip-installs a missing exporter at export time (offline: a failure after a
# wait), so only installed ones count.
OTHER_FORMATS: dict[str, str | None] = {"torchscript": None}


def backend_for(path: Path, device: Device) -> type[Backend]:
    """The backend that loads `path` for `device`: the first by order that reads it and is usable there; the
    reference backend for any other file (Ultralytics then says whether it is a checkpoint)."""
    return next((b for b in ORDERED if b.reads(path) and b.usable(device)), REFERENCE)


def reads_any(path: Path) -> bool:
    """Some backend loads `path` as it is (a weights file or an export folder, not a run folder)."""
    return any(b.reads(path) for b in ORDERED)


def export_modules() -> dict[str, str | None]:
    """Every export format that works offline given its module: the backends' own, the others, then those that
    need an optional extra. The module each needs (None: torch alone)."""
    own = {b.export_format: b.export_module for b in ORDERED if b.export_format and not b.optional}
    extra = {b.export_format: b.export_module for b in ORDERED if b.export_format and b.optional}
    return {**own, **OTHER_FORMATS, **extra}


def export_formats() -> list[str]:
    """The export formats that work offline on this machine (their exporter package is installed)."""
    return [f for f, m in export_modules().items() if m is None or importlib.util.find_spec(m) is not None]


def checked_formats() -> tuple[str, ...]:
    """Export formats a backend here reads: export checks their accuracy against float32."""
    return tuple(b.export_format for b in ORDERED if b.export_format)


def int8_formats() -> tuple[str, ...]:
    """Export formats `--int8` is offered for: those of backends owning an int8 variant."""
    return tuple(b.export_format for b in ORDERED if b.export_format and any(v.int8 for v in b.variants))


def weights_help() -> str:
    """E.g. '.pt, .onnx, OpenVINO folder': the weights the backends read, for the CLI help."""
    return ", ".join(dict.fromkeys(b.weights_help for b in ORDERED))


def format_help() -> str:
    """E.g. 'onnx, torchscript (and openvino when installed)': export's formats, for the CLI help."""
    modules = export_modules()
    optional = [b.export_format for b in ORDERED if b.export_format and b.optional]
    always = ", ".join(f for f in modules if f not in optional)
    return always + (f" (and {', '.join(optional)} when installed)" if optional else "")


def batch_help() -> str:
    """E.g. '8 with PyTorch, 1 with ONNX Runtime on CPU, ...': each backend's default batch, for the CLI help."""
    return ", ".join(b.batch_help for b in ORDERED)


__all__ = [
    "BACKENDS",
    "BACKEND_MAP",
    "CAM_NAME",
    "DEFAULT_FORMAT",
    "EXPORTS",
    "ORDERED",
    "REFERENCE",
    "REFERENCE_NAME",
    "VARIANTS",
    "Backend",
    "Loaded",
    "Variant",
    "backend_for",
    "batch_help",
    "checked_formats",
    "export_formats",
    "format_help",
    "int8_formats",
    "reads_any",
    "weights_help",
]
