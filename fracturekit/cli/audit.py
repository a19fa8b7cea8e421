"""`fracturekit audit`: a thin layer over `fracturekit.audit.audit`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fracturekit.cli.app import app, out_console, user_errors


@app.command()
@user_errors
def audit(
    path: Annotated[Path, typer.Argument(help="A raw dataset folder or a prepared one (with manifest.csv).")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for duplicates.csv + audit.json (default: PATH/audit if prepared, none if raw).",
        ),
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when a film or patient crosses splits.")] = False,
) -> None:
    """Find duplicate films (exact, near, augmented, by name), label conflicts and patients across splits."""
    from fracturekit.audit import audit as run_audit

    result = run_audit(path, out, progress=True)
    out_console.print(result.table())
    written = out if out is not None else (path / "audit" if (path / "manifest.csv").is_file() else None)
    if written is not None:
        out_console.print(f"wrote {written / 'duplicates.csv'} and {written / 'audit.json'}", highlight=False)
    if strict and result.leaks:
        out_console.print(f"[red]{result.leaks} leaks across splits[/]")
        raise typer.Exit(1)
