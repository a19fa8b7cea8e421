"""Class-folder reader: the common Kaggle layouts, synonyms, names with spaces, bad placements."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fracturekit.core.errors import UserError
from fracturekit.ingest.folders import folder_label, load_folders


def img(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((16, 16), 70, np.uint8))
    return path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # flat <class>/
        (["fractured/a.png", "normal/b.png"], {("a.png", "fracture", None), ("b.png", "no_fracture", None)}),
        # <split>/<class>/, names with spaces, valid -> val
        (
            ["train/fractured/a.png", "valid/not fractured/b.png", "test/Not Fractured/c.jpg"],
            {("a.png", "fracture", "train"), ("b.png", "no_fracture", "val"), ("c.jpg", "no_fracture", "test")},
        ),
        # nested one (and two) levels deeper
        (
            [
                "Bone_Fracture/Bone_Fracture/train/fractured/a.png",
                "Bone_Fracture/Bone_Fracture/val/not_fractured/b.png",
            ],
            {("a.png", "fracture", "train"), ("b.png", "no_fracture", "val")},
        ),
        # <class>/<split>/
        (
            ["positive/train/a.png", "negative/test/b.png"],
            {("a.png", "fracture", "train"), ("b.png", "no_fracture", "test")},
        ),
        # MURA-like study folders, class words inside the name
        (
            [
                "MURA/train/XR_WRIST/patient001/study1_positive/image1.png",
                "MURA/valid/XR_HAND/patient002/study1_negative/image1.png",
            ],
            {("image1.png", "fracture", "train"), ("image1.png", "no_fracture", "val")},
        ),
        # synonyms: 1/0, yes/no, Non_fractured
        (
            ["1/a.png", "0/b.png", "Non_fractured/c.png"],
            {("a.png", "fracture", None), ("b.png", "no_fracture", None), ("c.png", "no_fracture", None)},
        ),
        # multi-class folder names are kept as they are
        (["Hand/a.png", "Hip/b.png"], {("a.png", "Hand", None), ("b.png", "Hip", None)}),
        # numbered folders: a binary 0/1 set, and a 5-grade scale whose 0 and 1 are grades, not fracture
        (["train/0/a.png", "test/1/b.png"], {("a.png", "no_fracture", "train"), ("b.png", "fracture", "test")}),
        (
            ["0/a.png", "1/b.png", "2/c.png", "3/d.png", "4/e.png"],
            {
                ("a.png", "0", None),
                ("b.png", "1", None),
                ("c.png", "2", None),
                ("d.png", "3", None),
                ("e.png", "4", None),
            },
        ),
    ],
)
def test_layouts(tmp_path: Path, files: list[str], expected: set) -> None:
    for f in files:
        img(tmp_path / f)
    r = load_folders(tmp_path)
    assert {(x.source.name, x.label, x.split) for x in r.records} == expected
    assert all(x.boxes is None and x.source.is_absolute() for x in r.records)
    assert not r.skipped


def test_numbered_classes_say_so(tmp_path: Path) -> None:
    for grade in "01234":
        img(tmp_path / grade / "a.png")
    assert load_folders(tmp_path).notes[0] == (
        "class folders 0, 1, 2, 3, 4: 5 classes, so 0 and 1 stay class names "
        "(no_fracture/fracture only when 0 and 1 are the only two classes; --map 1=fracture to choose)"
    )
    # --map still decides: 1 named fracture, the other grades kept
    mapped = load_folders(tmp_path, mapping={"1": "fracture"})
    assert sorted(r.label for r in mapped.records) == ["0", "2", "3", "4", "fracture"]


def test_mapping_overrides_and_notes(tmp_path: Path) -> None:
    img(tmp_path / "broken bones" / "a.png")
    img(tmp_path / "ok" / "b.png")
    r = load_folders(tmp_path, mapping={"Broken Bones": "fracture", "ok": "no_fracture"})
    assert sorted(x.label for x in r.records) == ["fracture", "no_fracture"]
    assert any(n.startswith("class fracture: 1 images") for n in r.notes)


def test_images_without_class_folder_are_skipped_and_junk_ignored(tmp_path: Path) -> None:
    img(tmp_path / "root.png")
    img(tmp_path / "train" / "loose.png")
    img(tmp_path / "train" / "fractured" / "a.png")
    img(tmp_path / "__MACOSX" / "fractured" / "._a.png")
    img(tmp_path / ".cache" / "fractured" / "z.png")
    (tmp_path / "train" / "fractured" / "notes.txt").write_text("not an image")
    r = load_folders(tmp_path)
    assert [x.source.name for x in r.records] == ["a.png"]
    reasons = sorted(s.reason for s in r.skipped)
    assert reasons == [
        "image directly in split folder train/: no class folder",
        "image directly in the dataset root: no class folder",
    ]


def test_no_images_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no image files"):
        load_folders(tmp_path)
    with pytest.raises(UserError, match="no such folder"):
        load_folders(tmp_path / "nope")


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("study3_positive", "fracture"),
        ("fracture_and_normal", "fracture_and_normal"),
        ("class_1", "class_1"),
        ("Fractures", "fracture"),
        ("Hip fracture", "fracture"),
    ],
)
def test_folder_label_words(name: str, label: str) -> None:
    assert folder_label(name) == label
