"""bench/predict_bench.py: --isa avx2 reaches the measured processes (oneDNN and OpenVINO obey it); the ratio's row
is the median of its runs."""

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


def test_the_ratios_row_is_its_median_run() -> None:
    """The run of median seconds stands for the row (not the fastest, not a mean), and every run is kept."""
    runs = [{"n": 200, "seconds": s, "threads": 2} for s in (4.69, 3.71, 3.93)]
    row = predict_bench.median_run(runs)
    assert row["seconds"] == 3.93 and row["n"] == 200
    assert row["runs_s"] == [4.69, 3.71, 3.93]  # in the order run, printed under the table
