"""Format auto-detection and dispatch (`load_source`), on tiny layouts and on the phantom writer."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fracturekit.core.errors import UserError
from fracturekit.ingest.source import detect_format, load_source


def img(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((16, 16), 70, np.uint8))
    return path


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


COCO = json.dumps({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": []})
VOC = "<annotation><filename>a.png</filename></annotation>"


def make_layout(root: Path, kind: str) -> None:
    if kind == "coco":
        img(root / "train" / "a.png")
        write(root / "train" / "_annotations.coco.json", COCO)
    elif kind == "voc":
        img(root / "JPEGImages" / "a.png")
        write(root / "Annotations" / "a.xml", VOC)
    elif kind == "yolo":
        img(root / "train" / "images" / "a.png")
        write(root / "train" / "labels" / "a.txt", "")
        write(root / "data.yaml", "names: [fracture]\n")
    elif kind == "yolo-no-yaml":
        img(root / "images" / "a.png")
        write(root / "labels" / "a.txt", "0 0.5 0.5 0.1 0.1\n")
    elif kind == "folders":
        img(root / "train" / "fractured" / "a.png")
        img(root / "train" / "normal" / "b.png")
    elif kind == "fracatlas":
        img(root / "images" / "Fractured" / "a.jpg")
        img(root / "images" / "Non_fractured" / "b.jpg")
        (root / "Annotations" / "YOLO").mkdir(parents=True)
    elif kind == "fracatlas-nested":
        make_layout(root / "FracAtlas", "fracatlas")


@pytest.mark.parametrize(
    ("kind", "fmt"),
    [
        ("coco", "coco"),
        ("voc", "voc"),
        ("yolo", "yolo"),
        ("yolo-no-yaml", "yolo"),
        ("folders", "folders"),
        ("fracatlas", "fracatlas"),
        ("fracatlas-nested", "fracatlas"),
    ],
)
def test_detect_format(tmp_path: Path, kind: str, fmt: str) -> None:
    make_layout(tmp_path, kind)
    assert detect_format(tmp_path) == fmt


def test_detect_json_file_is_coco(tmp_path: Path) -> None:
    write(tmp_path / "x.json", COCO)
    assert detect_format(tmp_path / "x.json") == "coco"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("empty", "cannot tell the dataset format (found no images)"),
        ("flat", "cannot tell the dataset format"),
        ("coco+yolo", "found coco: "),
    ],
)
def test_unclear_format_is_a_user_error_asking_for_format(tmp_path: Path, setup: str, message: str) -> None:
    if setup == "flat":
        img(tmp_path / "a.png")
    elif setup == "coco+yolo":
        make_layout(tmp_path, "coco")
        make_layout(tmp_path, "yolo")
    with pytest.raises(UserError) as exc:
        detect_format(tmp_path)
    assert message in str(exc.value) and "pass --format coco|voc|yolo|folders|fracatlas" in str(exc.value)
    assert str(exc.value).startswith(str(tmp_path))


def test_load_source_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file or folder"):
        load_source(tmp_path / "missing")
    make_layout(tmp_path, "folders")
    with pytest.raises(UserError, match="unknown format 'tiff'"):
        load_source(tmp_path, fmt="tiff")
    with pytest.raises(UserError, match="not FracAtlas"):
        load_source(tmp_path, fmt="fracatlas")


def test_explicit_format_wins_over_detection(tmp_path: Path) -> None:
    make_layout(tmp_path, "coco")
    make_layout(tmp_path, "yolo")
    assert load_source(tmp_path, fmt="coco").format == "coco"
    assert load_source(tmp_path, fmt="YOLO").format == "yolo"


@pytest.mark.parametrize("fmt", ["coco", "yolo", "folders"])
def test_phantom_datasets_round_trip(tmp_path: Path, fmt: str) -> None:
    from fracturekit.data.phantoms import generate_phantom, write_phantom_dataset

    root = write_phantom_dataset(tmp_path / fmt, n=8, seed=3, size=64, fmt=fmt)
    assert detect_format(root) == fmt
    r = load_source(root)
    assert len(r.records) == 8 and not r.skipped
    fractured = {f"phantom_3_{i:05d}.png" for i in range(8) if generate_phantom(3, i, 64).fractured}
    if fmt == "folders":
        got = {x.source.name for x in r.records if x.label == "fracture"}
    else:
        got = {x.source.name for x in r.records if x.boxes}
        assert r.class_names == ["fracture"]
    assert got == fractured
