"""The OpenVINO backend's uint8 gray input (`openvino_cpu.gray_input`) gives the export's own outputs.

The graph casts, scales by 1/255 and copies the gray channel three times, as `to_batch` does on the host; both
are compiled in float32 here (bf16 would round the two differently placed casts differently) and must agree on
films of two letterbox shapes (the export's input is dynamic).
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
