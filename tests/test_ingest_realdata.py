"""Readers on the real Roboflow COCO export (wrist-coco) and the GRAZPEDWRI-DX sample (YOLO)."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import shared_data

from fracturekit.ingest.source import detect_format, load_source

pytestmark = pytest.mark.realdata


def test_wrist_coco_roboflow_export() -> None:
    root = shared_data("wrist-coco")
    assert detect_format(root) == "coco"
    r = load_source(root)
    assert r.class_names == ["Radius", "Scaphoid", "Ulna"]  # the empty supercategory is dropped
    assert any("xrayconverttojson_coco" in n and "dropped" in n for n in r.notes)
    assert Counter(x.split for x in r.records) == {"train": 63, "val": 18, "test": 9}
    assert sum(len(x.boxes) for x in r.records) == 71 + 15 + 7
    assert sum(1 for x in r.records if not x.boxes) == 31 + 9 + 5  # backgrounds
    assert Counter(b.label for x in r.records for b in x.boxes) == {"Radius": 66, "Ulna": 24, "Scaphoid": 3}
    assert all(not x.problems for x in r.records)
    # train/ holds 27 copies of the valid/test images that its JSON does not list: reported, not used
    assert len(r.skipped) == 27
    assert all("not listed" in s.reason and "a file of the same name is listed in" in s.reason for s in r.skipped)
    assert len(r.records) + len(r.skipped) == 117  # every image file accounted for


def test_grazpedwri_sample_yolo() -> None:
    root = shared_data("grazpedwri-sample")
    assert detect_format(root) == "yolo"
    r = load_source(root)
    assert r.class_names[3] == "fracture" and len(r.class_names) == 9 and r.class_names[-1] == "text"
    assert not r.skipped and len(r.records) == 5
    splits = {x.source.parent.name + "/" + x.source.name: x.split for x in r.records}
    assert splits["train_aug/aug_0001_1297860395_01_WRI-L1_M014.png"] == "train"  # meta.yaml: train = train_aug
    assert splits["valid/0004_0542630449_01_WRI-L1_M003.png"] == "val"
    assert splits["test/0020_0163123912_01_WRI-L1_M015.png"] == "test"
    # only `text` boxes on these films: not fractured (label from `fracture` boxes only)
    assert all(x.label == "no_fracture" and [b.label for b in x.boxes] == ["text"] for x in r.records)
    box = next(x for x in r.records if x.source.name.startswith("0004")).boxes[0]
    assert box.x1 == pytest.approx(26, abs=0.01) and box.y2 == pytest.approx(378, abs=0.01)
