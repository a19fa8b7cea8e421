"""`cv --executor ray` with a RAY_ADDRESS where no cluster answers: one sentence within --ray-timeout, exit 2,
instead of Ray's retries (minutes of `Failed to connect to GCS`, SIGTERM ignored)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fracturekit.core.errors import UserError
from fracturekit.cv.executors import check_ray_address

ROOT = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once closed: nothing listens there


def test_ray_address_nobody_answers(prepared_phantoms: Path, tmp_path: Path) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": address}
    cli = [sys.executable, "-c", "from fracturekit.cli import main; main()", "cv", "--task", "classify"]
    cli += ["--data", str(prepared_phantoms), "--folds", "3", "--project", str(tmp_path), "--name", "r"]
    t0 = time.perf_counter()
    res = subprocess.run([*cli, "--executor", "ray", "--ray-timeout", "5"], capture_output=True, text=True, env=env)
    said = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2, said
    assert f"RAY_ADDRESS {address}: no Ray cluster answers there within 5 s (Connection refused)" in said
    assert "Failed to connect to GCS" not in said and "Traceback" not in said
    assert time.perf_counter() - t0 < 60  # CLI start-up included; Ray itself retried for minutes
    assert not (tmp_path / "r").exists()  # refused before any fold was built


def test_ray_address_malformed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "nonsense")
    with pytest.raises(UserError, match=r"RAY_ADDRESS nonsense: .* \(not host:port\)"):
        check_ray_address(1)
