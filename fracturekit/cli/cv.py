"""`fracturekit cv`: a thin layer over `fracturekit.cv.cross_validate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fracturekit.cli import flags
from fracturekit.cli.app import app, console, library_notes, user_errors
from fracturekit.core.errors import UserError
from fracturekit.evaluation.report import fmt


@app.command("cv")
@user_errors
def cv_command(
    task: Annotated[str, typer.Option("--task", help="classify or detect.")],
    data: Annotated[Path, typer.Option("--data", help="A dataset written by `fracturekit prepare`.")],
    folds: Annotated[int, typer.Option("--folds", help="Number of folds K (at least 3).")] = 5,
    project: Annotated[str | None, typer.Option(help="Parent folder: the cv goes to <project>/cv/<name>.")] = None,
    name: Annotated[
        str | None, typer.Option(help="cv folder name (default cv, cv2, ...); the same name resumes it.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="n|s|m|l|x or a .yaml/.pt; several comma-separated are compared.")
    ] = None,
    executor: Annotated[str, typer.Option(help="local, or ray (pip install 'fracturekit\\[ray]').")] = "local",
    parallel: Annotated[int, typer.Option(help="Folds at once: one GPU each, or the CPU cores divided.")] = 1,
    ray_timeout: Annotated[
        float, typer.Option("--ray-timeout", help="Seconds to wait for the Ray cluster in RAY_ADDRESS to answer.")
    ] = 60.0,
    threshold: Annotated[
        str, typer.Option(help="Threshold rule on the val fold: youden, f1, sens:0.95 or 0.5.")
    ] = "youden",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for CIs and the paired test.")] = 1000,
    weights: flags.Weights = None,
    epochs: flags.Epochs = None,
    imgsz: flags.TrainImgsz = None,
    batch: flags.Batch = None,
    patience: Annotated[int | None, typer.Option(help="Early stopping patience (epochs, on the val fold).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the folds, the training and the bootstrap.")] = None,
    device: Annotated[str | None, typer.Option(help="auto (CUDA, MPS, CPU), cpu, mps, 0 or 0,1.")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads per fold (default: all cores / --parallel).")] = None,
    freeze: flags.Freeze = None,
    freeze_epochs: flags.FreezeEpochs = None,
    config: flags.ConfigFile = None,
    set_: flags.SetOptions = None,
    export_folds: Annotated[
        Path | None,
        typer.Option(help="Write each fold's train/val/test file lists here for an outside model, and stop."),
    ] = None,
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", help="With --export-folds: replace what an earlier export wrote there.")
    ] = False,
    scores: Annotated[
        list[str] | None,
        typer.Option(help="An outside model's out-of-fold scores per fold, e.g. 'oof/fold{k}.csv'; several compare."),
    ] = None,
) -> None:
    """K-fold cross-validation on patient- and duplicate-grouped folds, locally or on a Ray cluster."""
    from fracturekit.cv import cross_validate
    from fracturekit.training.config import training_overrides

    training_flags = {
        "weights": weights,
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "patience": patience,
        "seed": seed,
        "device": device,
        "threads": threads,
        "freeze": freeze,
        "freeze_epochs": freeze_epochs,
    }
    if exist_ok and export_folds is None:
        raise UserError("--exist-ok replaces an earlier --export-folds folder; a cv run resumes by its --name instead.")
    if export_folds is not None or scores:
        what = "--export-folds" if export_folds is not None else "--scores"
        training = {
            "--model": model,
            "--executor": executor != "local",
            "--parallel": parallel != 1,
            "--config": config,
        }
        _refuse_training_options(what, training, training_flags, set_)
    if export_folds is not None:
        _export_folds(task, data, export_folds, folds, seed, exist_ok)
        return
    if scores:
        _pool_outside_scores(task, data, scores, folds, seed, project, name, threshold, bootstrap)
        return

    overrides = training_overrides(set_, training_flags)
    models = [m.strip() for m in model.split(",") if m.strip()] if model else None
    with library_notes():
        result = cross_validate(
            task,
            data,
            folds=folds,
            models=models,
            project=project,
            name=name,
            executor=executor,
            parallel=parallel,
            ray_timeout=ray_timeout,
            config=config,
            threshold=threshold,
            bootstrap=bootstrap,
            progress=lambda msg: console.print(msg, highlight=False),
            **overrides,
        )
    _print_result(result, data)


def _export_folds(task: str, data: Path, out: Path, folds: int, seed: int | None, exist_ok: bool) -> None:
    """--export-folds: write the folds' file lists for an outside model and say where."""
    from fracturekit.cv import outside

    done = outside.export_folds(task, data, out, folds=folds, seed=seed, exist_ok=exist_ok)
    console.print(
        f"wrote folds.csv and fold0..fold{folds - 1}/{{train,val,test}}.csv ({done['films']} films, seed "
        f"{done['seed']}) to {done['out']}",
        highlight=False,
    )


def _pool_outside_scores(
    task: str,
    data: Path,
    scores: list[str],
    folds: int,
    seed: int | None,
    project: str | None,
    name: str | None,
    threshold: str,
    bootstrap: int,
) -> None:
    """--scores: pool an outside model's out-of-fold scores like a cv of fracturekit's own, and show the result."""
    from fracturekit.cv import outside

    with library_notes():
        result = outside.cv_scores(
            task,
            data,
            scores,
            folds=folds,
            seed=seed,
            project=project,
            name=name,
            threshold=threshold,
            bootstrap=bootstrap,
            progress=lambda msg: console.print(msg, highlight=False),
        )
    _print_result(result, data)


def _refuse_training_options(
    what: str, training: dict[str, Any], flags: dict[str, Any], set_options: list[str] | None
) -> None:
    """A UserError naming each training option given to --export-folds or --scores, which train no model here."""
    training |= {f"--{k.replace('_', '-')}": v for k, v in flags.items() if k != "seed"}
    given = [k for k, v in training.items() if v not in (None, False)] + (["--set"] if set_options else [])
    if given:
        raise UserError(f"{', '.join(given)} train models; {what} trains none here: leave them out.")


def _print_result(result: dict[str, Any], data: Path) -> None:
    """The per-fold table, each paired comparison, where the files are, and the label-issue command to run next."""
    console.print(cv_summary_table(result))
    for c in result.get("comparison", []):
        verdict = "significant" if c["significant"] else "not significant"
        console.print(
            f"{c['a']} vs {c['b']}: pooled OOF AUROC {fmt(c['auroc_a'])} vs {fmt(c['auroc_b'])}, difference "
            f"{fmt(c['difference'])} (95% CI {fmt(c['difference_ci95'][0])} to {fmt(c['difference_ci95'][1])}), "
            f"paired bootstrap p = {fmt(c['p_value'], 4)}: {verdict} at the "
            f"5% level; {c['a']} better in "
            f"{c['folds_a_better']} of {c['n_folds']} folds",
            highlight=False,
        )
    console.print(f"wrote folds.csv, oof_predictions.csv, cv.json, report.html to {result['out']}", highlight=False)
    oof = Path(result["out"]) / "oof_predictions.csv"
    console.print(f"next, likely label errors: fracturekit audit {data} --label-issues --scores {oof}", highlight=False)


def cv_summary_table(result: dict[str, Any]) -> Table:
    """Per-fold AUROC of each model, mean ± sd, pooled out-of-fold AUROC with its CI."""
    task = result["settings"]["task"]
    key = "auroc" if task == "classify" else "image_auroc"
    table = Table(title=f"fracturekit cv: {result['settings']['folds']} folds, {task} ({key})")
    table.add_column("fold (val)")
    for m in result["models"]:
        table.add_column(f"model {m}", justify="right")
    for k in range(result["settings"]["folds"]):
        row = {f["model"]: f for f in result["folds"] if f["fold"] == k}
        first = next(iter(row.values()))
        table.add_row(f"{k} ({first['val_fold']})", *[fmt(row[m][key]) for m in result["models"]])
    table.add_row(
        "mean ± sd", *[f"{fmt(result['mean'][m][key])} ± {fmt(result['std'][m][key])}" for m in result["models"]]
    )
    oof = result["oof"]
    table.add_row(
        "pooled out-of-fold (95% CI)",
        *[
            f"{fmt(oof[m]['auroc'])} ({fmt(oof[m]['auroc_ci95'][0])}-{fmt(oof[m]['auroc_ci95'][1])})"
            for m in result["models"]
        ],
    )
    return table
