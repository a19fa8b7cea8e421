"""How the OpenVINO backend loads an export: the compiled model export keeps, and the uint8 gray input.

`OpenVino.prepare` (run by `fracturekit export`) keeps the export compiled for this machine beside it; predict
loads that instead of compiling, only when it was compiled with the same settings, and scores alike.
`gray_input`: the graph casts, scales by 1/255 and copies the gray channel three times, as `to_batch` does on the
host; both are compiled in float32 here (bf16 would round the two differently placed casts differently) and must
agree on films of two letterbox shapes (the export's input is dynamic).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fracturekit.export import export
from fracturekit.infer.preprocess import to_batch


@pytest.fixture(scope="module")
def det_run(tiny_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the tiny detect run (export writes into weights/)."""
    return Path(shutil.copytree(tiny_runs["detect"], tmp_path_factory.mktemp("ov") / "detect"))


def test_gray_input_gives_the_exports_outputs(det_run: Path) -> None:
    ov = pytest.importorskip("openvino")
    from fracturekit.infer.backends.openvino_cpu import gray_input

    folder = export(det_run, "openvino", check=False)
    xml = str(next(folder.glob("*.xml")))
    core = ov.Core()
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    plain = core.compile_model(core.read_model(xml), "CPU", f32)
    gray = core.compile_model(gray_input(core.read_model(xml)), "CPU", f32)
    assert gray.input(0).get_element_type() == ov.Type.u8
    rng = np.random.default_rng(0)
    for shape in ((2, 64, 96), (1, 96, 64)):  # a batch of two landscape films, one portrait film
        films = rng.integers(0, 256, shape, dtype=np.uint8)
        want = plain({0: to_batch(list(films))})[0]
        got = gray({0: films[:, None]})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert np.abs(want).max() > 0  # a model that outputs something, so equal outputs say something


def _compiles(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each compile_model call of OpenVINO's Core (a load that imports a kept blob makes none)."""
    import openvino as ov

    calls: list[str] = []
    compile_model = ov.Core.compile_model

    def spy(self: object, *args: object, **kw: object) -> object:
        calls.append("compile")
        return compile_model(self, *args, **kw)

    monkeypatch.setattr(ov.Core, "compile_model", spy)
    return calls


def test_export_keeps_the_compiled_model(det_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    from fracturekit.core.yolo_env import cpu_threads
    from fracturekit.data.phantoms import write_phantom_dataset
    from fracturekit.infer.backends.openvino_cpu import compiled_folder
    from fracturekit.infer.model import load_model
    from fracturekit.predict import predict

    folder = export(det_run, "openvino", check=False)
    kept = sorted(compiled_folder(folder).iterdir())
    assert len(kept) == 1 and kept[0].suffix == ".blob"
    films = write_phantom_dataset(tmp_path / "films", n=3, seed=3, size=96, fmt="images")
    kw = {"conf": 0.001, "save_images": False}  # predict's default threads, as export compiled with
    calls = _compiles(monkeypatch)
    with_blob = predict(films, detector=folder, out=tmp_path / "kept", **kw)
    assert calls == []  # the kept model was loaded, not compiled again
    load_model(
        folder, "detect", threads=cpu_threads() + 1
    )  # other settings than export compiled with: compiled, not written
    assert calls == ["compile"] and sorted(compiled_folder(folder).iterdir()) == kept
    kept[0].write_bytes(b"not a compiled model")  # unreadable: compiled again (with a warning), same scores
    compiled = predict(films, detector=folder, out=tmp_path / "compiled", **kw)
    assert calls == ["compile", "compile"]
    for a, b in zip(with_blob, compiled, strict=True):
        assert a["detector_score"] == b["detector_score"] and a["boxes"] == b["boxes"]
