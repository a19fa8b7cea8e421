"""ONNX Runtime on a CUDA GPU (TensorRT / CUDA execution providers), on a CPU-only machine.

The GPU is faked: torch's CUDA probes say there is one, `onnxruntime.get_available_providers` lists the
providers onnxruntime-gpu would, and `onnxruntime.InferenceSession` is wrapped to record which providers it
is asked for (and to say which it "took") around a real CPU session of a tiny ONNX graph.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from fracturekit.core.device import Device
from fracturekit.core.layout import RunDir
from fracturekit.infer.model import check_path, choose_weights, load_model
from fracturekit.infer.scoring import default_batch

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
GPU_BUILD = [TRT, CUDA, CPU]  # what onnxruntime-gpu lists on a machine with TensorRT
PLAIN = ["AzureExecutionProvider", CPU]  # what the plain onnxruntime wheel lists


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A (B, 3, H, W) -> (B, 3) mean-pooling graph with Ultralytics' metadata: loadable as a detector."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 3])
    node = helper.make_node("ReduceMean", ["images"], ["output0"], axes=[2, 3], keepdims=0)
    model = helper.make_model(helper.make_graph([node], "tiny", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    meta = {"task": "detect", "names": "{0: 'fracture'}", "stride": "32", "imgsz": "[64, 64]"}
    helper.set_model_props(model, meta)
    path = tmp_path_factory.mktemp("onnx") / "best.onnx"
    onnx.save(model, str(path))
    return path


class _Sessions:
    """Stands in for onnxruntime.InferenceSession: records the providers asked for; the first `took` of them
    (or the CPU alone when `took` is False: the GPU libraries "missing") is what get_providers reports."""

    def __init__(self, took: bool) -> None:
        self.took = took
        self.asked: list[Any] = []

    def __call__(self, path: str, opts: Any = None, providers: list[Any] | None = None) -> Any:
        self.asked = list(providers or [])
        real = _REAL_SESSION(path, opts, providers=[CPU])
        first = self.asked[0] if self.asked else CPU
        used = [first[0] if isinstance(first, tuple) else first] if self.took else [CPU]

        class Session:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def get_providers(self) -> list[str]:
                return used + [p for p in real.get_providers() if p not in used]

        return Session()


_REAL_SESSION = ort.InferenceSession


def _fake_machine(monkeypatch: pytest.MonkeyPatch, gpus: int, providers: list[str], took: bool = True) -> _Sessions:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: f"Fake GPU {i}")
    monkeypatch.setattr(ort, "get_available_providers", lambda: list(providers))
    sessions = _Sessions(took)
    monkeypatch.setattr(ort, "InferenceSession", sessions)
    return sessions


@pytest.mark.parametrize(
    ("device", "gpus", "providers", "took", "backend", "asked", "runs_on", "label", "note"),
    [
        # onnxruntime-gpu with TensorRT: TensorRT first, then CUDA, then the CPU, all on GPU 0
        ("0", 1, GPU_BUILD, True, "onnx-gpu", [(TRT, 0), (CUDA, 0), CPU], "cuda:0", "TensorRT", None),
        # without TensorRT: CUDA, then the CPU; `auto` finds the GPU as it does for PyTorch
        ("auto", 1, [CUDA, CPU], True, "onnx-gpu", [(CUDA, 0), CPU], "cuda:0", "CUDA", None),
        # the second GPU asked for: its index goes to every GPU provider
        ("1", 2, GPU_BUILD, True, "onnx-gpu", [(TRT, 1), (CUDA, 1), CPU], "cuda:1", "TensorRT", None),
        # GPU providers listed but their libraries missing: the session runs on the CPU, and says so
        ("0", 1, GPU_BUILD, False, "onnx-gpu", [(TRT, 0), (CUDA, 0), CPU], "cpu", "CPU", "runs on the CPU"),
        # a GPU, but the plain onnxruntime: the CPU backend, with a note naming the package to install
        ("0", 1, PLAIN, True, "onnx", [CPU], "cpu", "ONNX Runtime float32", "pip install onnxruntime-gpu"),
        # --device cpu on a GPU machine: the CPU backend, nothing asked of the GPU, no note
        ("cpu", 1, GPU_BUILD, True, "onnx", [CPU], "cpu", "ONNX Runtime float32", None),
    ],
)
def test_providers_and_fallback(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tiny_onnx: Path,
    device: str,
    gpus: int,
    providers: list[str],
    took: bool,
    backend: str,
    asked: list[Any],
    runs_on: str,
    label: str,
    note: str | None,
) -> None:
    sessions = _fake_machine(monkeypatch, gpus, providers, took)
    with caplog.at_level(logging.WARNING, logger="fracturekit"):
        model = load_model(tiny_onnx, "detect", device=device, with_metrics=False)
    want = [(p[0], {"device_id": p[1]}) if isinstance(p, tuple) else p for p in asked]
    assert sessions.asked == want
    assert (model.backend, model.device) == (backend, runs_on)
    assert label in model.label and model.weights.name in model.label
    notes = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [n for n in notes if note in n] if note else not notes, notes
    x = np.random.default_rng(0).uniform(0, 1, (3, 3, 32, 64)).astype(np.float32)
    np.testing.assert_allclose(model.forward(x), x.mean(axis=(2, 3)), rtol=1e-5)  # the same graph, whatever ran it
    assert default_batch([model]) == (8 if backend == "onnx-gpu" else 1)


@pytest.mark.parametrize(
    ("measured_by", "want", "why"),
    [
        ("onnx-gpu", "best.onnx", "measured here"),  # its accuracy check ran on this GPU: trusted
        ("onnx", "best.pt", "no export that passed"),  # measured on this CPU, but it would run on the GPU: not
    ],
)
def test_auto_trusts_only_a_check_measured_on_the_gpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_onnx: Path, measured_by: str, want: str, why: str
) -> None:
    from fracturekit.core.device import cpu_info

    _fake_machine(monkeypatch, 1, GPU_BUILD)
    run = RunDir(tmp_path / "run")
    run.best.parent.mkdir(parents=True)
    run.best.write_bytes(b"")
    (run.best.parent / "best.onnx").write_bytes(tiny_onnx.read_bytes())
    here = cpu_info()
    check = {"passed": True, "summary": "check", "speed": {"ratio": 2.0}, "backend": measured_by}
    check["cpu"] = {"model": here.model, "flags": list(here.flags)}
    check_path(run.best.parent / "best.onnx").write_text(json.dumps(check))
    path, reason = choose_weights(run, "auto", Device("0", "cuda", "Fake GPU 0"))
    assert path.name == want and why in reason
