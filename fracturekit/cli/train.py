"""`fracturekit train`: a thin layer over `fracturekit.train.train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fracturekit.cli import flags
from fracturekit.cli.app import app, console, library_notes, user_errors


@app.command("train")
@user_errors
def train_command(
    task: Annotated[str, typer.Option("--task", help="classify (any class folders) or detect.")],
    data: Annotated[Path, typer.Option("--data", help="A dataset written by `fracturekit prepare`.")],
    project: Annotated[str | None, typer.Option(help="Parent folder of runs (default runs).")] = None,
    name: Annotated[str | None, typer.Option(help="Run folder name (default train, train2, ...).")] = None,
    model: Annotated[str | None, typer.Option(help="n|s|m|l|x or a model .yaml/.pt path.")] = None,
    weights: flags.Weights = None,
    epochs: flags.Epochs = None,
    imgsz: flags.TrainImgsz = None,
    batch: flags.Batch = None,
    patience: Annotated[int | None, typer.Option(help="Early stopping patience (epochs).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run --name from last.pt.")] = False,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    device: Annotated[str | None, typer.Option(help=flags.DEVICE_HELP + " Default: the config's (auto).")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: all allowed cores).")] = None,
    deterministic: flags.Deterministic = False,
    freeze: flags.Freeze = None,
    freeze_epochs: flags.FreezeEpochs = None,
    logger: Annotated[
        str | None, typer.Option(help="Experiment log in the run folder: none, tensorboard or mlflow.")
    ] = None,
    config: flags.ConfigFile = None,
    set_: flags.SetOptions = None,
) -> None:
    """Train a YOLOv8 classifier or fracture detector on a prepared dataset (offline-safe, CPU or GPU)."""
    from fracturekit.train import KEY_METRICS, train_recorded
    from fracturekit.training.config import training_overrides

    flags = {
        "project": project,
        "name": name,
        "model": model,
        "weights": weights,
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "patience": patience,
        "resume": resume or None,
        "seed": seed,
        "device": device,
        "threads": threads,
        "reproducible": deterministic or None,
        "freeze": freeze,
        "freeze_epochs": freeze_epochs,
        "logger": logger,
    }
    overrides = training_overrides(set_, flags)
    with library_notes():  # fracturekit's notices (e.g. "training from scratch") as yellow lines
        trained = train_recorded(task, data, config=config, **overrides)
    run, record = trained.run, trained.record
    metrics = ", ".join(f"{k} {record['metrics'][k]:.4f}" for k in KEY_METRICS[task] if k in record["metrics"])
    per_epoch = record["timings"]["mean_epoch_s"]
    console.print(f"run folder: {run.root}", highlight=False)
    console.print(f"best weights: {run.best}", highlight=False)
    console.print(f"final metrics (best.pt on val): {metrics or 'none recorded'}", highlight=False)
    console.print(
        f"time: {record['timings']['total_s']:.1f} s total, "
        f"{per_epoch if per_epoch is not None else float('nan'):.2f} s/epoch over {record['epochs_completed']} epochs "
        f"on {record['device']['name']} ({record['threads']} thread{'' if record['threads'] == 1 else 's'})",
        highlight=False,
    )
