"""Typer options shared by train, evaluate, predict and export: one spelling, one help text, one default.

Values are checked by `fracturekit.core.options` inside the Python API, so a mistake reads the same from
the CLI and from Python: one sentence and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

DEVICE_HELP = "auto (CUDA GPU 0, then Apple MPS, then CPU), cpu, mps, a GPU index (0) or several (0,1: train only)."
IMGSZ_HELP = "Image size in pixels, rounded up to a multiple of 32 (default: the model's training size)."

Device = Annotated[str, typer.Option("--device", help=DEVICE_HELP)]
Imgsz = Annotated[int | None, typer.Option("--imgsz", help=IMGSZ_HELP)]
Conf = Annotated[float, typer.Option("--conf", help="Least confidence of boxes drawn and listed, in (0, 1].")]
MaxPixels = Annotated[
    int,
    typer.Option("--max-pixels", help="Refuse films of more pixels than this (all frames), before decoding them."),
]
Iou = Annotated[float, typer.Option("--iou", help="IoU above which non-maximum suppression merges boxes, in (0, 1].")]

# Training options that `train` and `cv` share (cv passes them on to every fold's training).
Weights = Annotated[Path | None, typer.Option(help="Pretrained .pt checkpoint to fine-tune.")]
Epochs = Annotated[int | None, typer.Option(help="Training epochs.")]
TrainImgsz = Annotated[int | None, typer.Option(help="Square training image size, rounded up to a multiple of 32.")]
Batch = Annotated[int | None, typer.Option(help="Batch size.")]
Freeze = Annotated[int | None, typer.Option(help="Hold the first N layers (phase 1).")]
Deterministic = Annotated[
    bool,
    typer.Option(
        "--deterministic",
        help="The same weights on machines of one kind: float32 on CPU, 1 thread unless --threads, deterministic "
        "algorithms (config key reproducible); slower.",
    ),
]
FreezeEpochs = Annotated[int | None, typer.Option(help="Phase-1 epochs before all layers train (default half).")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="YAML overriding the task defaults.")]
SetOptions = Annotated[
    Optional[list[str]],  # noqa: UP045 (typer 0.29 cannot parse list[str] | None)
    typer.Option("--set", help="Any config key, e.g. --set lr0=0.001 (repeatable)."),
]
