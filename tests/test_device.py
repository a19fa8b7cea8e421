"""Device selection with torch's CUDA / MPS probes monkeypatched (no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from fracturekit.core.device import resolve_device
from fracturekit.core.errors import UserError


def _fake_machine(monkeypatch: pytest.MonkeyPatch, gpus: int, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: f"Fake GPU {i}")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(
    ("requested", "gpus", "mps", "spec", "kind", "amp", "ddp"),
    [
        ("auto", 2, True, "0", "cuda", True, False),  # auto prefers CUDA, one GPU
        ("auto", 0, True, "mps", "mps", False, False),  # then Apple MPS, no AMP
        ("auto", 0, False, "cpu", "cpu", False, False),  # then CPU
        (None, 0, False, "cpu", "cpu", False, False),  # None means auto
        ("cpu", 4, True, "cpu", "cpu", False, False),  # explicit CPU even with GPUs present
        ("0", 1, False, "0", "cuda", True, False),  # one GPU index
        (0, 1, False, "0", "cuda", True, False),  # an int index from Python
        ("0,1", 2, False, "0,1", "cuda", True, True),  # two GPUs -> DDP
        ("cuda:1", 2, False, "1", "cuda", True, False),  # torch-style name
        (" 0, 1 ", 2, False, "0,1", "cuda", True, True),  # spaces ignored
        ("mps", 0, True, "mps", "mps", False, False),  # explicit MPS
    ],
)
def test_resolve_device(
    monkeypatch: pytest.MonkeyPatch,
    requested: str | int | None,
    gpus: int,
    mps: bool,
    spec: str,
    kind: str,
    amp: bool,
    ddp: bool,
) -> None:
    _fake_machine(monkeypatch, gpus, mps)
    dev = resolve_device(requested)
    assert (dev.spec, dev.kind, dev.amp, dev.ddp) == (spec, kind, amp, ddp)


@pytest.mark.parametrize(
    ("requested", "gpus", "mps", "message"),
    [
        ("0", 0, False, "CUDA is not available"),  # GPU asked on a CPU machine
        ("0,1", 1, False, "GPU 1 does not exist"),  # index beyond the GPU count
        ("0,0", 2, False, "listed twice"),  # duplicate index
        ("mps", 0, False, "MPS is not available"),  # MPS asked where there is none
        ("gpu", 1, False, "not a device"),  # unknown word
        ("-1", 1, False, "not a device"),  # Ultralytics' idle-GPU syntax is not offered
    ],
)
def test_resolve_device_errors(
    monkeypatch: pytest.MonkeyPatch, requested: str, gpus: int, mps: bool, message: str
) -> None:
    _fake_machine(monkeypatch, gpus, mps)
    with pytest.raises(UserError, match=message):
        resolve_device(requested)


@pytest.mark.parametrize(
    ("text", "flags", "bf16", "vnni"),
    [
        ("model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16\n", 4, True, True),  # Zen 4
        ("model name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma\n", 1, False, False),  # AVX2 only: float32 wanted
        ("model name\t: Xeon\nflags\t\t: avx2 avx512f amx_bf16 amx_int8\n", 4, True, True),  # AMX
        ("", 0, False, False),  # no /proc/cpuinfo (not Linux): no flags claimed
    ],
)
def test_cpu_info(tmp_path, text: str, flags: int, bf16: bool, vnni: bool) -> None:
    from fracturekit.core.device import cpu_info

    src = tmp_path / "cpuinfo"
    src.write_text(text)
    info = cpu_info(src)
    assert (len(info.flags), info.bf16, info.vnni) == (flags, bf16, vnni)
    assert info.line.startswith("CPU: ") and "flags:" in info.line
