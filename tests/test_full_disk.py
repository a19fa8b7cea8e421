"""A full disk: prepare, predict and train stop with one sentence naming the folder and the space needed; prepare
leaves nothing, predict keeps its finished films and `predict --resume` completes once space is freed; train
keeps its last whole epoch and `train --resume` completes the run.

Needs root for a small tmpfs (`mount -t tmpfs -o size=4m`); skipped otherwise."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from fracturekit.core.errors import UserError
from fracturekit.core.folderlock import LOCK


def _tmpfs(tmp_path: Path, size: str) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip(f"mounting a {size} tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    yield from _tmpfs(tmp_path, "4m")


@pytest.fixture
def training_disk(tmp_path: Path) -> Iterator[Path]:
    """36 MB: a yolov8n-cls run's config, seen.csv and epoch 1 (last.pt and best.pt, 14.6 MB each mid-run) fit;
    epoch 2's last.pt, written beside the old one before replacing it, does not."""
    yield from _tmpfs(tmp_path, "36m")


def _noise_films(root: Path, n: int, side: int, classes: tuple[str, ...] = ("",)) -> Path:
    """`n` films of random pixels (incompressible: each PNG is about side * side bytes) per class folder."""
    rng = np.random.default_rng(0)
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(root / cls / f"{cls or 'film'}{i:03d}.png"), rng.integers(0, 256, (side, side), np.uint8))
    return root


def test_prepare_on_a_full_disk(tmp_path: Path, small_disk: Path) -> None:
    from fracturekit.prepare import prepare

    src = _noise_films(tmp_path / "src", 12, 256, ("fractured", "normal"))  # 24 x 66 kB: 1.6 MB
    (small_disk / "filler").write_bytes(bytes(3_000_000))  # the user's own file: about 1 MB of the 4 MB left
    with pytest.raises(UserError) as caught:
        prepare(src, small_disk / "ds", film_split=True, audit=False, runs_dir=None)
    said = str(caught.value)
    assert said.startswith(f"{small_disk / 'ds'}: no space left on the device (")
    assert "about 1.6 MB needed for the 24 films (their size on disk)" in said and said.endswith("nothing was kept.")
    assert [p.name for p in small_disk.iterdir()] == ["filler"]  # no half dataset, no build folder, no lock


def test_predict_on_a_full_disk_then_resume(tmp_path: Path, small_disk: Path, tiny_runs: dict[str, Path]) -> None:
    from fracturekit.predict import predict

    films = _noise_films(tmp_path / "films", 16, 400)  # annotated JPEGs of noise: about 170 kB each, 2.7 MB
    filler = small_disk / "filler"
    filler.write_bytes(bytes(2_000_000))  # the user's own file, taking half the disk
    out = small_disk / "pred"
    kw = {"detector": tiny_runs["detect"], "out": out, "batch": 2, "device": "cpu"}
    with pytest.raises(UserError) as caught:
        predict(films, **kw)
    said = str(caught.value)
    assert said.startswith(f"{out}: no space left on the device (") and "annotated images of the" in said
    assert said.endswith("films done are kept: then run it again with --resume.")
    kept = (out / "predictions.csv").read_text().splitlines()
    assert 1 < len(kept) < 17  # the header and the films finished before the disk filled
    filler.unlink()  # space freed
    records = predict(films, **kw, resume=True)
    assert len(records) == 16 and len({r["path"] for r in records}) == 16
    assert (out / "predictions.csv").read_text().splitlines()[: len(kept)] == kept  # finished rows untouched
    assert all((out / r["annotated"]).is_file() for r in records)


@pytest.mark.slow
def test_train_on_a_full_disk_then_resume(training_disk: Path, prepared_phantoms: Path) -> None:
    from typer.testing import CliRunner

    from fracturekit.cli.app import app

    run = training_disk / "classify" / "full"
    args = ["train", "--task", "classify", "--data", str(prepared_phantoms), "--project", str(training_disk)]
    args += ["--name", "full", "--imgsz", "32", "--batch", "8", "--device", "cpu", "--set", "plots=false"]
    stopped = CliRunner().invoke(app, [*args, "--epochs", "2"])
    said = " ".join(stopped.output.split())
    assert stopped.exit_code == 2 and "Traceback" not in said, said
    assert f"error: {run}: no space left on the device (" in said
    assert "needed for the checkpoints weights/last.pt and best.pt); free some space or choose another folder; " in said
    assert said.endswith("epoch 1 is kept in weights/last.pt: then continue it with --resume.")
    import torch

    assert torch.load(run / "weights" / "last.pt", weights_only=False)["epoch"] == 0  # whole, not cut by the disk
    assert not list(run.rglob("*.partial")) and not (run / LOCK).exists()
    subprocess.run(["mount", "-o", "remount,size=96m", str(training_disk)], check=True)  # space freed
    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    record = json.loads((run / "run.json").read_text())
    assert record["epochs_completed"] == 2 and [n["interrupted_at_epoch"] for n in record["interruptions"]] == [2]
