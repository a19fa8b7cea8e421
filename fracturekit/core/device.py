"""The device rule of every command, and what this machine's CPU offers.

`resolve_device`: `auto` = CUDA, then Apple MPS, then CPU; several GPUs = Ultralytics DDP. The answer is an
Ultralytics device string plus what fracturekit decides from it (AMP only on CUDA, DDP when more than one GPU
index is given), so `train` and the run record agree on one value; evaluate, predict and export reach it through
`fracturekit.core.options.inference_device`, which keeps one GPU. `cpu_info`: the CPU model and the flags that decide
which backend and precision are fast here (benches print it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fracturekit.core.errors import UserError

_GPU_LIST = re.compile(r"^(cuda:)?\d+(,\d+)*$")


@dataclass(frozen=True)
class Device:
    """A resolved device: `spec` is what Ultralytics gets (`cpu`, `mps`, `0`, `0,1`)."""

    spec: str
    kind: str  # "cpu" | "mps" | "cuda"
    name: str  # human-readable, e.g. the GPU model

    @property
    def gpus(self) -> tuple[int, ...]:
        """CUDA indices in use (empty off CUDA)."""
        return tuple(int(i) for i in self.spec.split(",")) if self.kind == "cuda" else ()

    @property
    def amp(self) -> bool:
        """Mixed precision pays off (and is numerically checked by Ultralytics) on CUDA only."""
        return self.kind == "cuda"

    @property
    def ddp(self) -> bool:
        """More than one GPU: Ultralytics launches DistributedDataParallel workers."""
        return len(self.gpus) > 1


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def _cuda(indices: list[int], requested: str) -> Device:
    import torch

    if not torch.cuda.is_available():
        raise UserError(
            f"--device {requested}: CUDA is not available (torch {torch.__version__}, no usable GPU); "
            "use --device cpu or --device auto."
        )
    count = torch.cuda.device_count()
    missing = [i for i in indices if i >= count]
    if missing:
        raise UserError(
            f"--device {requested}: GPU {missing[0]} does not exist (this machine has {count}); "
            f"use indices 0..{count - 1}."
        )
    if len(set(indices)) != len(indices):
        raise UserError(f"--device {requested}: a GPU is listed twice; list each index once, e.g. 0,1.")
    names = sorted({torch.cuda.get_device_name(i) for i in indices})
    return Device(spec=",".join(str(i) for i in indices), kind="cuda", name=", ".join(names))


def resolve_device(requested: str | int | None = "auto") -> Device:
    """Turn `auto|cpu|mps|0|0,1|cuda:0` into a Device, or a UserError saying what is available."""
    text = "auto" if requested is None else str(requested).strip().lower().replace(" ", "")
    if text in ("auto", ""):
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 0:
            return _cuda([0], "auto")
        if _mps_available():
            return Device(spec="mps", kind="mps", name="Apple MPS")
        return Device(spec="cpu", kind="cpu", name="CPU")
    if text == "cpu":
        return Device(spec="cpu", kind="cpu", name="CPU")
    if text == "mps":
        if not _mps_available():
            raise UserError("--device mps: Apple MPS is not available on this machine; use --device cpu or auto.")
        return Device(spec="mps", kind="mps", name="Apple MPS")
    if _GPU_LIST.match(text):
        return _cuda([int(i) for i in text.removeprefix("cuda:").split(",")], text)
    raise UserError(f"--device {requested}: not a device; use auto, cpu, mps, a GPU index (0) or a list (0,1).")


# The instruction sets that decide which CPU inference/training path is fastest (bench/ figures):
# VNNI makes int8 pay (1.2x onnxruntime, more with OpenVINO), BF16/AMX make bf16 pay; AVX2 alone wants float32.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class CpuInfo:
    """This machine's CPU model and which of CPU_FLAGS it has (from /proc/cpuinfo; empty where unreadable)."""

    model: str
    flags: tuple[str, ...]

    @property
    def line(self) -> str:
        """The one line every bench prints, so figures from different machines can be told apart."""
        have = " ".join(self.flags) or "none of them"
        return f"CPU: {self.model}; flags: {have} (of {', '.join(CPU_FLAGS)})"

    @property
    def bf16(self) -> bool:
        """Native bf16 arithmetic (AVX512-BF16 or AMX): where bf16 autocast and OpenVINO bf16 are fast."""
        return "avx512_bf16" in self.flags or "amx_bf16" in self.flags

    @property
    def vnni(self) -> bool:
        """int8 dot products in one instruction: where int8 inference is faster than float32."""
        return "avx512_vnni" in self.flags or "amx_int8" in self.flags


def cpu_info(source: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """Model name and relevant flags of the first CPU in `source` (Linux); the platform's name elsewhere."""
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = source.read_text(encoding="utf-8")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return CpuInfo(model=model, flags=tuple(f for f in CPU_FLAGS if f in flags))
