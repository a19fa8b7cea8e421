"""fracturekit.export: ONNX beside the weights, with the metadata and dynamic axes predict relies on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fracturekit.core.errors import UserError
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


# ----------------------------------------------------------------- int8 / OpenVINO exports and their checks
@pytest.fixture(scope="module")
def cls_run(tiny_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(tiny_runs["classify"], tmp_path_factory.mktemp("exp") / "classify"))


@pytest.mark.parametrize(
    ("task", "metrics"),
    [
        ("detect", {"image_auroc", "map50"}),  # a detector is checked on image AUROC and mAP50
        ("classify", {"auroc"}),  # a classifier on AUROC
    ],
)
def test_int8_onnx_export_has_an_accuracy_check(det_run: Path, cls_run: Path, task: str, metrics: set[str]) -> None:
    import json

    from fracturekit.infer.model import check_path, load_model

    run = det_run if task == "detect" else cls_run
    path = export(run, "onnx", int8=True)
    assert path == run / "weights" / "best.int8.onnx"
    check = json.loads(check_path(path).read_text())
    assert check["precision"] == "int8" and check["split"] == "val" and check["n_images"] > 0
    assert set(check["export_metrics"]) == set(check["float32_metrics"]) == metrics
    # passed: every metric measurable, float32 AUROC clear of chance, no metric dropped more than max_loss
    deltas, ref = list(check["delta"].values()), check["float32_metrics"]
    informative = all(ref[k] is not None and ref[k] >= 0.6 for k in ref if "auroc" in k)
    want = None not in deltas and informative and all(-d <= 0.01 for d in deltas)
    assert check["passed"] == want
    if not informative:  # the tiny 1-epoch runs: the check says why it cannot vouch for the export
        assert not check["passed"] and ("near chance" in check["summary"] or "not measurable" in check["summary"])
    assert check["speed"]["ratio"] > 0 and check["cpu"]["model"]
    assert load_model(path, task).precision == "int8"


def test_int8_needs_a_dataset(det_run: Path, tmp_path: Path) -> None:
    loose = tmp_path / "best.pt"  # weights outside any run: no training films to calibrate on
    shutil.copy(det_run / "weights" / "best.pt", loose)
    with pytest.raises(UserError, match="--data"):
        export(loose, "onnx", int8=True)


def test_openvino_export_predicts_like_pytorch(det_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from fracturekit.data.phantoms import write_phantom_dataset
    from fracturekit.predict import predict

    folder = export(det_run, "openvino", check=False)
    assert folder.name == "best_openvino_model" and (folder / "metadata.yaml").is_file()
    films = write_phantom_dataset(tmp_path / "films", n=3, seed=3, size=96, fmt="images")
    kw = {"conf": 0.001, "save_images": False}
    pt = predict(films, detector=det_run, backend="torch", out=tmp_path / "pt", batch=2, **kw)
    ov = predict(films, detector=folder, out=tmp_path / "ov", batch=2, **kw)  # films on parallel requests
    ov1 = predict(films, detector=folder, out=tmp_path / "ov1", batch=1, **kw)  # one film per call
    assert len(pt) == len(ov) == 3
    for a, b, c in zip(pt, ov, ov1, strict=True):  # bf16 on CPUs that have it: 3 significant digits
        assert a["detector_score"] == pytest.approx(b["detector_score"], abs=0.02)
        assert b["detector_score"] == c["detector_score"] and b["boxes"] == c["boxes"]  # batching changes nothing


def _fake_export(weights: Path, name: str, passed: bool, ratio: float, cpu: dict | None = None) -> None:
    """An export file and its sidecar as `accuracy_check` writes them (only the keys choose_weights reads)."""
    import json

    from fracturekit.core.device import cpu_info
    from fracturekit.infer.model import check_path

    here = cpu_info()
    (weights / name).write_bytes(b"")
    check = {
        "passed": passed,
        "summary": f"{name} check",
        "speed": {"ratio": ratio},
        "cpu": cpu or {"model": here.model, "flags": list(here.flags)},
    }
    check_path(weights / name).write_text(json.dumps(check))


@pytest.mark.parametrize(
    ("exports", "backend", "want", "why"),
    [
        ([], "auto", "best.pt", "no export that passed"),  # nothing exported: PyTorch
        ([("best.onnx", True, 3.0), ("best.int8.onnx", True, 4.0)], "auto", "best.int8.onnx", "4.00x"),  # fastest
        ([("best.onnx", True, 3.0), ("best.int8.onnx", False, 9.0)], "auto", "best.onnx", "3.00x"),  # int8 failed
        ([("best.int8.onnx", False, 9.0)], "auto", "best.pt", "no export that passed"),  # only a failed one
        ([("best.int8.onnx", False, 9.0)], "onnx-int8", "best.int8.onnx", "WARNING"),  # asked by name: warned
        ([("best.onnx", True, 3.0)], "torch", "best.pt", "as asked"),  # PyTorch by name
    ],
)
def test_choose_weights(tmp_path: Path, exports: list, backend: str, want: str, why: str) -> None:
    from fracturekit.core.layout import RunDir
    from fracturekit.infer.model import choose_weights

    run = RunDir(tmp_path / "run")
    run.best.parent.mkdir(parents=True)
    run.best.write_bytes(b"")
    for name, passed, ratio in exports:
        _fake_export(run.best.parent, name, passed, ratio)
    path, reason = choose_weights(run, backend)
    assert path.name == want and why in reason


def test_choose_weights_elsewhere_measured_and_errors(tmp_path: Path) -> None:
    from fracturekit.core.layout import RunDir
    from fracturekit.infer.model import _fallback_rank, choose_weights

    run = RunDir(tmp_path / "run")
    run.best.parent.mkdir(parents=True)
    run.best.write_bytes(b"")
    other = {"model": "another CPU", "flags": ["avx2"]}
    _fake_export(run.best.parent, "best.onnx", True, 1.0, other)
    _fake_export(run.best.parent, "best.int8.onnx", True, 1.0, other)
    path, reason = choose_weights(run, "auto")  # speeds from another CPU are not trusted: the rule for this CPU
    want = "best.onnx" if _fallback_rank("onnx") < _fallback_rank("onnx-int8") else "best.int8.onnx"
    assert path.name == want and "another CPU" in reason
    with pytest.raises(UserError, match="--format openvino --int8"):  # asked for an export that is not there
        choose_weights(run, "openvino-int8")
    with pytest.raises(UserError, match="--backend nope"):
        choose_weights(run, "nope")


def test_reexport_without_check_drops_the_old_check(det_run: Path) -> None:
    from fracturekit.infer.model import check_path

    target = det_run / "weights" / "best.onnx"
    stale = check_path(target)
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text('{"passed": true}')  # what an earlier, checked export of other weights left
    assert export(det_run, "onnx", check=False) == target
    assert not stale.exists()  # predict's auto must not trust it for the new file
