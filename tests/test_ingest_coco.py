"""COCO reader: table tests on tiny files written here (16x16 images)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fracturekit.core.errors import UserError
from fracturekit.ingest.coco import load_coco, save_coco


def img(path: Path, w: int = 16, h: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w), 128, np.uint8))
    return path


def coco(path: Path, images: list[dict], annotations: list[dict], categories: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def im(i: int, name: str, w: int = 16, h: int = 16) -> dict:
    return {"id": i, "file_name": name, "width": w, "height": h}


def ann(i: int, image_id: int, bbox: list, cat: int = 1) -> dict:
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "segmentation": [[1, 1, 2, 2, 3, 1]]}


def accounted(result) -> int:
    return len(result.records) + len(result.skipped)


def test_basic_boxes_backgrounds_and_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    img(root / "images" / "a.png")
    img(root / "images" / "b.png")
    img(root / "images" / "sub" / "c.png")
    coco(
        root / "annotations.json",
        [im(1, "images/a.png"), im(2, "b.png"), im(3, "images/sub/c.png")],
        [ann(1, 1, [2, 3, 4, 5]), ann(2, 3, [0, 0, 16, 16])],
        [{"id": 1, "name": "Fractured"}],
    )
    r = load_coco(root)
    assert r.class_names == ["fracture"]
    by = {p.source.name: p for p in r.records}
    assert set(by) == {"a.png", "b.png", "c.png"} and not r.skipped
    a = by["a.png"].boxes[0]
    assert (a.label, a.x1, a.y1, a.x2, a.y2) == ("fracture", 2, 3, 6, 8)
    assert by["b.png"].boxes == []  # no annotation: background
    assert by["c.png"].boxes[0].x2 == 16
    assert all(rec.source.is_absolute() and rec.label is None for rec in r.records)


@pytest.mark.parametrize(
    ("cats", "cat_of_ann", "names"),
    [
        ([{"id": 0, "name": "fracture"}], 0, ["fracture"]),  # 0-based ids
        ([{"id": 7, "name": "normal"}, {"id": 42, "name": "broken"}], 42, ["no_fracture", "fracture"]),  # sparse
        ([{"id": 3, "name": "Radius"}], 3, ["Radius"]),  # multi-class names kept
    ],
)
def test_categories_by_name_not_id(tmp_path: Path, cats: list, cat_of_ann: int, names: list) -> None:
    img(tmp_path / "a.png")
    coco(tmp_path / "c.json", [im(5, "a.png")], [ann(1, 5, [1, 1, 4, 4], cat_of_ann)], cats)
    r = load_coco(tmp_path)
    assert r.class_names == names
    want = {c["id"]: c["name"] for c in cats}[cat_of_ann]
    from fracturekit.ingest.labels import canonical_label

    assert r.records[0].boxes[0].label == canonical_label(want)


def test_mapping_overrides_synonyms(tmp_path: Path) -> None:
    img(tmp_path / "a.png")
    coco(tmp_path / "c.json", [im(1, "a.png")], [ann(1, 1, [1, 1, 4, 4], 2)], [{"id": 2, "name": "Bone Break"}])
    r = load_coco(tmp_path, mapping={"bone break": "fracture"})
    assert r.class_names == ["fracture"] and r.records[0].boxes[0].label == "fracture"


@pytest.mark.parametrize(
    ("bbox", "problem"),
    [
        ([10, 10, 20, 3], "outside the 16x16 image"),
        ([-8, 2, 4, 4], "outside"),
        ([2, 2, 0, 5], "zero or negative"),
        ([2, 2, -3, 5], "zero or negative"),
        (["a", 2, 3, 4], "non-numeric"),
        ([1, 2, 3], "not [x, y, w, h]"),
        (None, "not [x, y, w, h]"),
    ],
)
def test_bad_bbox_goes_to_problems(tmp_path: Path, bbox: object, problem: str) -> None:
    img(tmp_path / "a.png")
    coco(tmp_path / "c.json", [im(1, "a.png")], [ann(1, 1, [1, 1, 3, 3]), ann(2, 1, bbox)], [{"id": 1, "name": "f"}])
    r = load_coco(tmp_path)
    (rec,) = r.records
    assert len(rec.boxes) == 1
    assert len(rec.problems) == 1 and problem in rec.problems[0] and rec.problems[0].startswith("annotation 2")


def test_small_overshoot_is_clipped(tmp_path: Path) -> None:
    img(tmp_path / "a.png")
    coco(tmp_path / "c.json", [im(1, "a.png")], [ann(1, 1, [-1, 10, 8, 7.5])], [{"id": 1, "name": "f"}])
    b = load_coco(tmp_path).records[0].boxes[0]
    assert (b.x1, b.y1, b.x2, b.y2) == (0, 10, 7, 16)


def test_all_annotations_invalid_is_skipped_not_background(tmp_path: Path) -> None:
    img(tmp_path / "a.png")
    coco(tmp_path / "c.json", [im(1, "a.png")], [ann(1, 1, [50, 50, 5, 5])], [{"id": 1, "name": "f"}])
    r = load_coco(tmp_path)
    assert not r.records
    assert len(r.skipped) == 1 and "all 1 annotations invalid" in r.skipped[0].reason


def test_unknown_category_and_unknown_image_id(tmp_path: Path) -> None:
    img(tmp_path / "a.png")
    coco(
        tmp_path / "c.json",
        [im(1, "a.png")],
        [ann(1, 1, [1, 1, 3, 3]), ann(2, 1, [1, 1, 3, 3], cat=9), ann(3, 99, [1, 1, 3, 3])],
        [{"id": 1, "name": "f"}],
    )
    r = load_coco(tmp_path)
    assert "unknown category_id 9" in r.records[0].problems[0]
    assert [s.reason for s in r.skipped] == ["annotation for unknown image_id 99"]


@pytest.mark.parametrize(
    ("file_name", "reason"),
    [
        ("missing.png", "image file not found"),
        ("../outside.png", "escapes the dataset root"),
        ("images/../../outside.png", "escapes the dataset root"),
        ("", "empty file_name"),
    ],
)
def test_unusable_file_names_are_skipped(tmp_path: Path, file_name: str, reason: str) -> None:
    root = tmp_path / "ds"
    img(root / "ok.png")
    img(tmp_path / "outside.png")
    coco(root / "c.json", [im(1, "ok.png"), im(2, file_name)], [ann(1, 2, [1, 1, 2, 2])], [{"id": 1, "name": "f"}])
    r = load_coco(root)
    assert [p.source.name for p in r.records] == ["ok.png"]
    assert len(r.skipped) == 1 and reason in r.skipped[0].reason
    if file_name:
        assert "1 annotations lost" in r.skipped[0].reason


def test_absolute_file_name_outside_root_refused(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    outside = img(tmp_path / "elsewhere" / "x.png")
    img(root / "ok.png")
    coco(root / "c.json", [im(1, "ok.png"), im(2, str(outside))], [], [{"id": 1, "name": "f"}])
    r = load_coco(root)
    assert len(r.records) == 1 and "escapes" in r.skipped[0].reason


def test_roboflow_per_split_export(tmp_path: Path) -> None:
    cats = [
        {"id": 0, "name": "bones", "supercategory": "none"},
        {"id": 1, "name": "Radius", "supercategory": "bones"},
        {"id": 2, "name": "Ulna", "supercategory": "bones"},
    ]
    for split, n in (("train", 3), ("valid", 2), ("test", 1)):
        names = [f"{split}_{i}.jpg" for i in range(n)]
        for name in names:
            img(tmp_path / split / name)
        coco(
            tmp_path / split / "_annotations.coco.json",
            [im(i, name) for i, name in enumerate(names)],
            [ann(0, 0, [1, 1, 5, 5], cat=1 if split != "test" else 2)],
            cats,
        )
    img(tmp_path / "train" / "valid_0.jpg")  # a copy of a valid image not listed in train's JSON
    r = load_coco(tmp_path)
    assert r.class_names == ["Radius", "Ulna"]
    assert any("'bones'" in n and "dropped" in n for n in r.notes)
    assert sorted((x.split, len(x.boxes)) for x in r.records) == [
        ("test", 1),
        ("train", 0),
        ("train", 0),
        ("train", 1),
        ("val", 0),
        ("val", 1),
    ]
    (unlisted,) = r.skipped
    assert "not listed" in unlisted.reason and "valid/_annotations.coco.json" in unlisted.reason
    assert accounted(r) == 7  # 7 image files, 6 listed


def test_empty_category_that_is_not_a_supercategory_stays(tmp_path: Path) -> None:
    img(tmp_path / "a.png")
    cats = [{"id": 0, "name": "fracture"}, {"id": 1, "name": "hardware"}]
    coco(tmp_path / "c.json", [im(1, "a.png")], [ann(1, 1, [1, 1, 3, 3], cat=0)], cats)
    assert load_coco(tmp_path).class_names == ["fracture", "hardware"]


def test_corrupt_json_among_several_is_skipped_and_reported(tmp_path: Path) -> None:
    img(tmp_path / "train" / "a.png")
    img(tmp_path / "valid" / "b.png")
    coco(tmp_path / "train" / "_annotations.coco.json", [im(1, "a.png")], [], [{"id": 1, "name": "f"}])
    (tmp_path / "valid" / "_annotations.coco.json").write_text('{"images": [')
    r = load_coco(tmp_path)
    assert [x.source.name for x in r.records] == ["a.png"]
    reasons = sorted(s.reason for s in r.skipped)
    assert reasons[0].startswith("image not listed") and reasons[1].startswith("unreadable JSON")
    assert any("unreadable JSON" in n for n in r.notes)


@pytest.mark.parametrize("content", ['{"images": [', "[1, 2]", '{"foo": 1}'])
def test_wholly_unreadable_annotation_file_is_a_user_error(tmp_path: Path, content: str) -> None:
    img(tmp_path / "a.png")
    (tmp_path / "c.json").write_text(content)
    with pytest.raises(UserError, match="c.json|COCO"):
        load_coco(tmp_path / "c.json")


def test_no_json_and_missing_path_are_user_errors(tmp_path: Path) -> None:
    img(tmp_path / "a.png")
    with pytest.raises(UserError, match="no COCO JSON"):
        load_coco(tmp_path)
    with pytest.raises(UserError, match="no such"):
        load_coco(tmp_path / "nope")


def test_single_json_file_and_list_of_files(tmp_path: Path) -> None:
    img(tmp_path / "a" / "x.png")
    img(tmp_path / "b" / "y.png")
    ja = coco(tmp_path / "a" / "train.json", [im(1, "x.png")], [], [{"id": 1, "name": "f"}])
    jb = coco(tmp_path / "b" / "val.json", [im(1, "y.png")], [], [{"id": 1, "name": "f"}])
    assert [r.split for r in load_coco(ja).records] == ["train"]
    r = load_coco([ja, jb])
    assert sorted(x.split for x in r.records) == ["train", "val"] and not r.skipped


def test_image_listed_twice_is_skipped_once(tmp_path: Path) -> None:
    img(tmp_path / "a.png")
    coco(tmp_path / "c.json", [im(1, "a.png"), im(2, "a.png")], [], [{"id": 1, "name": "f"}])
    r = load_coco(tmp_path)
    assert len(r.records) == 1 and "already listed" in r.skipped[0].reason


def test_exif_rotated_image_boxes_mapped_to_stored_pixels(tmp_path: Path) -> None:
    # stored 20 wide x 10 high, EXIF 6 (rotate 90 CW to display): shown 10 wide x 20 high
    pil = Image.fromarray(np.zeros((10, 20), np.uint8))
    exif = pil.getexif()
    exif[0x0112] = 6
    pil.save(tmp_path / "r.jpg", exif=exif.tobytes())
    coco(tmp_path / "c.json", [im(1, "r.jpg", 10, 20)], [ann(1, 1, [1, 2, 3, 4])], [{"id": 1, "name": "f"}])
    rec = load_coco(tmp_path).records[0]
    b = rec.boxes[0]
    # displayed (x, y) -> stored (y, H - x) with H = 10
    assert (b.x1, b.y1, b.x2, b.y2) == (2, 6, 6, 9)
    assert rec.meta["exif_orientation"] == "6"


def test_declared_size_differs_from_file_scales_boxes(tmp_path: Path) -> None:
    img(tmp_path / "a.png", 16, 16)
    coco(tmp_path / "c.json", [im(1, "a.png", 32, 32)], [ann(1, 1, [8, 8, 8, 8])], [{"id": 1, "name": "f"}])
    rec = load_coco(tmp_path).records[0]
    assert (rec.boxes[0].x1, rec.boxes[0].x2) == (4, 8) and "boxes scaled" in rec.problems[0]


def test_save_coco_round_trip(tmp_path: Path) -> None:
    img(tmp_path / "a.png")
    img(tmp_path / "b.png")
    coco(tmp_path / "c.json", [im(1, "a.png"), im(2, "b.png")], [ann(1, 1, [1, 2, 3, 4])], [{"id": 0, "name": "f"}])
    first = load_coco(tmp_path / "c.json")
    out = save_coco(first.records, first.class_names, tmp_path / "out.json", root=tmp_path)
    again = load_coco(out)
    assert [(r.source, r.boxes) for r in again.records] == [(r.source, r.boxes) for r in first.records]
