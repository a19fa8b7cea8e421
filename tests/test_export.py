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
        ("run", "no-such-format", "export to 'no-such-format' failed"),  # a format Ultralytics does not know
    ],
)
def test_export_user_errors(det_run: Path, tmp_path: Path, target: str, fmt: str, match: str) -> None:
    paths = {"onnx_file": tmp_path / "m.onnx", "missing": tmp_path / "nope.pt", "run": det_run}
    paths["onnx_file"].write_bytes(b"x")
    with pytest.raises(UserError, match=match):
        export(paths[target], fmt)
