"""Known-dataset presets: every YAML under datasets/ loads and is complete; bad ones are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from fracturekit.core.errors import UserError
from fracturekit.data.presets import PRESETS_DIR, list_presets, load_preset

EXPECTED = {
    "fracatlas",
    "grazpedwri-dx",
    "mura",
    "kaggle-bone-fracture-dataset",
    "kaggle-fracture-multi-region-x-ray-data",
    "roboflow-bone-fracture",
}


def test_presets_are_found_in_the_repo_datasets_folder() -> None:
    assert PRESETS_DIR.name == "datasets" and (PRESETS_DIR.parent / "pyproject.toml").is_file()
    assert set(list_presets()) >= EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_preset_is_complete(name: str) -> None:
    p = load_preset(name)
    assert p.name == name and p.path == PRESETS_DIR / f"{name}.yaml"
    for field in ("url", "license", "citation", "layout"):
        assert getattr(p, field).strip(), field
    assert p.url.startswith("https://")
    assert not (p.group_regex and p.group_column)


def test_preset_details() -> None:
    assert load_preset("fracatlas").format == "fracatlas"
    graz = load_preset("grazpedwri-dx")
    assert (graz.format, graz.group_column, graz.meta_csv, graz.meta_key) == (
        "yolo",
        "patient_id",
        "dataset.csv",
        "filestem",
    )
    mura = load_preset("mura")
    assert mura.format == "folders" and mura.group_regex == r"patient(\d+)"
    rf = load_preset("roboflow-bone-fracture")
    assert set(rf.mapping.values()) == {"fracture"}


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(UserError) as exc:
        load_preset("fracatlass")
    assert "unknown preset 'fracatlass'" in str(exc.value) and "fracatlas, grazpedwri-dx" in str(exc.value)


GOOD = "name: x\nurl: https://e.org\nlicense: CC0\ncitation: c\nformat: yolo\nlayout: l\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD, None),
        (GOOD + "group:\n  group_column: patient_id\nmeta_csv: m.csv\n", None),
        ("name: x\n", "missing field 'url'"),
        (GOOD.replace("yolo", "tiff"), "format 'tiff'"),
        (GOOD + "colour: red\n", "unknown fields ['colour']"),
        (GOOD + "group:\n  group_regex: '('\n", "not a valid regular expression"),
        (GOOD + "group:\n  group_column: patient_id\n", "group_column needs meta_csv"),
        (GOOD + "group:\n  by: patient\n", "group must be"),
        (GOOD + "mapping: [a, b]\n", "mapping must be"),
        (GOOD.replace("name: x", "name: y"), "differs from the file name"),
        ("name: [unclosed\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_validation(tmp_path: Path, text: str, message: str | None) -> None:
    (tmp_path / "x.yaml").write_text(text)
    if message is None:
        assert load_preset("x", folder=tmp_path).format == "yolo"
    else:
        with pytest.raises(UserError, match=message.replace("[", "\\[").replace("(", "\\(")):
            load_preset("x", folder=tmp_path)
