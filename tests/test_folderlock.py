"""One command per output folder: a second command into a held folder is refused at once with the holder's
pid (exit 2), and the lock goes with its process, however it dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from fracturekit.core.errors import UserError
from fracturekit.core.folderlock import LOCK, lock_folder
from fracturekit.data.phantoms import generate_phantom

ROOT = Path(__file__).resolve().parents[1]
HOLD = "import sys, time; from fracturekit.core.folderlock import lock_folder; " + (
    "h = lock_folder(sys.argv[1], sys.argv[2]); print('held', flush=True); time.sleep(120)"
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _holder(folder: Path, command: str) -> subprocess.Popen[str]:
    """Another process holding `folder`, as a running `command` would."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), command], stdout=subprocess.PIPE, text=True, env=_env()
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _source(root: Path) -> Path:
    for cls, offset in (("fractured", 0), ("normal", 50)):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(root / cls / f"{i}.png"), generate_phantom(seed=1, index=offset + i, size=64).image)
    return root


def test_second_prepare_refused_until_the_first_dies(tmp_path: Path) -> None:
    src, out = _source(tmp_path / "src"), tmp_path / "ds"
    first = _holder(out, "prepare")
    try:
        t0 = time.perf_counter()
        cli = [sys.executable, "-c", "from fracturekit.cli import main; main()", "prepare", str(src), "--out", str(out)]
        second = subprocess.run(cli, capture_output=True, text=True, env=_env(), timeout=120)
        assert second.returncode == 2
        said = " ".join(second.stdout.split() + second.stderr.split())
        assert f"is in use by fracturekit prepare (pid {first.pid}); wait for it to finish" in said
        assert "Traceback" not in said and time.perf_counter() - t0 < 60  # at once, not after decoding
        assert sorted(p.name for p in out.iterdir()) == [LOCK]  # the refused command wrote nothing
        assert (out / LOCK).read_text() == f"fracturekit prepare (pid {first.pid})\n"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the kernel released the killed holder's lock: the same command now runs
    from fracturekit.prepare import prepare

    prepare(src, out, split=(0.5, 0.25, 0.25), film_split=True, audit=False, runs_dir=None)
    assert (out / "manifest.csv").is_file() and not (out / LOCK).exists()  # released: its file removed


def test_predict_and_train_folders_are_held(tmp_path: Path, prepared_phantoms: Path) -> None:
    from fracturekit.predict import predict
    from fracturekit.train import train

    held = tmp_path / "pred"
    holder = lock_folder(held, "predict")  # a predict (or predict --resume) still running there
    try:
        with pytest.raises(UserError, match=rf"pred is in use by fracturekit predict \(pid {os.getpid()}\)"):
            predict(_source(tmp_path / "src"), detector=tmp_path / "no.pt", out=held, resume=True)
        run = tmp_path / "runs" / "classify" / "cls"
        training = lock_folder(run, "train")
        (run / "weights").mkdir()  # a run in progress, which --set exist_ok=true would otherwise delete
        with pytest.raises(UserError, match=r"cls is in use by fracturekit train"):
            train("classify", prepared_phantoms, project=tmp_path / "runs", name="cls", exist_ok=True)
        assert (run / "weights").is_dir()
        training.release()
    finally:
        holder.release()
    assert not held.exists()  # the lock's own folder, left empty, goes with it


def test_lock_is_per_folder_and_reusable(tmp_path: Path) -> None:
    a = lock_folder(tmp_path / "a", "evaluate")
    b = lock_folder(tmp_path / "b", "evaluate")  # another folder: no conflict
    with pytest.raises(UserError, match="is in use by fracturekit evaluate"):
        lock_folder(tmp_path / "a", "evaluate")
    a.release()
    lock_folder(tmp_path / "a", "evaluate").release()  # free again once released
    b.release()
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="f is a file; pass a folder"):
        lock_folder(tmp_path / "f", "cv")
