"""End to end: `fracturekit evaluate` and `compare` on the one-epoch phantom runs (CliRunner, offline)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fracturekit.cli.app import app


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.srcs += [v for k, v in attrs if tag == "img" and k == "src" and v]


def test_evaluate_cli_on_tiny_runs(
    prepared_phantoms: Path, tiny_runs: dict[str, Path], tmp_path: Path, no_network: list[str]
) -> None:
    manifest = pd.read_csv(prepared_phantoms / "manifest.csv")
    by = ["region"] if "region" in manifest.columns else ["label"]
    out = tmp_path / "eval"
    args = ["evaluate", "--data", str(prepared_phantoms), "--classifier", str(tiny_runs["classify"])]
    args += ["--detector", str(tiny_runs["detect"]), "--out", str(out), "--by", by[0], "--bootstrap", "50"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)

    m = json.loads((out / "metrics.json").read_text())
    assert (m["split"], m["threshold_split"]) == ("test", "val")
    c, d = m["classification"], m["detection"]
    for key in ("auroc", "auroc_ci95", "average_precision", "threshold", "temperature", "ece_before", "ece_after"):
        assert key in c
    for key in ("sensitivity", "specificity", "precision", "f1", "confusion_matrix", "sens_at_spec", "n_positive"):
        assert key in c
    assert c["positive_class"] == "fracture" and c["n"] > 0
    for key in ("map50_95", "map50", "precision", "recall", "per_class_ap", "image_auroc", "image_auroc_ci95"):
        assert key in d
    assert set(d["pycocotools"]) >= {"map50_95", "map50"}
    # prepared without --meta: no patient groups and no copies, so every film is its own unit
    assert (c["n_units"], d["n_units"]) == (c["n"], d["n_images"]) and m["units"]["linked_by"][0] == "group"
    assert d["map_difference"]["map50_95"] == d["map50_95"] - d["pycocotools"]["map50_95"]
    assert set(c["subgroups"][by[0]]) == set(manifest.loc[manifest["split"] == "test", by[0]].astype(str))
    assert sum(g["n"] for g in c["subgroups"][by[0]].values()) == c["n"]

    preds = pd.read_csv(out / "predictions.csv")
    assert {"path", "label", "model", "score"} <= set(preds.columns)
    assert (preds["model"] == "classifier").sum() == c["n"]
    assert (preds["model"] == "detector").sum() == d["n_images"]  # every image, backgrounds included
    assert ((preds["score"] >= 0) & (preds["score"] <= 1)).all()

    parser = _Images()
    parser.feed((out / "report.html").read_text(encoding="utf-8"))
    plots = [s for s in parser.srcs if s.startswith("data:image/png;base64,")]  # ROC/PR, confusion, reliability
    pictures = [s for s in parser.srcs if s.startswith("data:image/jpeg;base64,")]  # cases to review
    assert plots and len(plots) + len(pictures) == len(parser.srcs)
    cases = pd.read_csv(out / "cases.csv")
    assert len(pictures) == cases["picture"].notna().sum() > 0
    # every misclassified film is listed, each model at its own val-chosen threshold
    cm = c["confusion_matrix_labelled"]["counts"]
    listed = cases[cases["model"] == "classifier"]["kind"].value_counts()
    assert listed.get("false_negative", 0) == cm["true fracture"]["predicted no_fracture"]
    assert listed.get("false_positive", 0) == cm["true no_fracture"]["predicted fracture"]
    assert m["provenance"]["runs"]["detector"]["data_hash"] == m["provenance"]["dataset"]["data_hash"]
    assert json.loads((out / "ground_truth_coco.json").read_text())["images"]  # the COCO pair is there

    # compare the two real runs: parameter counts and val numbers are read back, not just their column names
    table = tmp_path / "compare.csv"
    res = CliRunner().invoke(
        app, ["compare", str(tiny_runs["classify"]), str(tiny_runs["detect"]), "--csv", str(table)]
    )
    assert res.exit_code == 0, res.output
    assert "params_M" in res.output and "val_top1" in res.output
    rows = pd.read_csv(table).set_index("task")
    assert (rows["params_M"] > 0).all()  # read from each best.pt
    results = pd.read_csv(tiny_runs["classify"] / "results.csv").rename(columns=str.strip)
    assert rows.loc["classify", "val_top1"] == pytest.approx(results["metrics/accuracy_top1"].max())


def test_evaluate_cli_user_error_exit_code(prepared_phantoms: Path, tiny_runs: dict[str, Path]) -> None:
    # A --by column the manifest lacks: one line, exit 2, no traceback.
    args = ["evaluate", "--data", str(prepared_phantoms), "--classifier", str(tiny_runs["classify"])]
    res = CliRunner().invoke(app, [*args, "--by", "no_such_column"])
    assert res.exit_code == 2
    assert "no column no_such_column" in " ".join(res.output.split())  # rich wraps long lines


def test_detector_on_a_dataset_without_boxes_is_one_sentence(
    tiny_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Class folders have no boxes: `evaluate --detector` on them said `.../det/images/test: no images; check --split
    or re-run prepare`, which neither a split nor a second prepare could fix."""
    from fracturekit.data.phantoms import write_phantom_dataset

    monkeypatch.chdir(tmp_path)
    write_phantom_dataset(Path("raw"), 12, fmt="folders", size=64)
    assert CliRunner().invoke(app, ["prepare", "raw", "--out", "ds"]).exit_code == 0
    args = ["evaluate", "--detector", str(tiny_runs["detect"]), "--data", "ds", "--out", "ev"]
    result = CliRunner().invoke(app, args)
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "holds no film in any split" in said and "--classifier" in said, said
    assert "Traceback" not in result.output and not Path("ev").exists()
