"""bench/predict_bench.py --isa avx2: the limit reaches the measured processes, and oneDNN and OpenVINO obey it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import predict_bench  # noqa: E402


def test_isa_avx2_limits_the_measured_processes(tmp_path: Path) -> None:
    """The environment every row runs in carries ONEDNN_MAX_CPU_ISA=AVX2, and a process started with it runs
    oneDNN at AVX2 (its verbose isa line) and OpenVINO's convolutions with AVX2 kernels, float32."""
    env = predict_bench.child_env("avx2", tmp_path)
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    probe = predict_bench.isa_probe(env)
    assert probe["ONEDNN_MAX_CPU_ISA"] == "AVX2"  # seen by the child itself
    assert probe["onednn_isa"] is not None and probe["onednn_isa"].strip() == "Intel AVX2", probe
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino not installed: oneDNN checked, OpenVINO not")
    kernels = probe["openvino"]
    assert any("avx2" in k for k in kernels) and not any("avx512" in k or "bf16" in k for k in kernels), kernels
