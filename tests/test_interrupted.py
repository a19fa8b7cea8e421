"""Commands that stop early: a training killed mid-epoch resumes to the same total epochs and says so in run.json;
a command refused after taking its folder lock releases it at once and leaves no folder it made.

The refusals are checked while the exception is still held (`pytest.raises` keeps it, as a notebook keeps the
last traceback): that is when a lock kept only by the command's frame would still be there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fracturekit.cli.app import app
from fracturekit.core.errors import UserError
from fracturekit.core.folderlock import LOCK

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
TINY = ["--imgsz", "32", "--batch", "8", "--device", "cpu", "--set", "plots=false"]


@pytest.mark.slow  # two 1-epoch trainings and a kill: about 2 minutes on a busy 2-core machine
def test_killed_training_resumes(prepared_phantoms: Path, tmp_path: Path) -> None:
    run = tmp_path / "classify" / "k"
    args = ["train", "--task", "classify", "--data", str(prepared_phantoms), "--project", str(tmp_path), "--name", "k"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-c", "from fracturekit.cli import main; main()"]
    proc = subprocess.Popen([*cli, *args, "--epochs", "2", *TINY], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run / "weights" / "last.pt").is_file():  # epoch 1 saved (renamed into place whole): kill in epoch 2
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before epoch 1 was saved"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(run / "weights" / "last.pt", weights_only=False)["epoch"] == 0  # epoch 1 (0-based 0) kept
    assert not (run / "run.json").exists() and (run / LOCK).is_file()  # killed: no record, a free lock file

    resumed = runner.invoke(app, [*args, "--resume"])  # the lock died with the killed process: not refused
    assert resumed.exit_code == 0, resumed.output
    record = json.loads((run / "run.json").read_text())
    assert record["resumed"] is True and record["epochs_completed"] == 2  # the same total epochs
    assert [n["interrupted_at_epoch"] for n in record["interruptions"]] == [2]
    assert all(t > 0 for t in record["timings"]["per_epoch_s"])  # the clock restarted at epoch 2 is accounted for
    rows = (run / "results.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2"]  # no row of the killed epoch left twice
    assert not list(run.rglob("*.partial")) and not (run / "resumes.json").exists()


def test_resume_keeps_only_saved_rows(tmp_path: Path) -> None:
    from fracturekit.train import _epoch_times
    from fracturekit.training.interrupted import note_resume

    (tmp_path / "weights").mkdir()
    torch.save({"epoch": 1}, tmp_path / "weights" / "last.pt")  # epochs 1 and 2 saved
    csv = tmp_path / "results.csv"
    # epoch 3's row was written, then its checkpoint never was (kill or full disk); then a row cut short
    csv.write_text("epoch,time,loss\n1,10.0,0.5\n2,25.0,0.4\n3,41.0,0.3\n4,5")
    notes = note_resume(tmp_path)
    assert [n["interrupted_at_epoch"] for n in notes] == [3]
    assert csv.read_text() == "epoch,time,loss\n1,10.0,0.5\n2,25.0,0.4\n"
    with csv.open("a") as f:
        f.write("3,12.0,0.3\n4,30.0,0.2\n")  # the resumed session: its clock starts again at epoch 3
    assert _epoch_times(csv, {3}) == [10.0, 15.0, 12.0, 18.0]
    assert len(note_resume(tmp_path)) == 2  # killed again and resumed: both interruptions kept


def test_train_refused_after_lock_leaves_no_folder(prepared_phantoms: Path, tmp_path: Path) -> None:
    from fracturekit.train import train

    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(UserError, match="truncated or not a PyTorch checkpoint") as caught:
        train("classify", prepared_phantoms, project=str(tmp_path), name="r", weights=str(junk), epochs=1, imgsz=32)
    assert caught.value is not None and not (tmp_path / "classify" / "r").exists()


def test_cv_refused_after_lock_leaves_no_folder(prepared_phantoms: Path, tmp_path: Path) -> None:
    from fracturekit.cv import cross_validate

    with pytest.raises(UserError, match="independent units") as caught:
        cross_validate("classify", prepared_phantoms, folds=500, project=tmp_path, name="c")
    assert caught.value is not None and not (tmp_path / "cv" / "c").exists()


def test_evaluate_refused_after_lock_releases_it(
    prepared_phantoms: Path, tiny_runs: dict[str, Path], tmp_path: Path
) -> None:
    from fracturekit.evaluate import evaluate

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file")
    with pytest.raises(UserError, match="already holds files") as caught:
        evaluate(prepared_phantoms, classifier=tiny_runs["classify"], out=out, device="cpu")
    assert caught.value is not None and sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # no lock left
