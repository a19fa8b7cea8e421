"""`fracturekit demo`: the whole pipeline on synthetic phantoms, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fracturekit.cli import flags
from fracturekit.cli.app import app, console, tagged, user_errors


def _get(metrics: dict, dotted: str) -> float | None:
    node: object = metrics
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, (int, float)) else None


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("runs/demo"),
    fast: Annotated[bool, typer.Option("--fast", help="Tiny sizes for tests: seconds, numbers mean nothing.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the phantoms, split and training.")] = 0,
    deterministic: flags.Deterministic = False,
) -> None:
    """Generate phantom X-rays, then prepare, train, evaluate and predict, all offline on this machine."""
    from fracturekit.demo import DemoStep, run_demo
    from fracturekit.evaluation.report import summary_table

    def show(step: DemoStep) -> None:
        if step.seconds is None:
            console.rule(step.title)
            return
        if step.metrics is not None:
            console.print(summary_table(step.metrics))
        console.print(tagged("done", "green", f"{step.stage} in {step.seconds:.1f} s"))

    result = run_demo(out, fast=fast, seed=seed, deterministic=deterministic, steps=show)
    m = result.metrics
    table = Table(title="fracturekit demo: test split of the phantoms")
    table.add_column("model")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("chance", justify="right")
    rows = [
        ("classifier", "AUROC", "classification.auroc", 0.5),
        ("classifier", "sensitivity @ tuned threshold", "classification.sensitivity", None),
        ("classifier", "specificity @ tuned threshold", "classification.specificity", None),
        ("detector", "mAP@0.5:0.95", "detection.map50_95", 0.0),
        ("detector", "mAP@0.5", "detection.map50", 0.0),
        ("detector", "image-level AUROC (max box conf)", "detection.image_auroc", 0.5),
    ]
    for model, name, key, chance in rows:
        value = _get(m, key)
        table.add_row(
            model, name, "n/a" if value is None else f"{value:.3f}", "" if chance is None else f"{chance:.1f}"
        )
    console.print(table)
    cls = m.get("classification") or {}
    auroc_ci = cls.get("auroc_ci95")
    if auroc_ci:
        verdict = "beats chance" if auroc_ci[0] > 0.5 else "does NOT beat chance"
        units = f" over {cls['n_units']} independent units" if cls.get("n_units") else ""
        console.print(f"classifier AUROC 95% CI [{auroc_ci[0]:.3f}, {auroc_ci[1]:.3f}]{units}: {verdict}")
    console.print(f"time: {result.timings}")
    console.print(f"report:      {result.eval_dir / 'report.html'}")
    console.print(f"predictions: {result.predictions / 'predictions.csv'} (annotated images beside it)")
    console.print(f"everything:  {result.out}")
