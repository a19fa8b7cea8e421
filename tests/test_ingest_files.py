"""Reader helpers: EXIF orientation, splits, box validation, the file index and the one folder walker."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from fracturekit.data.imageio import ImageHeader
from fracturekit.ingest.files import FileIndex
from fracturekit.ingest.geometry import clip_box, display_to_stored
from fracturekit.ingest.labels import split_from_parts


@pytest.mark.parametrize("orientation", range(1, 9))
def test_display_to_stored_matches_pil_exif_transpose(orientation: int) -> None:
    w, h = 7, 5
    stored = np.zeros((h, w), np.uint8)
    stored[1, 4] = 255  # the stored pixel x=4, y=1
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    shown = np.asarray(ImageOps.exif_transpose(im))
    header = ImageHeader(w, h, orientation)
    assert shown.shape[::-1] == header.display_size
    ys, xs = np.nonzero(shown)
    x, y = int(xs[0]), int(ys[0])
    assert display_to_stored(x, y, x + 1, y + 1, header) == (4, 1, 5, 2)


@pytest.mark.parametrize(
    ("parts", "split"),
    [
        (["train"], "train"),
        (["valid"], "val"),
        (["dataset", "Validation", "fractured"], "val"),
        (["images", "test"], "test"),
        (["train_aug"], "train"),
        (["instances_val2017"], "val"),
        (["trainer"], None),
        (["fractured"], None),
        ([], None),
    ],
)
def test_split_from_parts(parts: list[str], split: str | None) -> None:
    assert split_from_parts(parts) == split


@pytest.mark.parametrize(
    ("box", "ok", "expect"),
    [
        ((2, 3, 10, 12), True, (2, 3, 10, 12)),
        ((-1.5, 0, 10, 16.5), True, (0, 0, 10, 16)),  # small overshoot clipped
        ((0, 0, 30, 10), False, "outside"),
        ((5, 5, 5, 9), False, "zero or negative"),
        ((15.5, 0, 17, 4), False, "less than 1 px"),
        ((float("nan"), 0, 3, 3), False, "non-numeric"),
    ],
)
def test_clip_box(box: tuple, ok: bool, expect: object) -> None:
    b, why = clip_box("fracture", *box, 16, 16)
    if ok:
        assert why is None and (b.x1, b.y1, b.x2, b.y2) == expect
    else:
        assert b is None and expect in why


def test_file_index_locate_refuses_escapes(tmp_path: Path) -> None:
    (tmp_path / "root" / "a").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "root" / "a" / "x.png"), np.zeros((16, 16), np.uint8))
    cv2.imwrite(str(tmp_path / "outside.png"), np.zeros((16, 16), np.uint8))
    index = FileIndex(tmp_path / "root")
    assert index.locate("a/x.png", [index.root])[0].endswith("x.png")
    assert index.locate("x.png", [index.root])[0].endswith("x.png")  # unique base name
    found, why = index.locate("../outside.png", [index.root])
    assert found is None and "escapes" in why
    found, why = index.locate(str(tmp_path / "outside.png"), [index.root])
    assert found is None and "escapes" in why
    assert index.locate("missing.png", [index.root])[1].startswith("image file not found")


# Each case: a path under the walked folder, and whether it is data (True) or junk the walker skips.
_TREE = [
    ("a.png", True),  # a plain film
    ("sub/deep/b.png", True),  # nested folders are walked
    ("notes.txt", True),  # not an image, but not junk either: the caller decides
    (".DS_Store", False),  # hidden file (macOS)
    ("._a.png", False),  # AppleDouble copy: hidden, looks like an image
    ("Thumbs.db", False),  # Windows thumbnail cache
    ("sub/desktop.ini", False),  # Windows folder settings
    ("__MACOSX/sub/c.png", False),  # archiver folder, even for a real-looking image
    (".git/d.png", False),  # hidden folder
    ("@eaDir/e.png", False),  # Synology index folder
]


def test_one_walker_skips_the_same_junk_for_readers_and_predict(tmp_path: Path) -> None:
    from fracturekit.ingest.files import junk_reason, walk_files
    from fracturekit.predict import list_sources

    root = tmp_path / ".hidden-parent" / "films"  # a hidden folder ABOVE the walked one does not count
    for rel, _ in _TREE:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".png"):
            cv2.imwrite(str(root / rel), np.zeros((16, 16), np.uint8))
        else:
            (root / rel).touch()
    data = sorted(str(root / rel) for rel, keep in _TREE if keep)
    assert sorted(walk_files(root)) == data
    assert sorted(FileIndex(root).files) == sorted(os.path.realpath(p) for p in data)
    assert list_sources(root) == sorted(Path(p) for p in data if p.endswith(".png"))
    assert [rel for rel, _ in _TREE if junk_reason(rel.split("/"))] == [rel for rel, keep in _TREE if not keep]
