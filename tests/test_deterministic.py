"""`train --deterministic` (config key `reproducible`): float32 on CPU, a fixed thread count, deterministic algorithms,
recorded in run.json; two such trainings on "machines" differing in cores and bf16 give the same weights."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from fracturekit.cli.app import app
from fracturekit.core.device import CpuInfo


def _weights_digest(run: Path) -> str:
    """sha256 of every float tensor of best.pt's model: equal digests are bit-identical weights."""
    ckpt = torch.load(run / "weights" / "best.pt", map_location="cpu", weights_only=False)
    h = hashlib.sha256()
    for name, t in ckpt["model"].float().state_dict().items():
        if t.dtype.is_floating_point:
            h.update(name.encode())
            h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize(
    ("reproducible", "cpu_has_bf16", "channels_last", "expected"),
    [
        (False, True, None, (True, True)),  # default on a BF16 CPU: bf16 autocast, channels_last with it
        (True, True, None, (False, False)),  # --deterministic: float32, contiguous, whatever the CPU
        (True, True, True, (False, False)),  # ... even when channels_last was asked for
        (False, False, None, (False, False)),  # a CPU without bf16: float32 anyway
    ],
)
def test_cpu_speed_off_when_reproducible(
    monkeypatch: pytest.MonkeyPatch,
    reproducible: bool,
    cpu_has_bf16: bool,
    channels_last: bool | None,
    expected: tuple[bool, bool],
) -> None:
    from fracturekit.core import device
    from fracturekit.train import _cpu_speed

    flags = ("avx2", "avx512f", "avx512_bf16") if cpu_has_bf16 else ("avx2",)
    monkeypatch.setattr(device, "cpu_info", lambda: CpuInfo("test cpu", flags))
    cfg = _Cfg({"reproducible": reproducible, "channels_last": channels_last, "amp": True})
    assert _cpu_speed(cfg, SimpleNamespace(kind="cpu")) == expected


class _Cfg:
    """The part of TrainConfig that `_cpu_speed` reads."""

    def __init__(self, values: dict) -> None:
        self.values = values

    def __getitem__(self, key: str) -> object:
        return self.values[key]


def test_cli_deterministic_reaches_run_json_and_trainer(prepared_phantoms: Path, tmp_path: Path) -> None:
    args = ["train", "--task", "classify", "--data", str(prepared_phantoms), "--project", str(tmp_path)]
    args += ["--name", "det", "--imgsz", "32", "--epochs", "1", "--batch", "8", "--device", "cpu", "--deterministic"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    run = tmp_path / "classify" / "det"
    record = json.loads((run / "run.json").read_text())
    assert record["deterministic"] == {
        "switch": True,
        "torch_deterministic_algorithms": True,
        "threads": 1,  # REPRODUCIBLE_THREADS: no --threads given
        "cpu_bf16_autocast": False,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
    }
    assert record["threads"] == 1
    assert record["pipeline"]["cpu_bf16_autocast"] is False  # what the trainer really got (trainers.cpu_fast)
    assert record["pipeline"]["cpu_channels_last"] is False
    assert "reproducible: true" in (run / "config.yaml").read_text()  # --resume keeps it


@pytest.mark.parametrize(
    ("overrides", "switch", "threads"),
    [
        ({}, False, len(os.sched_getaffinity(0))),  # default: off, every allowed core, and run.json says so
        ({"reproducible": True, "threads": 2}, True, 2),  # --deterministic --threads 2: the count given is kept
    ],
)
def test_deterministic_threads(
    prepared_phantoms: Path, tmp_path: Path, overrides: dict, switch: bool, threads: int
) -> None:
    from fracturekit.train import train_recorded

    common = {"project": str(tmp_path), "name": "t", "imgsz": 32, "epochs": 1, "batch": 8, "device": "cpu"}
    record = train_recorded("classify", prepared_phantoms, **common, **overrides).record
    assert (record["deterministic"]["switch"], record["deterministic"]["threads"]) == (switch, threads)


def test_two_machines_one_kind_same_weights(
    prepared_phantoms: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Machine A: this process as it is. Machine B: one allowed core and a CPU without bf16. With --deterministic
    both train the same weights bit for bit and record the same metrics; without it their thread counts (and on a
    BF16 CPU their precision) differ."""
    from fracturekit.core import device
    from fracturekit.train import train_recorded

    common = {"project": str(tmp_path), "imgsz": 32, "epochs": 2, "batch": 8, "device": "cpu", "reproducible": True}
    a = train_recorded("classify", prepared_phantoms, name="a", **common)
    allowed, threads = os.sched_getaffinity(0), torch.get_num_threads()
    monkeypatch.setattr(device, "cpu_info", lambda: CpuInfo("cpu without bf16", ("avx2",)))
    os.sched_setaffinity(0, {min(allowed)})
    try:
        b = train_recorded("classify", prepared_phantoms, name="b", **common)
    finally:
        os.sched_setaffinity(0, allowed)
        torch.set_num_threads(threads)
    assert _weights_digest(a.run.root) == _weights_digest(b.run.root)
    assert a.record["metrics"] == b.record["metrics"]
    assert a.record["deterministic"] == b.record["deterministic"]
