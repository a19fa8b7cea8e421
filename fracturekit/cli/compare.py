"""`fracturekit compare`: a thin layer over `fracturekit.evaluation.compare.compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fracturekit.cli.app import app, console, out_console, tagged, user_errors


@app.command()
@user_errors
def compare(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Run folders (or weights files), or `evaluate` output folders (e.g. of --scores)."),
    ],
    csv: Annotated[Path | None, typer.Option("--csv", help="Also write the table to this CSV file.")] = None,
) -> None:
    """Side-by-side table of training runs: model size, task, settings, time, val and test metrics."""
    from fracturekit.evaluation.compare import compare as run_compare
    from fracturekit.evaluation.compare import compare_table, data_warnings, films_note

    df = run_compare(runs)
    out_console.print(compare_table(df))
    for warning in data_warnings(df):
        console.print(tagged("warning:", "yellow", warning), highlight=False)
    for same, note in films_note(df):
        console.print(note if same else tagged("warning:", "yellow", note), highlight=False)
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(csv, index=False)
