"""Outside models through cv and the example: `cv --export-folds`, examples/resnet18_scores.py on each fold and on
a prepared split, its scores back through `cv --scores` and `evaluate --scores` (tiny sizes, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fracturekit.cli.app import app
from fracturekit.evaluation.metrics import auroc

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "resnet18_scores.py"
TINY = ["--imgsz", "32", "--epochs", "1"]  # seconds on a CPU: the plumbing, not a model
K = 3


def _example(*args: str) -> str:
    res = subprocess.run([sys.executable, str(EXAMPLE), *args, *TINY], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture(scope="module")
def exported(prepared_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("folds") / "folds"
    res = CliRunner().invoke(
        app,
        ["cv", "--task", "classify", "--data", str(prepared_phantoms), "--folds", str(K), "--export-folds", str(out)],
    )
    assert res.exit_code == 0, res.output
    return out


def test_exported_folds_match_the_roles(exported: Path, prepared_phantoms: Path) -> None:
    every = pd.read_csv(exported / "folds.csv", keep_default_na=False)
    manifest = pd.read_csv(prepared_phantoms / "manifest.csv", keep_default_na=False)
    assert set(every["path"]) == set(manifest.loc[manifest["output_cls"] != "", "source"])
    tests = []
    for k in range(K):
        parts = {
            s: pd.read_csv(exported / f"fold{k}" / f"{s}.csv", keep_default_na=False) for s in ("train", "val", "test")
        }
        names = {s: set(p["path"]) for s, p in parts.items()}
        assert (
            not (names["train"] & names["val"])
            and not (names["train"] & names["test"])
            and not (names["val"] & names["test"])
        )
        assert names["train"] | names["val"] | names["test"] == set(every["path"])
        assert all(Path(f).is_file() for f in parts["train"]["file"])  # what an outside script opens
        # fold k's val fold is fold k+1's test fold, as in `cv` itself
        assert names["val"] == set(pd.read_csv(exported / f"fold{(k + 1) % K}" / "test.csv")["path"])
        groups = parts["train"]["group"].replace("", None).dropna()
        assert not set(groups) & set(parts["test"]["group"].replace("", None).dropna())  # patients stay in one fold
        tests += list(names["test"])
    assert sorted(tests) == sorted(every["path"])  # every film tested exactly once


@pytest.mark.slow  # 3 ResNet-18 trainings in subprocesses: about a minute on a shared 2-core machine
def test_example_scores_through_cv(exported: Path, prepared_phantoms: Path, tmp_path: Path) -> None:
    for k in range(K):
        _example("--fold", str(exported / f"fold{k}"), "--out", str(tmp_path / "oof" / f"fold{k}.csv"))
    args = ["cv", "--task", "classify", "--data", str(prepared_phantoms), "--folds", str(K), "--bootstrap", "50"]
    args += ["--project", str(tmp_path), "--name", "resnet", "--scores", str(tmp_path / "oof" / "fold{k}.csv")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    cv = json.loads((tmp_path / "cv" / "resnet" / "cv.json").read_text())
    oof = pd.read_csv(tmp_path / "cv" / "resnet" / "oof_predictions.csv")
    assert cv["models"] == ["oof"] and len(cv["folds"]) == K and (tmp_path / "cv" / "resnet" / "report.html").is_file()
    assert cv["oof"]["oof"]["n"] == len(oof) == len(pd.read_csv(exported / "folds.csv"))
    assert cv["oof"]["oof"]["auroc"] == pytest.approx(auroc((oof["label"] == "fracture").astype(int), oof["score"]))
    # each fold's raw scores are the script's test-fold scores, unchanged
    written = pd.concat(
        pd.read_csv(tmp_path / "oof" / f"fold{k}.csv").merge(pd.read_csv(exported / f"fold{k}" / "test.csv")["path"])
        for k in range(K)
    ).set_index("path")["score"]
    assert oof.set_index("source")["score_raw"].to_dict() == pytest.approx(written.loc[oof["source"]].to_dict())

    missing = ["--name", "resnet-missing", "--scores", str(tmp_path / "absent" / "fold{k}.csv")]
    res = CliRunner().invoke(app, [*args[:-4], *missing])
    assert res.exit_code == 2 and "fold files are missing" in " ".join(res.output.split())


@pytest.mark.slow  # one ResNet-18 training in a subprocess (torch import included): ~25 s
def test_example_scores_through_evaluate(prepared_phantoms: Path, tmp_path: Path) -> None:
    assert "wrote" in _example("--data", str(prepared_phantoms), "--out", str(tmp_path / "resnet18.csv"))
    args = ["evaluate", "--data", str(prepared_phantoms), "--scores", str(tmp_path / "resnet18.csv")]
    res = CliRunner().invoke(app, [*args, "--name", "resnet18", "--out", str(tmp_path / "eval"), "--bootstrap", "50"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["classification"]["outside"]["name"] == "resnet18" and 0 <= m["classification"]["auroc"] <= 1


def test_training_flags_refused_with_scores(prepared_phantoms: Path) -> None:
    args = ["cv", "--task", "classify", "--data", str(prepared_phantoms), "--scores", "oof/fold{k}.csv"]
    res = CliRunner().invoke(app, [*args, "--model", "n", "--epochs", "3"])
    assert res.exit_code == 2 and "--model, --epochs train models" in " ".join(res.output.split())


def test_export_folds_typed_twice(prepared_phantoms: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same --export-folds typed again is refused with the flag that replaces it, which exists (the message
    named `--out` and an `--exist-ok` that cv did not have); a user's file in the folder stays."""
    monkeypatch.chdir(tmp_path)
    args = ["cv", "--task", "classify", "--data", str(prepared_phantoms), "--folds", str(K), "--export-folds", "f"]
    assert CliRunner().invoke(app, args).exit_code == 0
    (Path("f") / "notes.txt").write_text("mine")
    again = CliRunner().invoke(app, args)
    said = " ".join(again.output.split())
    assert again.exit_code == 2 and "--export-folds" in said and "/f already holds files" in said, said
    assert "--exist-ok" in said and "--out" not in said
    replaced = CliRunner().invoke(app, [*args, "--exist-ok"])
    assert replaced.exit_code == 0, replaced.output
    assert (Path("f") / "notes.txt").read_text() == "mine" and (Path("f") / "fold2" / "test.csv").is_file()
    alone = CliRunner().invoke(app, args[:-2] + ["--exist-ok"])  # nothing for --exist-ok to replace
    assert alone.exit_code == 2 and "--exist-ok replaces an earlier --export-folds folder" in alone.output
