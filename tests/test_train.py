"""`fracturekit train`: end-to-end CLI runs on phantoms (offline, CPU, tiny) and the pieces around them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import network_guard
from typer.testing import CliRunner

from fracturekit.cli.app import app
from fracturekit.data.phantoms import generate_phantom
from fracturekit.training.config import resolve_config

runner = CliRunner()
RUN_JSON_KEYS = {"seed", "versions", "device", "threads", "data", "data_hash", "timings", "pretrained", "metrics"}


@pytest.fixture(scope="module")
def cli_runs(prepared_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """One CLI run per task (imgsz 32/64, CPU) under conftest's network guard: task -> (run dir, CLI output)."""
    project = tmp_path_factory.mktemp("cli-runs")
    extra = {
        "classify": ["--imgsz", "32", "--epochs", "1"],
        "detect": ["--imgsz", "64", "--epochs", "1", "--set", "mosaic=0.5"],
    }
    out = {}
    with network_guard() as attempts:
        for task, flags in extra.items():
            result = runner.invoke(
                app,
                ["train", "--task", task, "--data", str(prepared_phantoms), "--project", str(project)]
                + ["--name", "e2e", "--batch", "8", "--device", "cpu", "--seed", "3", "--set", "plots=false", *flags],
            )
            assert result.exit_code == 0, result.output
            out[task] = (project / task / "e2e", result.output)
        assert attempts == [], f"network attempted: {attempts}"
    return out


@pytest.mark.parametrize("task", ["classify", "detect"])
def test_cli_train_end_to_end(cli_runs: dict[str, tuple[Path, str]], prepared_phantoms: Path, task: str) -> None:
    run, output = cli_runs[task]
    # weights written and loadable by plain Ultralytics
    from ultralytics import YOLO

    model = YOLO(str(run / "weights" / "best.pt"))
    assert model.task == task and (run / "weights" / "last.pt").is_file()
    # the resolved config records the CLI overrides, and is reusable as --config
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["batch"], saved["seed"], saved["device"], saved["plots"]) == (8, 3, "cpu", False)
    assert saved["imgsz"] == (32 if task == "classify" else 64)
    assert "# batch: from the command line" in (run / "config.yaml").read_text()
    # the run record
    record = json.loads((run / "run.json").read_text())
    assert record.keys() >= RUN_JSON_KEYS
    prepared = json.loads((prepared_phantoms / "prepare.json").read_text())
    assert record["data_hash"] == prepared["data_hash"] and record["data"] == str(prepared_phantoms.resolve())
    assert record["seed"] == 3 and record["device"]["used"] == "cpu" and record["device"]["amp"] is False
    assert record["threads"] >= 1 and record["pretrained"] == "from scratch (offline)"
    assert set(record["versions"]) >= {"fracturekit", "ultralytics", "torch", "python"}
    assert len(record["timings"]["per_epoch_s"]) == 1 and record["timings"]["total_s"] > 0
    assert (run / "results.csv").read_text().count("\n") == 2  # header + one row per epoch
    # nothing written into the dataset: Ultralytics' label caches stay in memory
    assert not list(prepared_phantoms.rglob("*.cache"))
    # the CLI summary
    assert "no pretrained weights offline: training" in output
    assert f"run folder: {run}" in output.replace("\n", "") or str(run) in output
    key = "top1" if task == "classify" else "mAP50-95"
    assert f"{key} {record['metrics'][key]:.4f}" in output and "s/epoch" in output


def test_classify_pipeline_used(cli_runs: dict[str, tuple[Path, str]]) -> None:
    pipeline = json.loads((cli_runs["classify"][0] / "run.json").read_text())["pipeline"]
    assert pipeline["sampler"] == "WeightedRandomSampler"  # class-balanced sampling really in the loader
    assert pipeline["albumentations"] == ["CLAHE(p=0.2)", "RandomBrightnessContrast(p=0.3)", "RandomGamma(p=0.3)"] + [
        "Affine(p=0.5)"
    ]


def test_detect_pipeline_keeps_backgrounds(cli_runs: dict[str, tuple[Path, str]], prepared_phantoms: Path) -> None:
    pipeline = json.loads((cli_runs["detect"][0] / "run.json").read_text())["pipeline"]
    empty = [p for p in (prepared_phantoms / "det" / "labels" / "train").glob("*.txt") if not p.read_text().strip()]
    assert pipeline["background_images"] == len(empty) > 0
    assert "CLAHE(p=0.2)" in pipeline["albumentations"]


def test_existing_name_is_refused_and_finished_run_not_resumed(
    cli_runs: dict[str, tuple[Path, str]], prepared_phantoms: Path
) -> None:
    run = cli_runs["classify"][0]
    base = ["train", "--task", "classify", "--data", str(prepared_phantoms), "--project", str(run.parents[1])]
    again = runner.invoke(app, [*base, "--name", "e2e", "--epochs", "1"])
    assert again.exit_code == 2 and "already exists" in again.output
    resumed = runner.invoke(app, [*base, "--name", "e2e", "--resume"])
    assert resumed.exit_code == 2 and "nothing to resume" in resumed.output


def test_missing_task_folder_names_prepare(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("source\n")
    result = runner.invoke(app, ["train", "--task", "detect", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "fracturekit prepare" in result.output and "det/data.yaml" in result.output


def test_detect_on_a_dataset_without_boxes_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Class folders have no boxes: prepare writes det/data.yaml and no det image, and `train --task detect` said so
    with Ultralytics' RuntimeError traceback ("images not found"), leaving an empty run folder."""
    from fracturekit.data.phantoms import write_phantom_dataset

    monkeypatch.chdir(tmp_path)
    write_phantom_dataset(Path("raw"), 12, fmt="folders", size=64)
    assert runner.invoke(app, ["prepare", "raw", "--out", "ds"]).exit_code == 0
    result = runner.invoke(app, ["train", "--task", "detect", "--data", "ds", "--project", "runs", "--epochs", "1"])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "det/images/train and val hold no film" in said and "--task classify" in said
    assert "Traceback" not in result.output and not Path("runs").exists()


def test_pretrained_weights_found_locally(
    cli_runs: dict[str, tuple[Path, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fracturekit.train import _build_model

    best = cli_runs["classify"][0] / "weights" / "best.pt"
    monkeypatch.chdir(tmp_path)
    shutil.copy(best, tmp_path / "yolov8n-cls.pt")  # the standard name in the working directory
    cfg = resolve_config("classify", None, {"project": str(tmp_path)})
    model, source = _build_model("classify", cfg, tmp_path)
    assert source == str(tmp_path / "yolov8n-cls.pt") and model.task == "classify"
    cfg = resolve_config("classify", None, {"weights": str(best)})  # --weights wins over the standard name
    assert _build_model("classify", cfg, tmp_path)[1] == str(best)


def test_run_names_increment(tmp_path: Path) -> None:
    from fracturekit.train import _run_folder

    cfg = resolve_config("detect", None, {"project": str(tmp_path)})
    assert _run_folder("detect", cfg) == tmp_path / "detect" / "train"
    (tmp_path / "detect" / "train").mkdir(parents=True)
    assert _run_folder("detect", cfg) == tmp_path / "detect" / "train2"


def _write_multiclass(root: Path, classes: tuple[str, ...], per_class: dict[str, int]) -> Path:
    """A prepared-style dataset with cls/ only: phantoms filed under arbitrary class folders."""
    i = 0
    for split, n in per_class.items():
        for k, name in enumerate(classes):
            for _ in range(n * (k + 1)):  # imbalanced on purpose: class k has (k + 1) x n films
                folder = root / "cls" / split / name
                folder.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / f"{i:04d}.png"), generate_phantom(7, i, 48).image)
                i += 1
    (root / "manifest.csv").write_text("source\n")
    return root


def test_multiclass_two_phase_classification(tmp_path: Path) -> None:
    from fracturekit.train import train

    data = _write_multiclass(tmp_path / "ds", ("forearm", "hand", "leg"), {"train": 4, "val": 2})
    run = train(
        "classify", data, project=tmp_path / "runs", epochs=2, freeze=9, freeze_epochs=1, imgsz=32, batch=8, plots=False
    )
    record = json.loads(run.record.read_text())
    assert record["pipeline"]["freeze_released_at_epoch"] == 2  # phase 2 (all layers train) began at epoch 2
    assert len(record["timings"]["per_epoch_s"]) == 2
    assert record["pipeline"]["class_counts"] == {"forearm": 4, "hand": 8, "leg": 12}
    assert record["data_hash"] is None  # no prepare.json: recorded as unknown, not invented
    from ultralytics import YOLO

    assert list(YOLO(str(run.best)).names.values()) == ["forearm", "hand", "leg"]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([0, 0, 0, 1], [1 / 3, 1 / 3, 1 / 3, 1.0]),  # binary, 3:1
        ([0, 1, 2, 2], [1.0, 1.0, 0.5, 0.5]),  # three classes
        ([1, 1], [0.5, 0.5]),  # one class present
    ],
)
def test_balanced_sample_weights(labels: list[int], expected: list[float]) -> None:
    from fracturekit.training.trainers import balanced_sample_weights

    weights = balanced_sample_weights(labels)
    np.testing.assert_allclose(weights, expected)
    per_class = np.bincount(labels, weights=weights)
    assert np.allclose(per_class[per_class > 0], 1.0)  # each present class carries the same total weight


def test_release_frozen_layers() -> None:
    from fracturekit.training.trainers import release_frozen_layers

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    for p in net[0].parameters():
        p.requires_grad = False
    trainer = SimpleNamespace(model=net, epoch=0, freeze_layer_names=["0."])
    callback = release_frozen_layers(after_epochs=2)
    for epoch in range(2):  # phase 1: still frozen
        trainer.epoch = epoch
        callback(trainer)
        assert not net[0].weight.requires_grad
    trainer.epoch = 2
    callback(trainer)
    assert all(p.requires_grad for p in net.parameters())
    assert trainer.freeze_layer_names == [".dfl"] and trainer.fk_released == 3


def test_same_seed_same_classifier_losses(prepared_phantoms: Path, tmp_path: Path) -> None:
    """Same seed, same losses: albumentations 2 seeds itself from OS entropy unless fracturekit seeds it."""
    import csv

    from fracturekit.train import train

    losses = []
    for name in ("a", "b"):
        run = train(
            task="classify", data=prepared_phantoms, project=str(tmp_path), name=name, epochs=2, imgsz=32, batch=8
        ).root
        with (run / "results.csv").open() as f:
            losses.append([row["train/loss"] for row in csv.DictReader(f)])
    assert losses[0] == losses[1]


# ------------------------------------------------------------------ --logger: Ultralytics' own callbacks, in the run
def _tiny_train_args(data: Path, project: Path, logger: str) -> list[str]:
    args = ["train", "--task", "classify", "--data", str(data), "--project", str(project), "--name", logger]
    return args + ["--imgsz", "32", "--epochs", "1", "--batch", "8", "--device", "cpu", "--logger", logger]


@pytest.mark.slow
def test_logger_tensorboard_writes_events_in_the_run(prepared_phantoms: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="optional extra: pip install 'fracturekit[tensorboard]'")
    import os
    import subprocess
    import sys

    # A child process: Ultralytics switches TensorBoard off whenever it sees pytest (PYTEST_CURRENT_TEST).
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    code = "from fracturekit.cli import main; main()"
    args = _tiny_train_args(prepared_phantoms, tmp_path / "runs", "tensorboard")
    res = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    events = list((tmp_path / "runs" / "classify" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing written beside the run


@pytest.mark.slow
def test_mlflow_logger_file_store_in_the_run(prepared_phantoms: Path, tmp_path: Path, no_network: list[str]) -> None:
    # The test name holds "test_mlflow": Ultralytics' MLflow callback stays on under pytest only then.
    pytest.importorskip("mlflow", reason="optional extra: pip install 'fracturekit[mlflow]'")
    import os

    res = runner.invoke(app, _tiny_train_args(prepared_phantoms, tmp_path / "runs", "mlflow"))
    assert res.exit_code == 0, res.output
    store = tmp_path / "runs" / "classify" / "mlflow" / "mlflow"
    metrics = list(store.glob("*/*/metrics/*"))
    assert any(p.name.startswith("metrics") for p in metrics), sorted(str(p) for p in store.rglob("*"))[:20]
    assert "MLFLOW_TRACKING_URI" not in os.environ  # set for the training only


def test_logger_missing_package_or_bad_name_is_one_sentence(prepared_phantoms: Path, tmp_path: Path) -> None:
    import importlib.util

    res = runner.invoke(app, _tiny_train_args(prepared_phantoms, tmp_path, "wandb"))
    assert res.exit_code == 2 and "must be one of none, tensorboard, mlflow" in " ".join(res.output.split())
    if importlib.util.find_spec("mlflow") is None:
        res = runner.invoke(app, _tiny_train_args(prepared_phantoms, tmp_path, "mlflow"))
        assert res.exit_code == 2 and "fracturekit[mlflow]" in res.output
    assert not (tmp_path / "classify").exists()  # refused before any run folder is made
