"""`fracturekit export`: a thin layer over `fracturekit.export.export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fracturekit.cli import flags
from fracturekit.cli.app import app, console, library_notes, user_errors
from fracturekit.infer import backends


@app.command()
@user_errors
def export(
    weights: Annotated[Path, typer.Argument(help="A train run folder or a .pt weights file.")],
    fmt: Annotated[
        str,
        typer.Option("--format", help=f"{backends.format_help()}: formats that work offline."),
    ] = backends.DEFAULT_FORMAT,
    imgsz: flags.Imgsz = None,
    device: flags.Device = "auto",
    int8: Annotated[
        bool,
        typer.Option(
            "--int8", help=f"int8, calibrated on the run's training films ({', '.join(backends.int8_formats())})."
        ),
    ] = False,
    check: Annotated[
        bool, typer.Option(help="Check accuracy and speed against float32 on the val split (sidecar JSON).")
    ] = True,
    data: Annotated[
        Path | None,
        typer.Option(help="Prepared dataset for int8 calibration and the check; default: the run's own."),
    ] = None,
) -> None:
    """Export a trained model; the file is written beside the weights, its accuracy check beside it."""
    from fracturekit.export import export_checked
    from fracturekit.infer.model import check_path

    with library_notes():
        exported = export_checked(weights, fmt=fmt, imgsz=imgsz, device=device, int8=int8, check=check, data=data)
    path, c = exported.path, exported.check
    console.print(f"exported {path}", highlight=False)
    if c is not None:
        sidecar = check_path(path)
        verdict = "passed: predict may use it" if c["passed"] else "FAILED: predict will not use it unless asked"
        console.print(
            f"accuracy check on {c['split']} ({c['n_images']} films, {c['backend']} {c['precision']}): {c['summary']}; "
            f"{c['speed']['ratio']:.2f}x the speed of PyTorch float32 -> {verdict} ({sidecar.name})",
            highlight=False,
        )
