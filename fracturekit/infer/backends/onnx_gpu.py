"""ONNX Runtime on a CUDA GPU: a run's `.onnx` exports through the TensorRT or CUDA execution provider.

Used for a `.onnx` when the device is a CUDA GPU (`--device 0`, or `auto` on a machine with one) and
onnxruntime-gpu is installed (it replaces the onnxruntime package: `pip install onnxruntime-gpu`). The
session is asked for TensorRT, then CUDA, then the CPU, as far as this onnxruntime offers them (ONNX Runtime
gives each node to the first provider that takes it). A GPU asked for but not used (onnxruntime without GPU
providers, or their CUDA/TensorRT libraries missing) is said in a logged note, and the model runs on the CPU.
Default precision of both providers: float32. TensorRT builds an engine for each input shape it meets.
Its speed against PyTorch on the same GPU is not known here (no GPU to measure on), so `auto` picks it only
from an accuracy check measured by it on this machine (`fracturekit export` on the GPU machine).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fracturekit.infer.backends.base import Variant
from fracturekit.infer.backends.onnx_cpu import OnnxRuntime

if TYPE_CHECKING:
    from fracturekit.core.device import CpuInfo, Device
    from fracturekit.infer.model import Model

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")  # preferred first
_TITLES = {"TensorrtExecutionProvider": "TensorRT", "CUDAExecutionProvider": "CUDA", "CPUExecutionProvider": "CPU"}


class OnnxRuntimeGpu(OnnxRuntime):
    name = "onnx-gpu"
    title = "ONNX Runtime"
    order = 10  # before ONNX Runtime on CPU: on a CUDA device a .onnx runs here
    batch_help = "8 with ONNX Runtime on a GPU"
    variants = ()  # it reads the CPU backend's files (best.onnx, best.int8.onnx)
    export_format = None  # written by `fracturekit export --format onnx`

    @classmethod
    def usable(cls, device: Device) -> bool:
        """A CUDA device and an onnxruntime with a GPU provider; a note when the first is there, not the second."""
        if device.kind != "cuda":
            return False
        import onnxruntime as ort

        if any(p in GPU_PROVIDERS for p in ort.get_available_providers()):
            return True
        log.warning(
            "--device %s: this onnxruntime has no GPU provider, so ONNX models run on the CPU "
            "(pip install onnxruntime-gpu in place of onnxruntime to run them on the GPU)",
            device.spec,
        )
        return False

    @classmethod
    def providers(cls, device: Device) -> list[Any]:
        """TensorRT, then CUDA (those this onnxruntime has), on the first GPU of `device`; then the CPU."""
        import onnxruntime as ort

        have = ort.get_available_providers()
        gpu = {"device_id": device.gpus[0]}
        return [*((p, dict(gpu)) for p in GPU_PROVIDERS if p in have), "CPUExecutionProvider"]

    @classmethod
    def session_device(cls, sess: Any, device: Device, path: Path) -> str:
        """cuda:N when the session took a GPU provider; else the CPU, and a note saying so."""
        used = sess.get_providers()
        if used and used[0] in GPU_PROVIDERS:
            return f"cuda:{device.gpus[0]}"
        log.warning(
            "%s: ONNX Runtime was asked for %s on GPU %d but runs on the CPU (its CUDA/TensorRT libraries are "
            "missing or do not match this GPU)",
            path,
            " and ".join(_TITLES[p] for p, _ in cls.providers(device)[:-1]),
            device.gpus[0],
        )
        return "cpu"

    @classmethod
    def intra_threads(cls, threads: int) -> int:
        """All `threads`: the GPU runs the model, the CPU threads what falls back to it, one call at a time."""
        return threads

    @classmethod
    def calls(cls, model: Model, batch: int) -> int:
        """One call at a time: the GPU is fed by one thread."""
        return 1

    @classmethod
    def default_batch(cls, model: Model) -> int:
        """8, as PyTorch: a GPU is fed batches (not measured with ONNX Runtime: no GPU here)."""
        return 8

    @classmethod
    def rank(cls, variant: Variant, cpu: CpuInfo) -> int | None:
        """None: no GPU figure exists, so it is chosen only where its accuracy check measured it."""
        return None

    @classmethod
    def label(cls, model: Model) -> str:
        """E.g. 'ONNX Runtime TensorRT float32 (best.onnx)': the provider that runs the first node."""
        provider = model.net.get_providers()[0]
        return f"{cls.title} {_TITLES.get(provider, provider)} {model.precision} ({model.weights.name})"
