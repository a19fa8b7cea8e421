"""predict as a pipeline: reduced JPEG decode, film-pixel boxes, --full-size, ordered results, worker errors."""

from __future__ import annotations

import csv
import random
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fracturekit.data.imageio import jpeg_reduction, read_image
from fracturekit.data.phantoms import generate_phantom
from fracturekit.infer import pipeline
from fracturekit.infer.backends.pytorch import PyTorch
from fracturekit.predict import predict

FILM_W, FILM_H = 2048, 1600  # a film 4x imgsz 320 on its short side: decoded at 1/4
BOX = (0.30, 0.25, 0.55, 0.60)  # the fake detector's box, as fractions of its letterboxed input (x1 y1 x2 y2)


@pytest.fixture
def runs(tiny_runs: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    return {task: Path(shutil.copytree(run, tmp_path / task)) for task, run in tiny_runs.items()}


def _film(size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A phantom stretched to (w, h): bone-like structure at every scale, so a reduced decode has edges to keep."""
    return cv2.resize(generate_phantom(seed, 0, size=256).image, size, interpolation=cv2.INTER_LINEAR)


def _jpeg(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    return path


# ------------------------------------------------------------------------------------------ reduced decode
@pytest.mark.parametrize(
    ("wh", "min_side", "reduction"),
    [
        ((2048, 1600), 320, 4),  # 1600 // 4 = 400 >= 320; 1600 // 8 = 200 is too small
        ((2048, 1600), 640, 2),  # 800 >= 640
        ((2048, 1600), 200, 8),  # 200 >= 200: the short side may land exactly on imgsz
        ((1000, 1279), 640, 1),  # short side under twice imgsz: full size
        ((373, 454), 160, 2),  # a FracAtlas film at a classifier's 160: 186 px short side
    ],
)
def test_jpeg_reduction(wh: tuple[int, int], min_side: int, reduction: int) -> None:
    assert jpeg_reduction(*wh, min_side) == reduction


def test_reduced_decode_only_for_complete_8bit_jpeg(tmp_path: Path) -> None:
    img = _film((FILM_W, FILM_H))
    jpg = _jpeg(tmp_path / "a.jpg", img)
    color = _jpeg(tmp_path / "c.jpg", cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), img)
    png16 = tmp_path / "b.png"
    cv2.imwrite(str(png16), img.astype(np.uint16) * 257)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpg.read_bytes()[: jpg.stat().st_size * 3 // 4])  # truncated: recovered at full size
    cases = [  # (file, reduction expected)
        (jpg, 4),  # gray 8-bit JPEG: 1/4
        (color, 4),  # a 3-channel JPEG: 1/4, then to gray as a full decode does
        (png, 1),  # PNG: no DCT to scale, decoded as before
        (png16, 1),  # 16-bit PNG: windowed at full size as before
        (cut, 1),  # a truncated JPEG keeps its recovery path
    ]
    for path, reduction in cases:
        full, small = read_image(path), read_image(path, min_side=320)
        assert small.reduction == reduction, path.name
        assert small.film_shape == full.film_shape == (FILM_H, FILM_W), path.name
        assert small.pixels.shape == (FILM_H // reduction, FILM_W // reduction), path.name
        assert small.warnings == full.warnings, path.name
    # the reduced pixels are the film's block means: within JPEG noise of a full decode shrunk by area
    area = cv2.resize(read_image(jpg).pixels, (FILM_W // 4, FILM_H // 4), interpolation=cv2.INTER_AREA)
    assert np.abs(area.astype(int) - read_image(jpg, min_side=320).pixels).mean() < 1.5


def test_reduced_decode_ignores_exif_orientation(tmp_path: Path) -> None:
    """A full decode ignores EXIF orientation (IMREAD_UNCHANGED); OpenCV's reduced flags would apply it."""
    from PIL import Image

    img = _film((FILM_W, FILM_H))
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.fromarray(img).save(path, quality=95, exif=exif)
    assert read_image(path, min_side=320).pixels.shape == (FILM_H // 4, FILM_W // 4)


# ------------------------------------------------------------------------------------------ sizing
@pytest.mark.parametrize(
    ("devices", "threads", "cores", "workers"),
    [
        (["cpu"], None, 2, 1),  # the backend takes both cores: one decoder, one writer still
        (["cpu", "cpu"], 1, 8, 7),  # --threads 1: seven cores left
        (["cuda:0"], None, 16, 15),  # a GPU model takes the one core that feeds it
        (["cuda:0", "cpu"], 4, 16, 12),  # the models run one after the other: the CPU one's 4 threads count
    ],
)
def test_spare_cores(
    monkeypatch: pytest.MonkeyPatch, devices: list[str], threads: int | None, cores: int, workers: int
) -> None:
    monkeypatch.setattr(pipeline, "cpu_threads", lambda requested=None: requested or cores)
    models = [type("M", (), {"device": d})() for d in devices]
    assert pipeline.spare_cores(models, threads) == workers  # type: ignore[arg-type]


def test_min_side_is_the_largest_imgsz() -> None:
    det, clf = type("M", (), {"imgsz": 640})(), type("M", (), {"imgsz": 224})()
    assert pipeline.min_side([det, clf, None], full_size=False) == 640  # type: ignore[list-item]
    assert pipeline.min_side([det, clf], full_size=True) is None  # type: ignore[list-item]


# ------------------------------------------------------------------------------------------ predict
def _fake_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    """The PyTorch backend's forward replaced by one box at BOX of each letterboxed input, confidence 0.9."""

    def forward(cls: type, model: object, x: np.ndarray) -> np.ndarray:
        h, w = x.shape[2:]
        x1, y1, x2, y2 = BOX[0] * w, BOX[1] * h, BOX[2] * w, BOX[3] * h
        raw = np.zeros((len(x), 5, 1), np.float32)  # (B, 4 + nc, anchors): cx cy w h, then the class score
        raw[:, :, 0] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 0.9]
        return raw

    monkeypatch.setattr(PyTorch, "forward", classmethod(forward))


def _rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "predictions.csv").open()))


def test_reduced_decode_boxes_in_film_pixels(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same model box comes back at the same film pixels (within 1 px) from a reduced and a full decode;
    the annotated image is drawn on the reduced film, at full size with `full_size`."""
    _fake_detector(monkeypatch)
    src = tmp_path / "films"
    _jpeg(src / "big.jpg", _film((FILM_W, FILM_H)))
    kw = {"detector": runs["detect"], "imgsz": 320, "conf": 0.25}
    reduced = predict(src, out=tmp_path / "reduced", **kw)[0]
    full = predict(src, out=tmp_path / "full", full_size=True, **kw)[0]
    assert (reduced["width"], reduced["height"]) == (full["width"], full["height"]) == (FILM_W, FILM_H)
    assert len(reduced["boxes"]) == len(full["boxes"]) == 1
    for k in ("x1", "y1", "x2", "y2"):
        assert abs(reduced["boxes"][0][k] - full["boxes"][0][k]) <= 1.0, k
    assert _rows(tmp_path / "reduced")[0]["boxes"] == _rows(tmp_path / "full")[0]["boxes"]  # the CSV too
    small = cv2.imread(str(tmp_path / "reduced" / reduced["annotated"]))
    large = cv2.imread(str(tmp_path / "full" / full["annotated"]))
    assert small.shape[1] == FILM_W // 4 and large.shape[1] == FILM_W  # the caption band adds rows, not columns


def test_results_in_order_whatever_decode_finishes_first(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three decode workers, films taking random times: rows still come in film order, one per film."""
    import fracturekit.infer.preprocess as pre

    src = tmp_path / "films"
    src.mkdir()
    for i in range(12):
        cv2.imwrite(str(src / f"f{i:02d}.png"), _small(i))
    real, rng = pre.read_image, random.Random(0)
    delays = {f"f{i:02d}.png": rng.uniform(0, 0.05) for i in range(12)}

    def slow(path: Path, *a: object, **k: object) -> object:
        time.sleep(delays[Path(path).name])
        return real(path, *a, **k)

    monkeypatch.setattr(pre, "read_image", slow)
    monkeypatch.setattr(pipeline, "spare_cores", lambda models, threads: 3)
    recs = predict(src, detector=runs["detect"], out=tmp_path / "out", batch=1)
    names = [f"f{i:02d}.png" for i in range(12)]
    assert [r["path"] for r in recs] == names
    assert [r["path"] for r in _rows(tmp_path / "out")] == names  # the CSV, streamed, in film order too


def _small(i: int) -> np.ndarray:
    return generate_phantom(3, i, size=64).image


def test_decode_worker_exception_is_the_films_reason(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception in a decode worker skips that film with the reason, as a decode error always did."""
    import fracturekit.infer.preprocess as pre

    src = tmp_path / "films"
    src.mkdir()
    for i in range(4):
        cv2.imwrite(str(src / f"f{i}.png"), _small(i))
    real = pre.read_image

    def flaky(path: Path, *a: object, **k: object) -> object:
        if Path(path).name == "f2.png":
            raise RuntimeError("decoder crashed")
        return real(path, *a, **k)

    monkeypatch.setattr(pre, "read_image", flaky)
    recs = predict(src, detector=runs["detect"], out=tmp_path / "out", batch=2)
    assert [r["error"] for r in recs] == ["", "", "unreadable (RuntimeError: decoder crashed)", ""]
    assert [r["error"] for r in _rows(tmp_path / "out")][2] == "unreadable (RuntimeError: decoder crashed)"


@pytest.mark.slow  # two CLI processes (each imports torch): 211 s on the loaded shared machine
def test_ctrl_c_leaves_a_resumable_run(runs: dict[str, Path], tmp_path: Path) -> None:
    """SIGINT mid-run: the workers stop, the process exits, every row in predictions.csv has its image, and
    --resume finishes the rest without predicting a film twice."""
    import os
    import signal
    import subprocess
    import sys

    from fracturekit.data.phantoms import write_phantom_dataset

    write_phantom_dataset(tmp_path / "films", n=40, seed=11, size=64, fmt="images")
    out = tmp_path / "pred"
    cmd = [sys.executable, "-c", "from fracturekit.cli import main; main()", "predict", "--source", "films"]
    cmd += ["--detector", str(runs["detect"]), "--out", str(out), "--batch", "1"]
    env = {**os.environ, "FRACTUREKIT_OFFLINE": "1", "YOLO_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    table, deadline = out / "predictions.csv", time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if table.is_file() and len(table.read_text().splitlines()) > 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) != 0, "predict must be stopped mid-run"
    kept = _rows(out)
    assert 3 <= len(kept) < 40
    assert all((out / r["annotated"]).is_file() for r in kept)
    res = subprocess.run([*cmd, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    rows = _rows(out)
    assert len(rows) == 40 and len({r["path"] for r in rows}) == 40
    assert [r["path"] for r in rows[: len(kept)]] == [r["path"] for r in kept]
