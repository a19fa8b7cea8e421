"""End to end: `fracturekit demo --fast` writes every artefact, valid, and nothing outside --out."""

from __future__ import annotations

import csv
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import network_guard
from typer.testing import CliRunner

from fracturekit.cli.app import app


class _Images(HTMLParser):
    """Collects the src of every <img> in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources += [v or "" for k, v in attrs if k == "src"]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the demo from an empty working directory, which must still be empty afterwards."""
    root = tmp_path_factory.mktemp("demo")
    out, cwd = root / "out", root / "cwd"
    cwd.mkdir()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with network_guard():  # the whole pipeline, offline: any connect or DNS lookup fails the test
            result = CliRunner().invoke(app, ["demo", "--fast", "--out", str(out)])
    finally:
        os.chdir(previous)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert not any(cwd.iterdir()), f"demo wrote outside --out: {list(cwd.iterdir())}"
    return out


def test_demo_weights_load(demo_out: Path) -> None:
    from fracturekit.core.yolo_env import load_ultralytics

    load_ultralytics()
    from ultralytics import YOLO

    summary = json.loads((demo_out / "demo.json").read_text())
    for key, task in (("classifier", "classify"), ("detector", "detect")):
        weights = Path(summary[key]) / "weights" / "best.pt"
        assert YOLO(str(weights)).task == task


def test_demo_metrics_have_map_and_auroc(demo_out: Path) -> None:
    summary = json.loads((demo_out / "demo.json").read_text())
    metrics = json.loads((Path(summary["eval_dir"]) / "metrics.json").read_text())
    for section, key in (("detection", "map50_95"), ("detection", "map50"), ("classification", "auroc")):
        assert isinstance(metrics[section][key], float), (section, key)
        assert 0.0 <= metrics[section][key] <= 1.0


def test_demo_report_embeds_images(demo_out: Path) -> None:
    summary = json.loads((demo_out / "demo.json").read_text())
    parser = _Images()
    parser.feed((Path(summary["eval_dir"]) / "report.html").read_text())
    embedded = ("data:image/png;base64,", "data:image/jpeg;base64,")  # plots; case pictures
    assert parser.sources and all(src.startswith(embedded) for src in parser.sources)


def test_demo_predictions_one_row_per_fresh_image(demo_out: Path) -> None:
    fresh = sorted((demo_out / "fresh").glob("*.png"))
    with (demo_out / "predictions" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(fresh) > 0
    assert sorted(Path(r["path"]).name for r in rows) == [p.name for p in fresh]


def test_demo_writes_only_inside_out(demo_out: Path) -> None:
    summary = json.loads((demo_out / "demo.json").read_text())
    for key in ("dataset", "classifier", "detector", "eval_dir", "predictions"):
        assert Path(summary[key]).resolve().is_relative_to(demo_out.resolve()), key
