"""fracturekit.export: ONNX beside the weights, with the metadata and dynamic axes predict relies on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fracturekit.errors import UserError
from fracturekit.export import export


@pytest.fixture(scope="module")
def det_run(tiny_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the tiny detect run (export writes into weights/)."""
    return Path(shutil.copytree(tiny_runs["detect"], tmp_path_factory.mktemp("exp") / "detect"))


@pytest.mark.parametrize(
    "given",
    [
        "run",  # a run folder: its weights/best.pt
        "weights",  # the best.pt itself
    ],
)
def test_export_onnx_beside_weights(det_run: Path, given: str, no_network: list[str]) -> None:
    import onnxruntime as ort

    target = det_run if given == "run" else det_run / "weights" / "best.pt"
    path = export(target, "onnx")
    assert path == det_run / "weights" / "best.onnx" and path.is_file()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [isinstance(d, str) for d in sess.get_inputs()[0].shape] == [True, False, True, True]  # dynamic b, h, w
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["task"] == "detect" and "imgsz" in meta and "names" in meta


@pytest.mark.parametrize(
    ("target", "fmt", "match"),
    [
        ("onnx_file", "onnx", "only PyTorch"),  # exporting an export
        ("missing", "onnx", "no such weights"),  # nothing there
        ("run", "no-such-format", "not available offline on this machine; use one of onnx, torchscript"),  # unknown
        ("run", "engine", "--format engine: not available offline"),  # TensorRT: needs a GPU toolchain
    ],
)
def test_export_user_errors(det_run: Path, tmp_path: Path, target: str, fmt: str, match: str) -> None:
    paths = {"onnx_file": tmp_path / "m.onnx", "missing": tmp_path / "nope.pt", "run": det_run}
    paths["onnx_file"].write_bytes(b"x")
    with pytest.raises(UserError, match=match):
        export(paths[target], fmt)


def test_onnx_box_head_softmax_on_last_axis(det_run: Path) -> None:
    """The exported head takes its DFL softmax over the last axis (fast in onnxruntime), same numbers as PyTorch."""
    import onnx
    import torch
    from ultralytics.nn.modules.block import DFL

    from fracturekit.export import onnx_friendly

    graph = onnx.load(str(export(det_run, "onnx"))).graph
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    axes = [next((a.i for a in n.attribute if a.name == "axis"), -1) for n in softmax]
    assert softmax and all(ax == -1 for ax in axes), axes

    torch.manual_seed(0)
    x = torch.randn(2, 64, 300) * 4
    plain, fast = DFL(), DFL()
    assert onnx_friendly(fast) == 1 and onnx_friendly(torch.nn.Linear(2, 2)) == 0
    torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-6)
