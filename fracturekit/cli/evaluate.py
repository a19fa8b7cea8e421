"""`fracturekit evaluate`: a thin layer over `fracturekit.evaluate.evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fracturekit.cli import flags
from fracturekit.cli.app import app, console, library_notes, out_console, progress_bars, tagged, user_errors


@app.command()
@user_errors
def evaluate(
    data: Annotated[Path, typer.Option("--data", help="Prepared dataset folder (from `fracturekit prepare`).")],
    classifier: Annotated[
        Path | None, typer.Option("--classifier", help="Classification run folder or its weights/best.pt.")
    ] = None,
    detector: Annotated[
        Path | None, typer.Option("--detector", help="Detection run folder or its weights/best.pt.")
    ] = None,
    scores: Annotated[
        list[Path] | None,
        typer.Option(
            "--scores",
            help="An outside model's scores instead of a run: CSV path,score (or one column per class) for a "
            "classifier, COCO results JSON for a detector; rows for val and the evaluated split.",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Name of the --scores model (default: the file's stem).")
    ] = None,
    seen: Annotated[
        Path | None,
        typer.Option("--seen", help="Films the --scores model trained on (one path a line): the seen-film check."),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Split to evaluate: train, val or test.")] = "test",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Output folder (default: <classifier or detector run>/eval, eval2, ...; runs/eval-<name>)."
        ),
    ] = None,
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", help="Replace what an earlier evaluate wrote in --out; nothing else.")
    ] = False,
    allow_overlap: Annotated[
        bool,
        typer.Option("--allow-overlap", help="Score even films the runs trained on (recorded in metrics.json)."),
    ] = False,
    threshold: Annotated[
        str,
        typer.Option("--threshold", help="Decision threshold rule, chosen on val: youden, f1, sens:0.95 or 0.5."),
    ] = "youden",
    by: Annotated[
        list[str] | None, typer.Option("--by", help="Manifest column(s) to break metrics down by: --by region,view.")
    ] = None,
    imgsz: flags.Imgsz = None,
    device: flags.Device = "auto",
    bootstrap: Annotated[int, typer.Option("--bootstrap", help="Bootstrap resamples for the AUROC 95% CI.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap random seed.")] = 0,
    cases: Annotated[
        int, typer.Option("--cases", help="Pictures per kind of case (missed, false alarm, ...) in the report.")
    ] = 8,
) -> None:
    """Metrics (mAP both ways, AUROC + CI, calibrated threshold, subgroups) into metrics.json and report.html."""
    from fracturekit.evaluate import evaluate as run_evaluate
    from fracturekit.evaluation.report import summary_table

    with library_notes(), progress_bars(transient=True) as bar:  # notes (imgsz rounded, ...): yellow lines
        m = run_evaluate(
            data,
            classifier=classifier,
            detector=detector,
            scores=scores,
            name=name,
            seen=seen,
            split=split,
            out=out,
            threshold=threshold,
            by=[c.strip() for b in by or [] for c in b.split(",") if c.strip()],
            imgsz=imgsz,
            device=device,
            bootstrap=bootstrap,
            seed=seed,
            exist_ok=exist_ok,
            cases=cases,
            allow_overlap=allow_overlap,
            progress=bar,
        )
    out_console.print(summary_table(m))
    for warning in m["warnings"]:  # the report's warnings box, said where the table is read too
        console.print(tagged("warning:", "yellow", warning), highlight=False)
    overlap = m["provenance"]["train_overlap"]
    if overlap is None:
        console.print(
            tagged(
                "warning:",
                "yellow",
                "a model has no record of its training films (no seen.csv, or --scores without --seen): seen films "
                "were not checked",
            )
        )
    elif overlap:
        console.print(
            tagged("warning:", "yellow", f"{overlap} scored films were seen in training (--allow-overlap): optimistic")
        )
    console.print(f"wrote metrics.json, predictions.csv, cases.csv, report.html to {m['out']}", highlight=False)
