"""fracturekit.predict: sources, letterboxing, records and outputs, thresholds, bad files, real films."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import shared_data

from fracturekit.core.errors import UserError
from fracturekit.data.phantoms import generate_phantom, write_phantom_dataset
from fracturekit.evaluation.calibration import apply_temperature
from fracturekit.infer.preprocess import letterbox, rect_shape
from fracturekit.predict import list_sources, predict


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 phantoms in a nested folder (two aspect ratios), one corrupt PNG and one non-image file."""
    root = tmp_path_factory.mktemp("films")
    write_phantom_dataset(root, n=3, seed=7, size=96, fmt="images")
    sub = root / "ward" / "b"
    sub.mkdir(parents=True)
    for i in range(3):  # landscape crops: a batch mixes shapes
        cv2.imwrite(str(sub / f"wide_{i}.png"), generate_phantom(8, i, size=96).image[16:80])
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def runs(tiny_runs: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """Private copies of the tiny runs, so a test may add eval/metrics.json or exports to them."""
    return {task: Path(shutil.copytree(run, tmp_path / task)) for task, run in tiny_runs.items()}


# ------------------------------------------------------------------------------------------ pure helpers
@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("", 7),  # the folder: recursive, corrupt.png kept (reported later), notes.txt ignored
        ("phantom_7_00000.png", 1),  # one file
        ("**/wide_*.png", 3),  # a recursive glob
        ("*.png", 4),  # a flat glob: 3 phantoms + corrupt.png
    ],
)
def test_list_sources(films: Path, pattern: str, expected: int) -> None:
    assert len(list_sources(films / pattern if pattern else films)) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "missing_dir",  # nothing there
        "empty",  # a folder without any image
    ],
)
def test_list_sources_user_errors(tmp_path: Path, bad: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(UserError, match=bad):
        list_sources(tmp_path / bad)


@pytest.mark.parametrize(
    ("hw", "imgsz", "shape"),
    [
        ((800, 1024), 640, (512, 640)),  # landscape film: 500 rows padded up to 512
        ((1024, 800), 640, (640, 512)),  # portrait
        ((64, 64), 64, (64, 64)),  # already square at size
        ((30, 200), 64, (32, 64)),  # very wide: at least one stride
    ],
)
def test_rect_shape(hw: tuple[int, int], imgsz: int, shape: tuple[int, int]) -> None:
    assert rect_shape(*hw, imgsz, 32) == shape


@pytest.mark.parametrize(
    ("hw", "target"),
    [
        ((800, 1024), (512, 640)),  # downscale with vertical padding
        ((50, 40), (64, 64)),  # upscale with horizontal padding
    ],
)
def test_letterbox_maps_points_back(hw: tuple[int, int], target: tuple[int, int]) -> None:
    gray = np.zeros(hw, np.uint8)
    y, x = hw[0] // 3, hw[1] // 4
    gray[y, x] = 255
    img, r, (left, top) = letterbox(gray, target)
    assert img.shape == target
    yy, xx = np.unravel_index(int(np.argmax(img)), img.shape)
    assert abs((xx - left) / r - x) <= 1 / r + 1 and abs((yy - top) / r - y) <= 1 / r + 1


# ------------------------------------------------------------------------------------------ predict
def test_predict_folder_with_corrupt_file(films: Path, runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    recs = predict(films, detector=runs["detect"], classifier=runs["classify"], out=out, conf=0.01, batch=4)
    assert len(recs) == 7
    bad = [r for r in recs if r["error"]]
    assert [Path(r["path"]).name for r in bad] == ["corrupt.png"]
    assert "not a decodable image" in bad[0]["error"]
    good = [r for r in recs if not r["error"]]
    for r in good:
        assert 0.0 <= r["fracture_probability"] <= 1.0
        assert r["decision"] in ("fracture", "no_fracture") and r["threshold"] == 0.5
        assert "no evaluate threshold" in r["note"]  # no metrics.json in these runs
        assert (out / r["annotated"]).is_file()  # relative to the output folder
        for b in r["boxes"]:
            assert 0 <= b["x1"] <= b["x2"] <= r["width"] and 0 <= b["y1"] <= b["y2"] <= r["height"]
    assert {(r["width"], r["height"]) for r in good} == {(96, 96), (96, 64)}
    assert (out / "ward__b__wide_0.jpg").is_file()  # nested names flattened, no collisions
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["path"] for r in rows] == [r["path"] for r in recs]
    data = json.loads((out / "predictions.json").read_text())
    assert data["n_errors"] == 1 and len(data["images"]) == 7 and data["notes"]


@pytest.mark.parametrize(
    ("threshold", "temperature", "decision"),
    [
        (0.0, 1.0, "fracture"),  # every probability >= 0: all fracture
        (1.01, 1.0, "no_fracture"),  # no probability reaches 1.01
        (0.0, 3.0, "fracture"),  # temperature changes the probability, not this decision
    ],
)
def test_classifier_uses_evaluate_metrics(
    films: Path, runs: dict[str, Path], tmp_path: Path, threshold: float, temperature: float, decision: str
) -> None:
    src = films / "phantom_7_00000.png"
    raw = predict(src, classifier=runs["classify"], out=tmp_path / "raw", save_images=False)[0]
    metrics = {
        "classification": {
            "run": str(runs["classify"]),
            "threshold": threshold,
            "temperature": temperature,
            "positive_class": "fracture",
        }
    }
    (runs["classify"] / "eval").mkdir(exist_ok=True)
    (runs["classify"] / "eval" / "metrics.json").write_text(json.dumps(metrics))
    rec = predict(src, classifier=runs["classify"], out=tmp_path / "cal", save_images=False)[0]
    assert rec["decision"] == decision and rec["threshold"] == threshold and rec["note"] == ""
    expected = apply_temperature(np.array([raw["fracture_probability"]]), temperature)[0]
    assert rec["fracture_probability"] == pytest.approx(expected, abs=2e-6)


def test_detector_alone_uses_detection_threshold(films: Path, runs: dict[str, Path], tmp_path: Path) -> None:
    (runs["detect"] / "eval").mkdir(exist_ok=True)
    metrics = {"detection": {"run": str(runs["detect"]), "threshold": 0.0}}
    (runs["detect"] / "eval" / "metrics.json").write_text(json.dumps(metrics))
    recs = predict(films / "ward", detector=runs["detect"], out=tmp_path / "o", save_images=False)
    for r in recs:
        assert r["score_source"] == "detector" and r["fracture_probability"] == r["detector_score"]
        assert r["decision"] == "fracture" and r["threshold"] == 0.0  # score >= 0 always


def test_batching_does_not_change_results(films: Path, runs: dict[str, Path], tmp_path: Path) -> None:
    a = predict(films, detector=runs["detect"], out=tmp_path / "a", conf=0.001, batch=1, save_images=False)
    b = predict(films, detector=runs["detect"], out=tmp_path / "b", conf=0.001, batch=7, save_images=False)
    checked = 0
    for ra, rb in zip(a, b, strict=True):
        assert ra["error"] == rb["error"]
        if ra["error"]:
            continue
        assert ra["detector_score"] == pytest.approx(rb["detector_score"], abs=1e-3)
        for box in (x for x in ra["boxes"] if x["confidence"] > 0.01):  # clear of the 0.001 floor in both
            d = [max(abs(box[k] - o[k]) for k in ("x1", "y1", "x2", "y2")) for o in rb["boxes"]]
            assert d and min(d) <= 2.0  # each box has a twin within 2 px in the other batching
            checked += 1
    assert checked > 0  # the tiny detector puts boxes on these films, so the comparison above ran


def test_pytorch_path_matches_ultralytics_predict(films: Path, runs: dict[str, Path], tmp_path: Path) -> None:
    from fracturekit.core.yolo_env import load_ultralytics

    load_ultralytics()
    from ultralytics import YOLO

    src = films / "ward" / "b" / "wide_1.png"
    ours = predict(src, detector=runs["detect"], out=tmp_path / "o", imgsz=64, conf=0.001, save_images=False)[0]
    ref = YOLO(str(runs["detect"] / "weights" / "best.pt")).predict(str(src), imgsz=64, conf=0.001, verbose=False)[0]
    assert len(ours["boxes"]) == len(ref.boxes)
    got = np.array([[b["x1"], b["y1"], b["x2"], b["y2"], b["confidence"]] for b in ours["boxes"]]).reshape(-1, 5)
    want = np.c_[ref.boxes.xyxy.numpy(), ref.boxes.conf.numpy()]
    np.testing.assert_allclose(got[:, :4], want[:, :4], atol=0.2)
    np.testing.assert_allclose(got[:, 4], want[:, 4], atol=1e-4)


def test_onnx_matches_pytorch(films: Path, runs: dict[str, Path], tmp_path: Path) -> None:
    from fracturekit.export import export

    det_onnx, cls_onnx = export(runs["detect"]), export(runs["classify"])
    kw = {"conf": 0.001, "save_images": False, "batch": 4}
    pt = predict(
        films, detector=runs["detect"], classifier=runs["classify"], out=tmp_path / "pt", backend="torch", **kw
    )
    ox = predict(films, detector=det_onnx, classifier=cls_onnx, out=tmp_path / "ox", **kw)
    checked = 0
    for a, b in zip(pt, ox, strict=True):
        assert a["error"] == b["error"]
        if a["error"]:
            continue
        assert a["fracture_probability"] == pytest.approx(b["fracture_probability"], abs=1e-3)
        assert a["detector_score"] == pytest.approx(b["detector_score"], abs=1e-3)
        top_a = [b_ for b_ in a["boxes"] if b_["confidence"] > 0.01][:10]
        for box in top_a:  # each confident PyTorch box has an ONNX twin within 2 px
            d = [max(abs(box[k] - o[k]) for k in ("x1", "y1", "x2", "y2")) for o in b["boxes"]]
            assert d and min(d) <= 2.0
        checked += len(top_a)
    assert checked > 0  # some boxes were compared: the loop above did not run over nothing


@pytest.mark.parametrize(
    ("backends", "want"),
    [
        (("onnx",), 1),  # ONNX only: one film per call, onnxruntime's fastest on CPU
        (("pt",), 8),  # PyTorch: batches of 8
        (("onnx", "pt"), 8),  # a mix: PyTorch decides
    ],
)
def test_default_batch_follows_backend(
    films: Path, runs: dict[str, Path], tmp_path: Path, backends: tuple[str, ...], want: int
) -> None:
    from fracturekit.export import export

    det = export(runs["detect"]) if backends[0] == "onnx" else runs["detect"]
    clf = runs["classify"] if "pt" in backends[1:] else None
    predict(films, detector=det, classifier=clf, out=tmp_path / "o", save_images=False)
    assert json.loads((tmp_path / "o" / "predictions.json").read_text())["batch"] == want


@pytest.mark.parametrize(
    ("weights_task", "as_kind"),
    [
        ("classify", "detector"),  # a classifier passed as --detector
        ("detect", "classifier"),  # a detector passed as --classifier
    ],
)
def test_wrong_model_kind(films: Path, runs: dict[str, Path], tmp_path: Path, weights_task: str, as_kind: str) -> None:
    with pytest.raises(UserError, match=f"a {weights_task} model"):
        predict(films, out=tmp_path, **{as_kind: runs[weights_task]})


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # no model at all
        {"detector": "no/such/run"},  # a path that does not exist
        {"detector": "RUN", "device": "cuda:0"},  # only CPU here
    ],
)
def test_predict_user_errors(films: Path, runs: dict[str, Path], tmp_path: Path, kwargs: dict[str, str]) -> None:
    kwargs = {k: (runs["detect"] if v == "RUN" else v) for k, v in kwargs.items()}
    with pytest.raises(UserError):
        predict(films, out=tmp_path, **kwargs)  # type: ignore[arg-type]


def test_cam_overlays(films: Path, runs: dict[str, Path], tmp_path: Path) -> None:
    recs = predict(films / "ward", detector=runs["detect"], classifier=runs["classify"], out=tmp_path / "o", cam=True)
    for r in recs:
        assert [Path(p).name for p in r["cam"]] == [f"{Path(r['annotated']).stem}{t}.png" for t in ("", ".det")]
        for p in r["cam"]:
            assert cv2.imread(str(tmp_path / "o" / p)).shape[:2] == (r["height"], r["width"])  # relative to out


@pytest.mark.realdata
def test_real_films(runs: dict[str, Path], tmp_path: Path) -> None:
    frac = shared_data("fracatlas") / "images"
    graz = shared_data("grazpedwri-sample")
    src = tmp_path / "src"
    src.mkdir()
    jpgs = sorted((frac / "Fractured").glob("*.jpg"))[:2]
    pngs = sorted(graz.rglob("*.png"))[:1]
    for p in jpgs + pngs:
        (src / p.name).symlink_to(p)
    (src / "truncated.jpg").write_bytes(jpgs[0].read_bytes()[:200])  # header only: nothing decodable
    recs = predict(src, detector=runs["detect"], classifier=runs["classify"], out=tmp_path / "out")
    by_name = {Path(r["path"]).name: r for r in recs}
    assert by_name["truncated.jpg"]["error"]
    for p in jpgs + pngs:
        r = by_name[p.name]
        assert not r["error"] and r["fracture_probability"] is not None
        assert (r["height"], r["width"]) == cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape[:2]


def test_static_onnx_export_runs_in_fixed_shape(films: Path, runs: dict[str, Path], tmp_path: Path) -> None:
    from fracturekit.export import export

    onnx = export(runs["detect"], dynamic=False)  # fixed (1, 3, 64, 64) input: square letterbox, one by one
    kw = {"conf": 0.001, "save_images": False, "batch": 3, "exist_ok": True}  # one output folder per backend
    square = sorted(films.glob("phantom_*.png"))
    for p in square:  # square films: the fixed shape equals the rectangular one, so results must agree
        a = predict(p, detector=runs["detect"], out=tmp_path / "pt", **kw)[0]
        b = predict(p, detector=onnx, out=tmp_path / "ox", **kw)[0]
        assert a["detector_score"] == pytest.approx(b["detector_score"], abs=1e-3)
    recs = predict(films, detector=onnx, out=tmp_path / "all", **kw)
    assert sum(1 for r in recs if r["error"]) == 1  # only corrupt.png


def test_output_inside_source_is_not_read_back(runs: dict[str, Path], tmp_path: Path) -> None:
    src = write_phantom_dataset(tmp_path / "src", n=2, seed=9, size=64, fmt="images")
    first = predict(src, detector=runs["detect"], out=src / "pred")
    second = predict(src, detector=runs["detect"], out=src / "pred", exist_ok=True)  # pred/*.jpg now under src
    assert len(first) == len(second) == 2


def test_coco_predictions_and_readable_cam(films: Path, runs: dict[str, Path], tmp_path: Path) -> None:
    from pycocotools.coco import COCO

    from fracturekit.infer.annotate import BELOW

    out = tmp_path / "out"
    recs = predict(films / "ward", detector=runs["detect"], classifier=runs["classify"], out=out, conf=0.001, cam=True)
    coco = COCO(str(out / "predictions_coco.json"))  # pycocotools reads it as a dataset with scores
    assert len(coco.getImgIds()) == len(recs)
    assert len(coco.getAnnIds()) == sum(r["n_boxes"] for r in recs) > 0
    first = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    assert [a["score"] for a in first] == [b["confidence"] for b in recs[0]["boxes"]]
    # wide films: the classifier saw only the centre square, and its CAM says so in the hatched margin
    cam = cv2.imread(str(out / recs[0]["cam"][0]))  # relative to --out
    assert tuple(int(v) for v in cam[1, 1]) == BELOW  # the note's solid chip at the top-left of the margin


def test_evaluate_and_predict_give_identical_scores(
    prepared_phantoms: Path, runs: dict[str, Path], tmp_path: Path
) -> None:
    """Both score through the inference core: the same films get the same classifier calibrated probability and
    detector image score. predict rounds scores to 6 decimals in its records (<= 5e-7), compared within 1e-5."""
    import pandas as pd

    from fracturekit.evaluate import evaluate

    m = evaluate(
        prepared_phantoms,
        classifier=runs["classify"],
        detector=runs["detect"],
        bootstrap=0,
        cases=0,
        allow_overlap=True,
    )  # no --out: metrics.json into each run's eval/, where predict looks for the threshold and temperature
    rows = pd.read_csv(Path(m["out"]) / "predictions.csv")
    for model, folder, column, key in (
        ("classifier", prepared_phantoms / "cls" / "test", "score_calibrated", "fracture_probability"),
        ("detector", prepared_phantoms / "det" / "images" / "test", "score", "detector_score"),
    ):
        mine = rows[rows["model"] == model]
        prefix = folder.relative_to(prepared_phantoms)
        want = {Path(p).relative_to(prefix).as_posix(): s for p, s in zip(mine["path"], mine[column], strict=True)}
        kw = {model: runs["classify" if model == "classifier" else "detect"]}
        recs = predict(folder, out=tmp_path / model, save_images=False, **kw)  # type: ignore[arg-type]
        got = {r["path"]: r[key] for r in recs}
        assert len(want) >= 10 and got.keys() == want.keys()  # the same films, every one scored
        np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=0, atol=1e-5)
        if model == "classifier":  # predict used evaluate's tuned policy, not the 0.5 default
            section = m["classification"]
            assert {r["threshold"] for r in recs} == {section["threshold"]} and {r["note"] for r in recs} == {""}
            assert json.loads((tmp_path / model / "predictions.json").read_text())["temperature"] == pytest.approx(
                section["temperature"]
            )
        else:  # scores below the display --conf 0.25 count too, as in evaluate (predict used to drop them)
            assert any(0 < s < 0.25 for s in want.values()), sorted(want.values())
