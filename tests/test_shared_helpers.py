"""The one helper each twin of issue 21 became: the data_hash reader, the task check, the CLI's training
overrides and the metric formatter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fracturekit.core.errors import UserError
from fracturekit.core.layout import PreparedDataset
from fracturekit.evaluation.report import fmt
from fracturekit.training.config import check_known_task, training_overrides


def test_recorded_data_hash_reads_prepare_json_and_is_none_without_one(tmp_path: Path) -> None:
    ds = PreparedDataset(tmp_path)
    assert ds.recorded_data_hash() is None  # no prepare.json
    ds.summary.write_text("{not json")
    assert ds.recorded_data_hash() is None  # unreadable: None, as every former reader treated it
    ds.summary.write_text(json.dumps({"data_hash": "abc123"}))
    assert ds.recorded_data_hash() == "abc123"


def test_recorded_data_hash_is_what_prepare_wrote(prepared_phantoms: Path) -> None:
    summary = json.loads((prepared_phantoms / "prepare.json").read_text())
    assert PreparedDataset(prepared_phantoms).recorded_data_hash() == summary["data_hash"]


def test_check_task() -> None:
    check_known_task("classify")
    check_known_task("detect")
    with pytest.raises(UserError, match=r"unknown task 'segment'; use --task classify or --task detect\."):
        check_known_task("segment")


@pytest.mark.parametrize(
    ("set_options", "flags", "expected"),
    [
        (None, {"epochs": None, "imgsz": None}, {}),  # nothing given: nothing overrides the config file
        (None, {"epochs": 3, "batch": None}, {"epochs": 3}),  # only the flags given
        (["lr0=0.01", "epochs=9"], {"epochs": 3}, {"lr0": 0.01, "epochs": 3}),  # a flag wins over --set
        (None, {"weights": Path("w/best.pt")}, {"weights": "w/best.pt"}),  # a path as text, as the config holds it
        (None, {"resume": False}, {"resume": False}),  # False is given, only None is "not given"
    ],
)
def test_training_overrides(set_options: list[str] | None, flags: dict, expected: dict) -> None:
    assert training_overrides(set_options, flags) == expected


@pytest.mark.parametrize(
    ("value", "digits", "shown"),
    [
        (None, 3, "n/a"),  # undefined metric
        (math.nan, 3, "n/a"),  # NaN too (cv's line printed "nan" before)
        (0.12345, 3, "0.123"),
        (0.12345, 4, "0.1235"),
        ((0.1, 0.25), 3, "[0.100, 0.250]"),  # a CI pair
        ((None, 0.25), 3, "[n/a, 0.250]"),
        ("youden", 3, "youden"),
    ],
)
def test_fmt(value: object, digits: int, shown: str) -> None:
    assert fmt(value, digits) == shown
