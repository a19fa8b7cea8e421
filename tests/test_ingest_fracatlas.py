"""FracAtlas reader: a tiny copy of the published layout made here, and the real dataset when present.

The real-data test checks the counts of the published dataset and that its COCO, VOC and YOLO
annotations give the same boxes: COCO vs YOLO within 1 px (measured: 0.07 px); VOC is integer-truncated
in the published files (xmax = floor(x) + floor(w)): 903 of 922 boxes within 1 px, the other 19 within
1.02 px, so the VOC check allows 1.05 px.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import shared_data

from fracturekit.core.errors import UserError
from fracturekit.ingest.fracatlas import load_fracatlas, read_dataset_csv
from fracturekit.ingest.source import load_source

CSV_HEADER = (
    "image_id,hand,leg,hip,shoulder,mixed,hardware,multiscan,fractured,fracture_count,frontal,lateral,oblique\n"
)


def make_fracatlas(root: Path) -> Path:
    """3 fractured (one without COCO entry) + 2 non-fractured 40x20 images, all three annotation formats."""
    for sub, names in (("Fractured", ["F1", "F2", "F3"]), ("Non_fractured", ["N1", "N2"])):
        for n in names:
            (root / "images" / sub).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "images" / sub / f"{n}.jpg"), np.full((20, 40), 50, np.uint8))
    boxes = {"F1": [(4.2, 2.6, 10.4, 8.2)], "F2": [(1.0, 1.0, 5.0, 5.0), (20.5, 10.5, 6.0, 4.0)], "F3": []}
    ann = root / "Annotations"
    images, anns = [], []
    for i, (n, bs) in enumerate(boxes.items(), start=1):
        if n == "F3":
            continue  # defect: a fractured image missing from the COCO file
        images.append({"id": i, "file_name": f"{n}.jpg", "width": 40, "height": 20})
        anns += [{"id": len(anns), "image_id": i, "category_id": 0, "bbox": list(b), "segmentation": []} for b in bs]
    (ann / "COCO JSON").mkdir(parents=True)
    (ann / "COCO JSON" / "COCO_fracture_masks.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 0, "name": "fractured"}]})
    )
    (ann / "PASCAL VOC").mkdir()
    (ann / "YOLO").mkdir()
    (ann / "YOLO" / "labels.txt").write_text("fractured\r\n")
    for n in ["F1", "F2", "F3", "N1", "N2"]:
        bs = boxes.get(n, [])
        objs = "".join(
            f"<object><name>fractured</name><bndbox><xmin>{int(x)}</xmin><ymin>{int(y)}</ymin>"
            f"<xmax>{int(x) + int(w)}</xmax><ymax>{int(y) + int(h)}</ymax></bndbox></object>"
            for x, y, w, h in bs
        )
        (ann / "PASCAL VOC" / f"{n}.xml").write_text(
            f"<annotation><filename>{n}.jpg</filename><size><width>40</width><height>20</height></size>{objs}</annotation>"
        )
        (ann / "YOLO" / f"{n}.txt").write_text(
            "".join(f"0 {(x + w / 2) / 40:.4f} {(y + h / 2) / 20:.4f} {w / 40:.4f} {h / 20:.4f}\n" for x, y, w, h in bs)
        )
    (root / "dataset.csv").write_text(
        CSV_HEADER
        + "F1.jpg,1,0,0,0,0,0,0,1,1,1,0,0\n"
        + "F2.jpg,1,1,0,0,1,0,0,1,2,1,1,0\n"
        + "F3.jpg,0,0,1,0,0,1,0,0,1,0,0,1\n"
        + "N1.jpg,0,0,0,1,0,0,1,0,0,0,1,1\n"
        + "N2.jpg,0,1,0,0,0,0,0,0,0,1,0,0\n"
    )
    (root / "splits").mkdir()
    (root / "splits" / "train.csv").write_text("image_id\nF1.jpg\nF3.jpg\n")
    (root / "splits" / "valid.csv").write_text("image_id\nF2.jpg\n")
    (root / "splits" / "test.csv").write_text("image_id\n")
    return root


@pytest.mark.parametrize("annotations", ["coco", "voc", "yolo"])
def test_tiny_fracatlas(tmp_path: Path, annotations: str) -> None:
    root = make_fracatlas(tmp_path / "FracAtlas")
    r = load_source(tmp_path, fracatlas_annotations=annotations)  # the parent folder works too
    assert r.format == "fracatlas" and r.class_names == ["fracture"] and not r.skipped
    by = {x.source.stem: x for x in r.records}
    assert {k: (v.label, v.split) for k, v in by.items()} == {
        "F1": ("fracture", "train"),
        "F2": ("fracture", "val"),
        "F3": ("fracture", "train"),
        "N1": ("no_fracture", None),
        "N2": ("no_fracture", None),
    }
    assert by["N1"].boxes == [] and by["N2"].boxes == []
    assert by["F3"].boxes is None  # fractured without a box: classification only, never a background
    assert any("classification only" in p for p in by["F3"].problems)
    assert any("fractured=0" in p for p in by["F3"].problems)  # dataset.csv disagrees with the folder
    expected = {"F1": [(4.2, 2.6, 14.6, 10.8)], "F2": [(1, 1, 6, 6), (20.5, 10.5, 26.5, 14.5)]}
    for name, want in expected.items():
        got = [(b.x1, b.y1, b.x2, b.y2) for b in by[name].boxes]
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert max(abs(p - q) for p, q in zip(g, w, strict=True)) <= 1.0  # VOC files hold integers
    assert by["F2"].meta["region"] == "mixed" and by["F2"].meta["view"] == "frontal+lateral"
    assert by["N1"].meta["region"] == "shoulder" and by["N1"].meta["view"] == "lateral+oblique"
    assert by["F1"].meta["fracture_count"] == "1" and by["F1"].meta["hardware"] == "0"
    assert all(b.label == "fracture" for x in r.records for b in x.boxes or [])
    assert root.exists()


def test_fracatlas_unknown_annotation_format_and_wrong_folder(tmp_path: Path) -> None:
    root = make_fracatlas(tmp_path / "FracAtlas")
    with pytest.raises(UserError, match="coco\\|voc\\|yolo"):
        load_fracatlas(root, annotations="vgg")
    with pytest.raises(UserError, match="not FracAtlas"):
        load_fracatlas(tmp_path / "FracAtlas" / "images")


def test_fracatlas_missing_yolo_file_is_reported(tmp_path: Path) -> None:
    root = make_fracatlas(tmp_path / "FracAtlas")
    (root / "Annotations" / "YOLO" / "N2.txt").unlink()
    (root / "Annotations" / "YOLO" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    r = load_fracatlas(root, annotations="yolo")
    by = {x.source.stem: x for x in r.records}
    assert by["N2"].boxes == [] and "no yolo annotation for this image" in by["N2"].problems
    assert [s.reason for s in r.skipped] == ["YOLO label file without image"]


def test_read_dataset_csv_region_and_view(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text(CSV_HEADER + "a.jpg,0,0,0,0,0,0,0,0,0,0,0,0\nb.jpg,0,0,1,0,0,0,0,0,0,1,0,1\n")
    rows = read_dataset_csv(p)
    assert (rows["a.jpg"]["region"], rows["a.jpg"]["view"]) == ("", "")
    assert (rows["b.jpg"]["region"], rows["b.jpg"]["view"]) == ("hip", "frontal+oblique")


@pytest.mark.realdata
def test_real_fracatlas_three_formats_agree() -> None:
    root = shared_data("fracatlas")
    results = {a: load_fracatlas(root, annotations=a) for a in ("coco", "voc", "yolo")}
    boxes = {}
    for a, r in results.items():
        assert len(r.records) == 4083 and not r.skipped, a
        assert sum(x.label == "fracture" for x in r.records) == 717
        assert sum(len(x.boxes or []) for x in r.records) == 922
        assert sum(1 for x in r.records if x.label == "fracture" and x.boxes) == 717
        splits = [x.split for x in r.records if x.label == "fracture"]
        assert (splits.count("train"), splits.count("val"), splits.count("test")) == (574, 82, 61)
        assert all(x.split is None and x.boxes == [] for x in r.records if x.label == "no_fracture")
        # the one defect in dataset.csv, reported the same way whatever the format
        flagged = [x.source.name for x in r.records if any("fractured=0" in p for p in x.problems)]
        assert flagged == ["IMG0003298.jpg"]
        boxes[a] = {x.source.name: sorted((b.x1, b.y1, b.x2, b.y2) for b in x.boxes or []) for x in r.records}
    coco, voc, yolo = boxes["coco"], boxes["voc"], boxes["yolo"]
    assert coco.keys() == voc.keys() == yolo.keys()
    within_1 = 0
    n = 0
    for name in coco:
        assert len(coco[name]) == len(voc[name]) == len(yolo[name]), name
        for c, v, y in zip(coco[name], voc[name], yolo[name], strict=True):
            assert max(abs(p - q) for p, q in zip(c, y, strict=True)) <= 1.0, name
            d = max(abs(p - q) for p, q in zip(c, v, strict=True))
            assert d <= 1.05, name
            within_1 += d <= 1.0
            n += 1
    assert n == 922 and within_1 >= 900
    # the two EXIF-rotated fractured films: boxes mapped to the stored pixels (same in all formats)
    rotated = {
        x.source.name: x.meta["exif_orientation"] for x in results["coco"].records if "exif_orientation" in x.meta
    }
    assert len(rotated) == 25 and rotated["IMG0002628.jpg"] == "8" and rotated["IMG0002588.jpg"] == "3"
