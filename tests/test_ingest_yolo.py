"""YOLO reader: table tests on tiny files written here (Roboflow and Ultralytics layouts)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fracturekit.ingest.yolo import load_yolo, save_yolo


def img(path: Path, w: int = 16, h: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w), 90, np.uint8))
    return path


def txt(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def roboflow(root: Path, names: str = "['fracture', 'other']") -> Path:
    txt(
        root / "data.yaml",
        f"train: ../train/images\nval: ../valid/images\ntest: ../test/images\nnc: 2\nnames: {names}\n",
    )
    return root


def test_roboflow_layout_splits_and_pixels(tmp_path: Path) -> None:
    roboflow(tmp_path)
    img(tmp_path / "train" / "images" / "a.jpg", 32, 16)
    txt(tmp_path / "train" / "labels" / "a.txt", "0 0.5 0.5 0.25 0.5\n1 0.25 0.25 0.125 0.25\n")
    img(tmp_path / "valid" / "images" / "b.jpg")
    txt(tmp_path / "valid" / "labels" / "b.txt", "")
    img(tmp_path / "test" / "images" / "c.jpg")
    txt(tmp_path / "test" / "labels" / "c.txt", "0 0.5 0.5 1 1\n")
    r = load_yolo(tmp_path)
    assert r.class_names == ["fracture", "other"]
    by = {x.source.name: x for x in r.records}
    assert {k: v.split for k, v in by.items()} == {"a.jpg": "train", "b.jpg": "val", "c.jpg": "test"}
    a = by["a.jpg"].boxes
    assert [(b.label, b.x1, b.y1, b.x2, b.y2) for b in a] == [("fracture", 12, 4, 20, 12), ("other", 6, 2, 10, 6)]
    assert by["b.jpg"].boxes == [] and by["b.jpg"].problems == []  # empty label file: plain background
    # fracture among other classes: the image label counts fracture boxes only
    assert by["a.jpg"].label == "fracture" and by["b.jpg"].label == "no_fracture"
    assert not r.skipped


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("0 1.7 0.5 0.2 0.2", "x_center 1.7 out of range"),
        ("0 0.5 -0.3 0.2 0.2", "y_center -0.3 out of range"),
        ("5 0.5 0.5 0.2 0.2", "unknown class id 5"),
        ("0.5 0.5 0.5 0.2 0.2", "not a non-negative integer"),
        ("0 0.5 0.5 0.2", "4 values, expected 5"),
        ("0 0.5 0.5 0.2 0.2 0.9", "6 values, expected 5"),
        ("0 0.5 0.5 0 0.2", "zero or negative"),
        ("0 a 0.5 0.2 0.2", "not numbers"),
        ("0 nan 0.5 0.2 0.2", "NaN"),
        ("0 0.25 0.25 0.5 0.5", "duplicate of row 1"),
    ],
)
def test_bad_rows_are_reported(tmp_path: Path, row: str, problem: str) -> None:
    roboflow(tmp_path)
    img(tmp_path / "train" / "images" / "a.png")
    txt(tmp_path / "train" / "labels" / "a.txt", f"0 0.25 0.25 0.5 0.5\n{row}\n")
    r = load_yolo(tmp_path)
    (rec,) = r.records
    assert len(rec.boxes) == 1
    assert len(rec.problems) == 1 and problem in rec.problems[0] and rec.problems[0].startswith("row 2")


def test_polygon_rows_become_boxes(tmp_path: Path) -> None:
    roboflow(tmp_path)
    img(tmp_path / "train" / "images" / "a.png")
    txt(tmp_path / "train" / "labels" / "a.txt", "0 0.25 0.25 0.75 0.25 0.5 0.75\n")
    b = load_yolo(tmp_path).records[0].boxes[0]
    assert (b.x1, b.y1, b.x2, b.y2) == (4, 4, 12, 12)


def test_all_rows_bad_is_skipped_not_background(tmp_path: Path) -> None:
    roboflow(tmp_path)
    img(tmp_path / "train" / "images" / "a.png")
    txt(tmp_path / "train" / "labels" / "a.txt", "0 1.5 0.5 0.2 0.2\n7 0.5 0.5 0.1 0.1\n")
    r = load_yolo(tmp_path)
    assert not r.records and "all 2 label rows invalid" in r.skipped[0].reason


def test_missing_label_is_background_with_problem_and_orphan_label_skipped(tmp_path: Path) -> None:
    roboflow(tmp_path)
    img(tmp_path / "train" / "images" / "a.png")
    txt(tmp_path / "train" / "labels" / "ghost.txt", "0 0.5 0.5 0.1 0.1\n")
    r = load_yolo(tmp_path)
    (rec,) = r.records
    assert rec.boxes == [] and rec.problems == ["no label file: taken as background"]
    (sk,) = r.skipped
    assert sk.source.endswith("ghost.txt") and sk.reason == "label file without image"
    assert any("1 images have no label file" in n for n in r.notes)


def test_images_labels_layout_names_dict_and_yaml_split_dirs(tmp_path: Path) -> None:
    # GRAZPEDWRI-like: path from another machine, train -> images/train_aug
    txt(
        tmp_path / "meta.yaml",
        "path: 'E:/somewhere/data'\ntrain: 'images/train_aug'\nval: 'images/valid'\nnames:\n  0: text\n  3: fracture\n",
    )
    img(tmp_path / "images" / "train_aug" / "a.png")
    txt(tmp_path / "labels" / "train_aug" / "a.txt", "3 0.5 0.5 0.5 0.5\n")
    img(tmp_path / "images" / "valid" / "b.png")
    txt(tmp_path / "labels" / "valid" / "b.txt", "0 0.5 0.5 0.5 0.5\n")
    r = load_yolo(tmp_path)
    assert r.class_names == ["text", "class_1", "class_2", "fracture"]
    by = {x.source.name: x for x in r.records}
    assert (by["a.png"].split, by["a.png"].label) == ("train", "fracture")
    assert (by["b.png"].split, by["b.png"].label) == ("val", "no_fracture")


def test_yaml_split_escaping_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (tmp_path / "elsewhere").mkdir()
    txt(root / "data.yaml", "train: ../../elsewhere\nnames: [fracture]\n")
    img(root / "images" / "a.png")
    txt(root / "labels" / "a.txt", "0 0.5 0.5 0.5 0.5\n")
    r = load_yolo(root)
    assert any("escapes the dataset root; refused" in n for n in r.notes)
    assert r.records[0].split is None


def test_names_from_classes_txt_or_class_ids(tmp_path: Path) -> None:
    img(tmp_path / "a" / "images" / "x.png")
    txt(tmp_path / "a" / "labels" / "x.txt", "0 0.5 0.5 0.5 0.5\n")
    txt(tmp_path / "a" / "labels" / "classes.txt", "fractured\r\n")
    r = load_yolo(tmp_path / "a")
    assert r.class_names == ["fracture"] and not r.skipped  # classes.txt is not an orphan label
    img(tmp_path / "b" / "x.png")
    txt(tmp_path / "b" / "x.txt", "2 0.5 0.5 0.5 0.5\n")  # label beside the image, no names anywhere
    r = load_yolo(tmp_path / "b")
    assert r.class_names == ["class_0", "class_1", "class_2"]
    assert r.records[0].boxes[0].label == "class_2"
    assert any("--map class_0=fracture" in n for n in r.notes)
    r = load_yolo(tmp_path / "b", mapping={"class_2": "fracture"})
    assert r.records[0].boxes[0].label == "fracture"


def test_unreadable_label_file_is_skipped(tmp_path: Path) -> None:
    roboflow(tmp_path)
    img(tmp_path / "train" / "images" / "a.png")
    (tmp_path / "train" / "labels").mkdir(parents=True)
    (tmp_path / "train" / "labels" / "a.txt").write_bytes(b"\xff\xfe\x00garbage\x80")
    r = load_yolo(tmp_path)
    assert not r.records and "unreadable label file" in r.skipped[0].reason


def test_save_yolo_round_trip(tmp_path: Path) -> None:
    roboflow(tmp_path)
    img(tmp_path / "train" / "images" / "a.png", 20, 10)
    txt(tmp_path / "train" / "labels" / "a.txt", "1 0.5 0.5 0.5 0.4\n")
    first = load_yolo(tmp_path)
    save_yolo(first.records, first.class_names, tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_text() == "1 0.500000 0.500000 0.500000 0.400000\n"
