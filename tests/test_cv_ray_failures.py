"""`cv --executor ray` when Ray cannot start or dies: one sentence and exit 2, never minutes of retries.

- loopback down (a network namespace of our own, `unshare -rn`): refused before Ray starts, within --ray-timeout;
- a fold's Ray worker killed: one sentence, the finished folds kept for the re-run that resumes;
- SIGTERM to cv: it stops, with the Ray processes it started, and keeps the finished folds.
The Ray processes checked are the cv process's own descendants (psutil), never other users' Ray."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from fracturekit.cli import main; main()"]
TINY = ["--epochs", "1", "--imgsz", "32", "--batch", "8", "--device", "cpu"]


def _cv(data: Path, project: Path, *extra: str) -> list[str]:
    args = ["cv", "--task", "classify", "--data", str(data), "--folds", "3", "--project", str(project)]
    return [*CLI, *args, "--name", "r", "--executor", "ray", *TINY, *extra]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)  # a local Ray instance, started by cv itself
    return env


def test_ray_without_loopback(prepared_phantoms: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("util-linux `unshare` is not installed")
    ns = [unshare, "-n"] if os.geteuid() == 0 else [unshare, "-rn"]  # a new network namespace: its lo is down
    probe = subprocess.run([*ns, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {probe.stderr.strip()}")
    t0 = time.perf_counter()
    res = subprocess.run(
        [*ns, *_cv(prepared_phantoms, tmp_path, "--ray-timeout", "10")],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,  # without the check Ray retries its GCS for minutes
    )
    said = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2, said
    assert "--executor ray: Ray cannot start here, this machine's loopback network 127.0.0.1 does not answer (" in said
    assert "Failed to connect to GCS" not in said and "Traceback" not in said
    assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "cv").exists()  # refused before any fold was built


def _ray_worker(cv: psutil.Process, deadline: float) -> psutil.Process:
    """The Ray worker process running a fold for `cv` (a descendant: cv -> raylet -> ray::run_fold)."""
    while time.monotonic() < deadline:
        assert cv.is_running(), "cv ended before a fold started"
        for p in cv.children(recursive=True):
            try:
                if "ray::run_fold" in " ".join(p.cmdline()) or p.name() == "ray::run_fold":
                    return p
            except psutil.Error:
                continue
        time.sleep(0.2)
    raise AssertionError("no Ray worker started a fold in time")


def _gone(procs: list[psutil.Process], within: float) -> list[str]:
    """The processes of `procs` still alive after `within` seconds (a zombie counts as gone)."""
    deadline = time.monotonic() + within
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{p.pid} {p.name()}")
            except psutil.Error:
                continue
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.mark.slow  # a local Ray instance and one fold: about a minute on a busy 2-core machine
def test_ray_worker_killed(prepared_phantoms: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    proc = subprocess.Popen(
        _cv(prepared_phantoms, tmp_path), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    cv = psutil.Process(proc.pid)
    try:
        worker = _ray_worker(cv, time.monotonic() + 240)
        ray_procs = cv.children(recursive=True)
        worker.kill()
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    said = " ".join(out.decode(errors="replace").split())
    assert proc.returncode == 2, said[-2000:]
    assert "error: fold 0: its Ray worker died (" in said and "Traceback" not in said
    assert said.endswith(f"0 finished folds kept in {tmp_path / 'cv' / 'r'}: run the same command again to continue.")
    assert (tmp_path / "cv" / "r" / "folds.csv").is_file()  # the cv folder stays for the re-run
    assert _gone(ray_procs, 15) == []


@pytest.mark.slow  # a local Ray instance and one fold started: about a minute on a busy 2-core machine
def test_ray_cv_sigterm(prepared_phantoms: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    proc = subprocess.Popen(
        _cv(prepared_phantoms, tmp_path), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    cv = psutil.Process(proc.pid)
    try:
        _ray_worker(cv, time.monotonic() + 240)
        ray_procs = cv.children(recursive=True)  # gcs_server, raylet, the fold's worker, ...
        assert any("raylet" in p.name() for p in ray_procs)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        stopped_in = time.monotonic() - t0
    finally:
        proc.kill()
    said = " ".join(out.decode(errors="replace").split())
    assert proc.returncode == 2, said[-2000:]
    kept = f"0 finished folds kept in {tmp_path / 'cv' / 'r'}: run the same command again to continue."
    assert said.endswith(f"error: cv stopped by SIGTERM; {kept}")
    assert "SIGTERM received at" not in said  # Ray's own handler: a stack dump and an abort
    assert stopped_in < 30
    assert _gone(ray_procs, 15) == []  # no gcs_server, raylet or worker left behind
