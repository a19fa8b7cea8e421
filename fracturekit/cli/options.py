"""Typer options shared by train, evaluate, predict and export: one spelling, one help text, one default.

Values are checked by `fracturekit.options` inside the Python API, so a mistake reads the same from
the CLI and from Python: one sentence and exit code 2.
"""

from __future__ import annotations

from typing import Annotated

import typer

DEVICE_HELP = "auto (CUDA GPU 0, then Apple MPS, then CPU), cpu, mps, a GPU index (0) or several (0,1: train only)."
IMGSZ_HELP = "Image size in pixels, rounded up to a multiple of 32 (default: the model's training size)."

Device = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]
Imgsz = Annotated[int | None, typer.Option("--imgsz", help=IMGSZ_HELP)]
Conf = Annotated[float, typer.Option("--conf", help="Minimum box confidence to keep, in (0, 1].")]
Iou = Annotated[float, typer.Option("--iou", help="IoU above which non-maximum suppression merges boxes, in (0, 1].")]
