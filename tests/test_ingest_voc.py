"""Pascal VOC reader: table tests on tiny files written here."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fracturekit.core.errors import UserError
from fracturekit.ingest.voc import load_voc


def img(path: Path, w: int = 16, h: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w), 100, np.uint8))
    return path


def voc(path: Path, filename: str, objects: list[tuple], w: int = 16, h: int = 16) -> Path:
    objs = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
        f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for name, x1, y1, x2, y2 in objects
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><folder>x</folder><filename>{filename}</filename><path>C:\\\\labels\\\\{filename}</path>"
        f"<size><width>{w}</width><height>{h}</height><depth>1</depth></size>{objs}</annotation>"
    )
    return path


def test_voc_layout_and_backgrounds(tmp_path: Path) -> None:
    img(tmp_path / "JPEGImages" / "a.jpg")
    img(tmp_path / "JPEGImages" / "b.jpg")
    voc(tmp_path / "Annotations" / "a.xml", "a.jpg", [("fractured", 1, 2, 5, 6), ("fracture", 0, 0, 16, 16)])
    voc(tmp_path / "Annotations" / "b.xml", "b.jpg", [])
    r = load_voc(tmp_path)
    by = {x.source.name: x for x in r.records}
    assert r.class_names == ["fracture"] and not r.skipped
    assert [(b.x1, b.y1, b.x2, b.y2) for b in by["a.jpg"].boxes] == [(1, 2, 5, 6), (0, 0, 16, 16)]
    assert by["b.jpg"].boxes == []


def test_xml_beside_image_split_from_folder_and_missing_extension(tmp_path: Path) -> None:
    img(tmp_path / "train" / "a.png")
    img(tmp_path / "valid" / "b.png")
    voc(tmp_path / "train" / "a.xml", "a.png", [("Fracture", 1, 1, 4, 4)])
    voc(tmp_path / "valid" / "b.xml", "b", [])  # <filename> without extension
    r = load_voc(tmp_path)
    assert sorted((x.source.name, x.split) for x in r.records) == [("a.png", "train"), ("b.png", "val")]


@pytest.mark.parametrize(
    ("objects", "problem"),
    [
        ([("fracture", 10, 10, 40, 12)], "outside the 16x16 image"),
        ([("fracture", 5, 5, 3, 9)], "zero or negative"),
        ([("fracture", "a", 5, 3, 9)], "non-numeric"),
        ([("", 1, 1, 3, 3)], "no <name>"),
    ],
)
def test_bad_objects_go_to_problems(tmp_path: Path, objects: list, problem: str) -> None:
    img(tmp_path / "a.png")
    voc(tmp_path / "a.xml", "a.png", [("fracture", 1, 1, 4, 4), *objects])
    (rec,) = load_voc(tmp_path).records
    assert len(rec.boxes) == 1 and len(rec.problems) == 1 and problem in rec.problems[0]


def test_all_objects_bad_is_skipped(tmp_path: Path) -> None:
    img(tmp_path / "a.png")
    voc(tmp_path / "a.xml", "a.png", [("fracture", 30, 30, 40, 40)])
    r = load_voc(tmp_path)
    assert not r.records and "all 1 objects invalid" in r.skipped[0].reason


@pytest.mark.parametrize(
    ("filename", "reason"),
    [("missing.png", "image file not found"), ("../outside.png", "escapes the dataset root")],
)
def test_unusable_filenames_are_skipped(tmp_path: Path, filename: str, reason: str) -> None:
    root = tmp_path / "ds"
    img(tmp_path / "outside.png")
    img(root / "ok.png")
    voc(root / "ok.xml", "ok.png", [])
    voc(root / "bad.xml", filename, [("fracture", 1, 1, 3, 3)])
    r = load_voc(root)
    assert [x.source.name for x in r.records] == ["ok.png"]
    assert len(r.skipped) == 1 and reason in r.skipped[0].reason and "1 objects lost" in r.skipped[0].reason


def test_corrupt_and_foreign_xml_are_skipped(tmp_path: Path) -> None:
    img(tmp_path / "a.png")
    voc(tmp_path / "a.xml", "a.png", [])
    (tmp_path / "broken.xml").write_text("<annotation><filename>a.png</filen")
    (tmp_path / "other.xml").write_text("<config><x>1</x></config>")
    r = load_voc(tmp_path)
    assert len(r.records) == 1
    assert sorted(s.reason.split(" (")[0] for s in r.skipped) == ["not a VOC annotation", "unreadable XML"]


def test_only_corrupt_xml_is_a_user_error(tmp_path: Path) -> None:
    img(tmp_path / "a.png")
    (tmp_path / "a.xml").write_text("<annotation")
    with pytest.raises(UserError, match="could be read"):
        load_voc(tmp_path)
    empty = tmp_path / "empty"
    img(empty / "b.png")
    with pytest.raises(UserError, match="no Pascal VOC"):
        load_voc(empty)


def test_image_without_xml_and_two_xml_for_one_image(tmp_path: Path) -> None:
    img(tmp_path / "a.png")
    img(tmp_path / "lonely.png")
    voc(tmp_path / "a.xml", "a.png", [])
    voc(tmp_path / "a_copy.xml", "a.png", [("fracture", 1, 1, 3, 3)])
    r = load_voc(tmp_path)
    assert len(r.records) == 1
    reasons = sorted(s.reason for s in r.skipped)
    assert reasons[0] == "no VOC annotation names this image" and reasons[1].startswith("same image already")
    assert len(r.records) + len(r.skipped) == 3  # 2 images + 1 extra annotation, all accounted
