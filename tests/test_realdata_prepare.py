"""prepare on the real datasets in ../shared/data (skipped when absent): counts, layout, leak-freeness."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import shared_data

from fracturekit.core.layout import NEGATIVE_CLASS, POSITIVE_CLASS, SPLITS
from fracturekit.prepare import prepare

pytestmark = pytest.mark.realdata


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # ~35-60 s on 2 cores: 4,083 films decoded, hashed and written
def test_fracatlas_resplit(tmp_path: Path) -> None:
    src = shared_data("fracatlas")
    res = prepare(src, tmp_path / "fa", seed=0)
    s = res.summary
    assert (s["images_in"], s["ok"], s["skipped"]) == (4083, 4083, 0)
    assert sum(s["boxes_per_split"].values()) == 922 and s["det_images"] == 4083 and s["det_classes"] == ["fracture"]
    total = Counter()
    for split in SPLITS:
        total.update(s["per_split"][split])
        assert s["per_split"][split][POSITIVE_CLASS] > 50 and s["per_split"][split][NEGATIVE_CLASS] > 300
    assert total == {POSITIVE_CLASS: 717, NEGATIVE_CLASS: 3366}
    assert res.audit is not None and res.audit.leaks == 0 and len(res.audit.clusters) > 0
    rows = _rows(tmp_path / "fa")
    assert len(rows) == 4083 and {"region", "view"} <= set(rows[0])
    labels = list((tmp_path / "fa" / "det" / "labels").rglob("*.txt"))
    assert len(labels) == 4083 and sum(len(p.read_text().splitlines()) for p in labels) == 922
    assert "path" not in yaml.safe_load((tmp_path / "fa" / "det" / "data.yaml").read_text())
    for split in SPLITS:
        n_images = len(list((tmp_path / "fa" / "det" / "images" / split).iterdir()))
        assert n_images == sum(s["per_split"][split].values())


@pytest.mark.slow  # same cost as above
def test_fracatlas_keep_splits(tmp_path: Path) -> None:
    src = shared_data("fracatlas")
    prepare(src, tmp_path / "fa", keep_splits=True, audit=False)
    authors = {}
    for split, name in (("train", "train"), ("val", "valid"), ("test", "test")):
        with (src / "splits" / f"{name}.csv").open() as f:
            authors.update({line.strip(): split for line in f.readlines()[1:] if line.strip()})
    rows = _rows(tmp_path / "fa")
    fractured = {Path(r["source"]).name: r["split"] for r in rows if r["label"] == POSITIVE_CLASS}
    assert len(fractured) == 717 and all(fractured[name] == split for name, split in authors.items())
    assert {r["split"] for r in rows if r["label"] == NEGATIVE_CLASS} == set(SPLITS)  # unlisted films re-split


def test_wrist_coco(tmp_path: Path) -> None:
    src = shared_data("wrist-coco")
    expected_boxes = sum(len(json.loads(p.read_text())["annotations"]) for p in src.glob("*/_annotations.coco.json"))
    listed = {
        split: len(json.loads((src / folder / "_annotations.coco.json").read_text())["images"])
        for split, folder in (("train", "train"), ("val", "valid"), ("test", "test"))
    }
    on_disk = sum(1 for p in src.rglob("*.jpg"))
    res = prepare(src, tmp_path / "wc", keep_splits=True)
    s = res.summary
    assert s["images_in"] == on_disk and s["ok"] == sum(listed.values()) and s["skipped"] == on_disk - s["ok"]
    assert all("not listed" in reason for reason in s["skipped_reasons"])
    assert sum(s["boxes_per_split"].values()) == expected_boxes
    assert sorted(s["det_classes"]) == ["Radius", "Scaphoid", "Ulna"]
    assert {k: sum(v.values()) for k, v in s["per_split"].items()} == listed
    data = yaml.safe_load((tmp_path / "wc" / "det" / "data.yaml").read_text())
    assert sorted(data["names"].values()) == ["Radius", "Scaphoid", "Ulna"]


@pytest.mark.parametrize(
    "level",
    [
        "holder",  # the folder holding GRAZPEDWRI-DX/ (as the archive unzips): dataset.csv is one level down
        "dataset",  # GRAZPEDWRI-DX/ itself
    ],
)
def test_grazpedwri_preset_groups_patients_from_either_level(tmp_path: Path, level: str) -> None:
    holder = shared_data("grazpedwri-sample")
    src = holder if level == "holder" else holder / "GRAZPEDWRI-DX"
    g = prepare(src, tmp_path / "g", preset="grazpedwri-dx").summary["grouping"]
    # 4 originals joined by stem to dataset.csv (patients 1, 4, 20); the aug_ copy has no row but is a duplicate
    assert g["sources"]["meta_csv"] == 4 and g["sources"]["duplicate_cluster"] == 1 and g["sources"]["none"] == 0
    assert g["groups"] == 3 and g["meta_csv"].endswith("dataset.csv")
