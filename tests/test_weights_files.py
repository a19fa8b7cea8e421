"""A damaged or foreign weights file gets one sentence at every command that loads weights (load_checkpoint)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fracturekit.core.errors import UserError
from fracturekit.infer.model import load_model


def _truncated(path: Path) -> None:
    import torch

    torch.save({"model": torch.nn.Linear(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:2000])  # a copy cut short: the zip directory at its end is gone


def _state_dict(path: Path) -> None:
    import torch

    torch.save(torch.nn.Linear(2, 2).state_dict(), path)  # weights of some other network, no Ultralytics model


def _foreign_model(path: Path) -> None:
    import torch

    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a checkpoint-shaped dict whose model is not a YOLO


CASES = [
    (_truncated, r"truncated or not a PyTorch checkpoint \(2,000 bytes, no archive directory at its end\)"),
    (lambda p: p.write_bytes(b""), r"truncated or not a PyTorch checkpoint \(0 bytes"),  # an empty download
    (lambda p: p.write_text("<html>404</html>"), "truncated or not a PyTorch checkpoint"),  # an error page saved as .pt
    (_state_dict, "a PyTorch file, but no Ultralytics YOLO checkpoint inside"),
    (_foreign_model, "holds a Linear, not a YOLO model"),
]


@pytest.mark.parametrize(("write", "message"), CASES)
def test_damaged_weights_one_sentence(tmp_path: Path, write, message: str) -> None:
    weights = tmp_path / "best.pt"
    write(weights)
    with pytest.raises(UserError, match=message) as caught:
        load_model(weights, "detect", device="cpu")  # predict, evaluate and cases load through here
    assert "\n" not in str(caught.value) and "yolo predict" not in str(caught.value)


def test_every_command_that_loads_weights(tmp_path: Path, prepared_phantoms: Path) -> None:
    from fracturekit.export import export
    from fracturekit.train import train

    weights = tmp_path / "best.pt"
    _truncated(weights)
    expected = "best.pt: truncated or not a PyTorch checkpoint"
    with pytest.raises(UserError, match=expected):
        export(weights, fmt="onnx", check=False)
    with pytest.raises(UserError, match=expected):  # refused before any epoch
        train("detect", prepared_phantoms, project=tmp_path / "runs", name="ft", weights=str(weights), epochs=1)
    with pytest.raises(UserError, match=expected):  # --model FILE.pt is its own checkpoint
        train("detect", prepared_phantoms, project=tmp_path / "runs", name="m", model=str(weights), epochs=1)


def test_static_export_for_another_imgsz(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 320, 320])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 320, 320])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"task": "detect", "names": "{0: 'fracture'}", "stride": "32", "imgsz": "[320, 320]"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, tmp_path / "best.onnx")
    assert load_model(tmp_path / "best.onnx", "detect").imgsz == 320  # its own size: fine
    with pytest.raises(UserError, match=r"exported for a fixed 320x320 input, not --imgsz 640; leave out --imgsz"):
        load_model(tmp_path / "best.onnx", "detect", imgsz=640)
