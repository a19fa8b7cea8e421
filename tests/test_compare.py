"""`compare`: one row per run from run.json, config.yaml, results.csv and eval/metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fracturekit.cli.app import app
from fracturekit.core.errors import UserError
from fracturekit.evaluation.compare import compare


def _run(root: Path, task: str, results: str, metrics: dict | None, record: dict | None) -> Path:
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "best.pt").write_bytes(b"not a checkpoint")  # params unknown -> empty cell
    (root / "config.yaml").write_text(f"task: {task}\nmodel: s\nimgsz: 320\nepochs: 50\nbatch: 16\n")
    (root / "results.csv").write_text(results)
    if record is not None:
        (root / "run.json").write_text(json.dumps(record))
    if metrics is not None:
        (root / "eval").mkdir()
        (root / "eval" / "metrics.json").write_text(json.dumps(metrics))
    return root


DET_CSV = (
    "epoch,time,metrics/precision(B),metrics/recall(B),metrics/mAP50(B),metrics/mAP50-95(B)\n"
    "1,10.0,0.1,0.1,0.20,0.10\n2,20.5,0.3,0.2,0.40,0.25\n3,31.0,0.2,0.2,0.35,0.20\n"
)
CLS_CSV = "epoch,time,train/loss,metrics/accuracy_top1,metrics/accuracy_top5\n1,5.0,0.7,0.6,1\n2,9.5,0.6,0.8,1\n"


def test_compare_rows(tmp_path: Path, no_network: list[str]) -> None:
    det = _run(
        tmp_path / "detect" / "a",
        "detect",
        DET_CSV,
        {
            "split": "test",
            "detection": {"map50_95": 0.22, "map50": 0.38, "image_auroc": 0.81, "pycocotools": {"map50_95": 0.221}},
        },
        {"task": "detect", "device": {"used": "cpu", "name": "AMD EPYC"}, "timings": {"total_s": 33.3}},
    )
    # Classify run whose eval/ holds only the detector's numbers (run mismatch): no test columns.
    cls = _run(
        tmp_path / "classify" / "b",
        "classify",
        CLS_CSV,
        {"split": "test", "classification": {"run": str(tmp_path / "elsewhere"), "auroc": 0.9}},
        None,
    )
    # Classify run whose eval/ holds its own numbers: the test columns come from there.
    own = tmp_path / "classify" / "c"
    own = _run(own, "classify", CLS_CSV, {"split": "test", "classification": {"run": str(own), "auroc": 0.93}}, None)
    df = compare([det, cls, own])
    df.index = ["detect", "classify", "classify_own"]
    assert df.loc["detect", "best_epoch"] == 2  # epoch with the highest mAP50-95
    assert df.loc["detect", "val_map50_95"] == 0.25
    assert df.loc["detect", "train_time_s"] == 33.3  # run.json wins over results.csv
    assert df.loc["detect", "device"] == "cpu (AMD EPYC)"
    assert df.loc["detect", "test_map50_95"] == 0.22
    assert df.loc["detect", "test_coco_map50_95"] == 0.221
    assert df.loc["classify", "val_top1"] == 0.8
    assert df.loc["classify", "train_time_s"] == 9.5  # from results.csv when run.json is absent
    assert df.loc["classify", "imgsz"] == 320
    assert df.loc["classify_own", "test_auroc"] == 0.93
    assert np.isnan(df.loc["classify", "test_auroc"])  # the other run's numbers are not this run's
    assert str(df.loc["detect", "params_M"]) in ("None", "nan")  # unreadable weights: empty, not a crash


def test_compare_cli(tmp_path: Path, no_network: list[str]) -> None:
    det = _run(tmp_path / "detect" / "a", "detect", DET_CSV, None, None)
    out = tmp_path / "cmp.csv"
    res = CliRunner().invoke(app, ["compare", str(det), "--csv", str(out)])
    assert res.exit_code == 0, res.output
    assert "val_map50_95" in res.output
    assert pd.read_csv(out)["val_map50_95"].tolist() == [0.25]  # the best epoch's value, not just the column


@pytest.mark.parametrize(
    "runs",
    [
        [],  # nothing given
        ["not/a/run"],  # a folder without weights/
    ],
)
def test_compare_user_errors(tmp_path: Path, runs: list[str]) -> None:
    with pytest.raises(UserError):
        compare([tmp_path / r for r in runs])
