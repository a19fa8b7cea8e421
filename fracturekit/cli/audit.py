"""`fracturekit audit`: a thin layer over `fracturekit.audit.audit`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fracturekit.cli.app import app, library_notes, out_console, progress_bars, tagged, user_errors
from fracturekit.core.errors import UserError


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
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", help="Replace what an earlier audit wrote in --out; nothing else.")
    ] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when a film or patient crosses splits.")] = False,
    label_issues: Annotated[
        bool, typer.Option("--label-issues", help="Rank likely label errors into label_issues.csv (see --scores).")
    ] = False,
    scores: Annotated[
        Path | None,
        typer.Option(
            "--scores", help="Out-of-sample scores (cv's oof_predictions.csv or path,score) for --label-issues."
        ),
    ] = None,
) -> None:
    """Find duplicate films (exact, near, augmented, by name), label conflicts and patients across splits."""
    from fracturekit.audit import audit as run_audit
    from fracturekit.audit import audit_folder

    if scores is not None and not label_issues:
        raise UserError("--scores is read by --label-issues: add --label-issues.")
    written = audit_folder(path, out)  # the library's rule, on the paths as typed
    if label_issues and written is None:
        raise UserError(f"{path}: a raw dataset; pass --out DIR for label_issues.csv (nothing is written into SOURCE).")
    if scores is not None:
        from fracturekit.data.label_issues import check_scores

        check_scores(path, scores)  # a CSV it cannot use is refused now, not after the audit
    with progress_bars(transient=True) as bar:
        also = ["label_issues.csv"] if label_issues else []
        result = run_audit(path, out, progress=bar, exist_ok=exist_ok, also_writes=also)
    out_console.print(result.table())
    if written is not None:
        out_console.print(f"wrote {written / 'duplicates.csv'} and {written / 'audit.json'}", highlight=False)
    if label_issues and written is not None:
        from fracturekit.data.label_issues import label_issues as find_issues

        with library_notes():
            issues = find_issues(path, result, scores)
        issues.write(written / "label_issues.csv")
        counts = issues.counts
        out_console.print(
            f"label issues: {counts['total']} films ({counts['conflict']} conflict, {counts['model']} model, "
            f"{counts['box']} box) of "
            f"{issues.n_films}; {issues.scored} scored; wrote {written / 'label_issues.csv'}"
            + (f"; review them: fracturekit review {path}" if (path / "manifest.csv").is_file() else ""),
            highlight=False,
            soft_wrap=True,
        )
    if strict and result.leaks:
        out_console.print(tagged(f"{result.leaks} leaks across splits", "red"))
        raise typer.Exit(1)
