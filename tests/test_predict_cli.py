"""`fracturekit predict` / `fracturekit export` through Typer's CliRunner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fracturekit.cli.app import app
from fracturekit.data.phantoms import write_phantom_dataset


@pytest.fixture(scope="module")
def cli_runs(tiny_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("cli")
    return {t: Path(shutil.copytree(r, base / t)) for t, r in tiny_runs.items()}


def test_cli_predict_writes_outputs(cli_runs: dict[str, Path], tmp_path: Path) -> None:
    src = write_phantom_dataset(tmp_path / "films", n=3, seed=5, size=64, fmt="images")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    args = ["predict", "--source", str(src), "--detector", str(cli_runs["detect"])]
    args += ["--classifier", str(cli_runs["classify"]), "--out", str(out), "--conf", "0.01", "--batch", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "4 images: 3 predicted" in res.output and "broken.jpg" in res.output
    data = json.loads((out / "predictions.json").read_text())
    assert len(data["images"]) == 4 and data["n_errors"] == 1
    assert len(list(out.glob("*.jpg"))) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "--source", "no/such/folder", "--detector", "RUN"], "no such file"),  # bad source
        (["predict", "--source", "SRC"], "no model given"),  # no weights
        (["export", "no/such/run.pt"], "no such weights"),  # bad weights
    ],
)
def test_cli_user_errors_exit_2(cli_runs: dict[str, Path], tmp_path: Path, args: list[str], message: str) -> None:
    write_phantom_dataset(tmp_path, n=1, seed=5, size=64, fmt="images")
    args = [str(cli_runs["detect"]) if a == "RUN" else str(tmp_path) if a == "SRC" else a for a in args]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and message in " ".join(res.output.split())


def test_cli_export(cli_runs: dict[str, Path]) -> None:
    res = CliRunner().invoke(app, ["export", str(cli_runs["classify"]), "--format", "onnx"])
    assert res.exit_code == 0, res.output
    assert (cli_runs["classify"] / "weights" / "best.onnx").is_file()


def test_cli_predict_one_film_says_image(cli_runs: dict[str, Path], tmp_path: Path) -> None:
    """A single file as --source: the summary said `1 images: 1 predicted`."""
    src = write_phantom_dataset(tmp_path / "films", n=1, seed=5, size=64, fmt="images")
    film = next(p for p in src.iterdir() if p.is_file())
    args = ["predict", "--source", str(film), "--detector", str(cli_runs["detect"]), "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "1 image: 1 predicted" in res.output, res.output
