"""The offline-safe Ultralytics environment: font, AMP check, pip auto-install, threads, settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fracturekit.core import yolo_env


def test_load_ultralytics_sets_environment() -> None:
    ul = yolo_env.load_ultralytics(threads=2)
    from ultralytics.engine import trainer
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR, torch_utils

    assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_AUTOINSTALL"] == "false"
    assert torch_utils.NUM_THREADS == 2 and torch.get_num_threads() == 2
    assert trainer.check_amp is yolo_env.offline_safe_check_amp
    assert (USER_CONFIG_DIR / "Arial.ttf").is_file()  # where check_font looks first
    assert SETTINGS["sync"] is False and not SETTINGS.get("hub")
    assert Path(os.environ["YOLO_CONFIG_DIR"]) in USER_CONFIG_DIR.parents  # settings kept out of $HOME
    assert ul.__version__.startswith("8.4")


def test_settings_sync_switched_off() -> None:
    yolo_env.load_ultralytics()
    from ultralytics.utils import SETTINGS

    SETTINGS.update({"sync": True})  # as a fresh online install has it (YOLO_CONFIG_DIR is a test folder)
    yolo_env.load_ultralytics()
    assert SETTINGS["sync"] is False


def test_font_check_needs_no_network(no_network: list[str]) -> None:
    yolo_env.load_ultralytics()
    from ultralytics.utils.checks import check_font

    assert Path(check_font("Arial.Unicode.ttf")).is_file()


def test_requirements_check_never_installs(no_network: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    yolo_env.load_ultralytics()
    from ultralytics.utils import checks

    calls: list[object] = []
    monkeypatch.setattr(subprocess, "check_output", lambda *a, **k: calls.append(a))
    assert checks.check_requirements("fracturekit-no-such-package>=1.0") is False
    assert calls == []


class _FakeModel:
    """Just enough of a model for check_amp: its parameters live on `device`."""

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)

    def parameters(self) -> object:
        return iter([SimpleNamespace(device=self.device)])


@pytest.mark.parametrize(
    ("device", "cached", "online", "gpu", "expected", "delegated"),
    [
        ("cpu", False, False, "", False, True),  # CPU: Ultralytics answers (no AMP, no download)
        ("cuda:0", False, False, "NVIDIA A100", True, False),  # offline, not cached: skip, AMP on
        ("cuda:0", False, False, "NVIDIA GeForce GTX 1660", False, False),  # offline blacklisted GPU: AMP off
        ("cuda:0", True, False, "NVIDIA A100", "ultralytics", True),  # cached check model: real check
        ("cuda:0", False, True, "NVIDIA A100", "ultralytics", True),  # online: real check (may download)
    ],
)
def test_offline_safe_check_amp(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    device: str,
    cached: bool,
    online: bool,
    gpu: str,
    expected: object,
    delegated: bool,
) -> None:
    yolo_env.load_ultralytics()
    import ultralytics.utils as uu
    from ultralytics.utils import checks

    calls: list[object] = []
    monkeypatch.setattr(checks, "check_amp", lambda m: calls.append(m) or "ultralytics")
    monkeypatch.setattr(uu, "WEIGHTS_DIR", tmp_path)
    if cached:
        (tmp_path / "yolo26n.pt").write_bytes(b"x")
    monkeypatch.setattr(yolo_env, "network_available", lambda *a, **k: online)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: gpu)
    result = yolo_env.offline_safe_check_amp(_FakeModel(device))
    assert (result, bool(calls)) == ("ultralytics" if delegated else expected, delegated)


def test_network_available_respects_offline_switch(no_network: list[str]) -> None:
    assert os.environ["FRACTUREKIT_OFFLINE"] == "1"
    assert yolo_env.network_available() is False  # answered without touching the network


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (3, 3),  # an explicit request wins
        (None, len(os.sched_getaffinity(0))),  # default: every core this process may use
        (0, len(os.sched_getaffinity(0))),  # 0 means default too
    ],
)
def test_cpu_threads(requested: int | None, expected: int) -> None:
    assert yolo_env.cpu_threads(requested) == expected


def test_import_time_load_keeps_the_requested_threads() -> None:
    """`train(threads=1)` applies 1, then imports trainers (which loads Ultralytics at import): still 1."""
    code = (
        "import torch; from fracturekit.core.yolo_env import load_ultralytics; load_ultralytics(1);"
        "import fracturekit.training.trainers; from ultralytics.utils import torch_utils;"
        "print(torch.get_num_threads(), torch_utils.NUM_THREADS)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-2:] == ["1", "1"], out.stdout


def test_first_import_prints_no_settings_banner(tmp_path: Path) -> None:
    """A fresh machine: the settings file is created in fracturekit's config folder, without Ultralytics' banner
    that points users at `yolo settings` (which reads another file)."""
    env = {k: v for k, v in os.environ.items() if k != "YOLO_CONFIG_DIR"} | {"FRACTUREKIT_CACHE": str(tmp_path)}
    code = "from fracturekit.core.yolo_env import load_ultralytics; load_ultralytics(); print('loaded')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert (tmp_path / "ultralytics" / "Ultralytics" / "settings.json").is_file()
    assert "Settings" not in out.stdout + out.stderr and out.stdout.strip() == "loaded", out.stdout + out.stderr
