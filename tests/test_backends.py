"""fracturekit.infer.backends: one map, and everything that lists backends derived from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from fracturekit.core.device import CpuInfo, Device
from fracturekit.infer import backends
from fracturekit.infer.backends import BACKEND_MAP, EXPORTS, VARIANTS, backend_for

CPU = Device("cpu", "cpu", "CPU")


def test_map_is_complete_and_consistent() -> None:
    for name, b in BACKEND_MAP.items():
        assert b.name == name and b.title and b.weights_help and b.batch_help, name
        assert b.export_format or not b.variants or b.reference, f"{name}: files of a run but no export writes them"
    assert len(VARIANTS) == sum(len(b.variants) for b in BACKEND_MAP.values())  # no --backend name twice
    assert [b for b in BACKEND_MAP.values() if b.reference] == [backends.REFERENCE]  # one float32 checkpoint
    assert set(EXPORTS) == set(VARIANTS) - {backends.REFERENCE_NAME}
    assert ("auto", *VARIANTS) == backends.BACKENDS
    assert backends.DEFAULT_FORMAT in backends.export_formats()
    assert set(backends.int8_formats()) <= set(backends.checked_formats()) <= set(backends.export_modules())


def test_cli_help_lists_every_backend() -> None:
    from typer.testing import CliRunner

    from fracturekit.cli.app import app

    run = CliRunner().invoke
    predict = " ".join(run(app, ["predict", "--help"], env={"COLUMNS": "400"}).output.split())
    export = " ".join(run(app, ["export", "--help"], env={"COLUMNS": "400"}).output.split())
    assert f"torch, {', '.join(EXPORTS)}." in predict and backends.weights_help() in predict
    assert all(b.batch_help in predict for b in BACKEND_MAP.values())
    assert all(b.export_format in export for b in BACKEND_MAP.values() if b.export_format)


@pytest.mark.parametrize(
    ("make", "want"),
    [
        (lambda d: _touch(d / "best.pt"), "torch"),  # a checkpoint
        (lambda d: _touch(d / "best.onnx"), "onnx"),  # an ONNX export, on CPU
        (lambda d: _touch(d / "best.int8.onnx"), "onnx"),  # its int8 copy: the same backend
        (lambda d: _openvino(d / "best_openvino_model"), "openvino"),  # an OpenVINO export folder
        (lambda d: _touch(d / "model.bin"), "torch"),  # anything else: Ultralytics says whether it is a checkpoint
    ],
)
def test_backend_for(tmp_path: Path, make, want: str) -> None:
    assert backend_for(make(tmp_path), CPU).name == want


def _touch(p: Path) -> Path:
    p.write_bytes(b"")
    return p


def _openvino(p: Path) -> Path:
    p.mkdir()
    (p / "metadata.yaml").write_text("task: detect\n")
    (p / "best.xml").write_text("")
    return p


@pytest.mark.parametrize(
    ("flags", "order"),
    [
        # VNNI + BF16: OpenVINO int8 3x and bf16 2x onnxruntime float32, onnxruntime int8 1.2x (bench/ figures)
        (("avx2", "avx512_vnni", "avx512_bf16"), ["openvino-int8", "openvino", "onnx-int8", "onnx"]),
        # AVX2 alone: OpenVINO int8 held to AVX2 ran ahead of ONNX float32 (predict_bench --isa avx2); onnxruntime
        # int8 ran 0.84x its float32 (bench/int8_probe.py): last
        (("avx2",), ["openvino-int8", "onnx", "openvino", "onnx-int8"]),
    ],
)
def test_fallback_ranks_per_cpu(flags: tuple[str, ...], order: list[str]) -> None:
    cpu = CpuInfo("some CPU", flags)

    def rank(name: str) -> int:
        owner, variant = VARIANTS[name]
        r = owner.rank(variant, cpu)
        assert r is not None
        return r

    assert sorted(EXPORTS, key=rank) == order
