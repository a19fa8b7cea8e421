"""Output folders and seen films, typed as a user types them: the installed `fracturekit` run as a subprocess
from another working directory with relative paths; exit codes, one-line messages, files left behind.

Re-runs into used folders (with and without --exist-ok, a user's own file inside), a killed prepare's
temporary folder, a predict killed mid-run and resumed, and evaluate on a dataset re-prepared with another
seed and on a second dataset holding copies of training films.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pandas as pd
import pytest

from fracturekit.core.outputs import RECORD, TMP_MARKER
from fracturekit.data.phantoms import generate_phantom, write_phantom_dataset

FRACTUREKIT = Path(sys.executable).with_name("fracturekit")


def fk(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`fracturekit ARGS` in `cwd`, offline, with a terminal wide enough that messages stay on one line."""
    env = {**os.environ, "FRACTUREKIT_OFFLINE": "1", "YOLO_OFFLINE": "1", "COLUMNS": "400"}
    return subprocess.run([str(FRACTUREKIT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def one_error(res: subprocess.CompletedProcess[str]) -> str:
    """The single error line of a refused command (exit 2, no traceback)."""
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.fixture
def work(tmp_path: Path, phantom_coco: Path) -> Path:
    """A working directory holding a raw dataset `raw/`; commands run from `work/sub` with `../` paths."""
    shutil.copytree(phantom_coco, tmp_path / "raw")
    (tmp_path / "sub").mkdir()
    return tmp_path


@pytest.mark.parametrize(
    ("flags", "code", "message"),
    [
        ([], 2, "already holds a prepared dataset"),  # re-run into a used --out: refused, nothing touched
        (["--exist-ok"], 0, "wrote ../ds"),  # replaces what prepare wrote; the user's files stay
        (["--exist-ok", "--seed", "7"], 0, "wrote ../ds"),  # another split: the dataset changes, notes stay
    ],
)
def test_prepare_rerun_into_used_folder(work: Path, flags: list[str], code: int, message: str) -> None:
    sub = work / "sub"
    assert fk(sub, "prepare", "../raw", "--out", "../ds").returncode == 0
    before = pd.read_csv(work / "ds" / "manifest.csv")
    (work / "ds" / "NOTES.txt").write_text("mine")
    (work / "ds" / "mine").mkdir()
    (work / "ds" / "mine" / "a.txt").write_text("mine too")
    res = fk(sub, "prepare", "../raw", "--out", "../ds", *flags)
    if code == 2:
        assert message in one_error(res)
    else:
        said = " ".join(res.stdout.split())  # paths are shown resolved, as the command understood them
        assert res.returncode == 0 and message.replace("../", f"{work.resolve()}/") in said, res.stdout + res.stderr
    assert (work / "ds" / "NOTES.txt").read_text() == "mine"
    assert (work / "ds" / "mine" / "a.txt").read_text() == "mine too"
    after = pd.read_csv(work / "ds" / "manifest.csv")
    assert after["output_cls"].map(lambda p: (work / "ds" / p).is_file()).all()
    written = set(json.loads((work / "ds" / RECORD).read_text())["commands"]["prepare"]["files"])
    on_disk = {p.relative_to(work / "ds").as_posix() for p in (work / "ds").rglob("*") if p.is_file()}
    assert on_disk - written == {"NOTES.txt", "mine/a.txt", RECORD}  # nothing stale, nothing unrecorded
    moved = (before.set_index("source")["split"] != after.set_index("source")["split"]).any()
    assert moved == ("--seed" in flags)
    assert sorted(p.name for p in work.iterdir()) == ["ds", "raw", "sub"]  # no tmp or old folder left


def test_prepare_removes_a_killed_runs_tmp_folder(work: Path) -> None:
    dead, other = subprocess.Popen(["true"]), subprocess.Popen(["true"])
    dead.wait(), other.wait()  # two pids whose processes are gone
    killed = work / f"ds.tmp-{dead.pid}"  # what a SIGKILLed prepare leaves: the marker is inside
    (killed / ".stage").mkdir(parents=True)
    (killed / TMP_MARKER).write_text(str(dead.pid))
    lookalike = work / f"ds.tmp-{other.pid}"  # a user's folder with such a name but no marker: kept
    lookalike.mkdir()
    res = fk(work / "sub", "prepare", "../raw", "--out", "../ds")
    assert res.returncode == 0, res.stderr
    assert f"removed {work.resolve()}/ds.tmp-{dead.pid}, left by a killed prepare" in res.stdout
    assert not killed.exists() and lookalike.is_dir()


def _copy_runs(tiny_runs: dict[str, Path], dest: Path) -> dict[str, Path]:
    """The session's one-epoch runs copied under dest/runs/<task>/tiny (they keep their run.json and seen.csv)."""
    return {t: Path(shutil.copytree(r, dest / "runs" / t / "tiny")) for t, r in tiny_runs.items()}


def test_prepare_over_a_trained_dataset_names_the_runs(
    prepared_phantoms: Path, tiny_runs: dict[str, Path], tmp_path: Path, phantom_coco: Path
) -> None:
    ds = Path(shutil.copytree(prepared_phantoms, tmp_path / "ds"))
    runs = _copy_runs(tiny_runs, tmp_path)
    for run in runs.values():  # the copies say they were trained on the copied dataset
        record = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**record, "data": str(ds)}))
    res = fk(
        tmp_path, "prepare", str(phantom_coco), "--out", "ds", "--split", "0.6,0.2,0.2", "--seed", "9", "--exist-ok"
    )
    assert res.returncode == 0, res.stderr
    note = " ".join(res.stdout.split())
    assert f"2 run(s) were trained on the previous {(tmp_path / 'ds').resolve()}" in note
    assert "no longer matches" in note
    assert "runs/classify/tiny" in note and "runs/detect/tiny" in note and f"looked in {tmp_path}/runs/" in note


@pytest.mark.parametrize(
    ("args", "code", "left"),
    [
        ([], 0, ["eval", "eval2"]),  # default folder: a second evaluate goes to eval2, eval is untouched
        (["--out", "../mine"], 2, []),  # an explicit folder holding a user's file: refused
        (["--out", "../mine", "--exist-ok"], 0, []),  # replaces only evaluate's own files; NOTES.txt stays
    ],
)
def test_evaluate_rerun_into_used_folder(
    prepared_phantoms: Path, tiny_runs: dict[str, Path], tmp_path: Path, args: list[str], code: int, left: list[str]
) -> None:
    runs = _copy_runs({"classify": tiny_runs["classify"]}, tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "NOTES.txt").write_text("mine")
    common = ["evaluate", "--data", os.path.relpath(prepared_phantoms, tmp_path / "sub"), "--bootstrap", "20"]
    common += ["--classifier", "../runs/classify/tiny"]
    first = fk(tmp_path / "sub", *common, *(["--out", "../mine", "--exist-ok"] if args else []))
    assert first.returncode == 0, first.stderr
    res = fk(tmp_path / "sub", *common, *args)
    if code == 2:
        said = one_error(res)
        assert f"--out {(tmp_path / 'mine').resolve()} already holds files" in said and "--exist-ok" in res.stderr
    else:
        assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in runs["classify"].glob("eval*")) == left
    assert (tmp_path / "mine" / "NOTES.txt").read_text() == "mine"
    metrics = json.loads(
        ((runs["classify"] / left[-1]) if left else tmp_path / "mine").joinpath("metrics.json").read_text()
    )
    assert metrics["provenance"]["train_overlap"] == 0  # the test split of the run's own dataset: clean


def test_predict_killed_and_resumed(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    runs = _copy_runs(tiny_runs, tmp_path)
    write_phantom_dataset(tmp_path / "films", n=40, seed=11, size=64, fmt="images")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "pred").mkdir()
    (tmp_path / "sub" / "pred" / "NOTES.txt").write_text("mine")
    args = ["predict", "--source", "../films", "--detector", "../runs/detect/tiny"]
    args += ["--classifier", "../runs/classify/tiny", "--out", "pred", "--batch", "1"]
    env = {**os.environ, "FRACTUREKIT_OFFLINE": "1", "YOLO_OFFLINE": "1", "COLUMNS": "400"}
    proc = subprocess.Popen(
        [str(FRACTUREKIT), *args, "--exist-ok"], cwd=tmp_path / "sub", env=env, stderr=subprocess.DEVNULL
    )
    table = tmp_path / "sub" / "pred" / "predictions.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if table.is_file() and len(table.read_text().splitlines()) > 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = pd.read_csv(table)
    assert 3 <= len(kept) < 40, "predict must be killed mid-run"  # rows of finished films survived the kill
    assert all((tmp_path / "sub" / "pred" / p).is_file() for p in kept["annotated"])  # relative to --out
    assert not (tmp_path / "sub" / "pred" / "predictions.json").exists()

    refused = one_error(fk(tmp_path / "sub", *args))  # a plain re-run is refused and points at --resume
    assert "pass --resume to continue it" in refused
    other = one_error(fk(tmp_path / "sub", *args[:5], *args[7:], "--resume"))  # other models: refused
    assert f"--resume: {(tmp_path / 'sub' / 'pred').resolve()} was predicted with --classifier" in other

    res = fk(tmp_path / "sub", *args, "--resume")
    assert res.returncode == 0, res.stderr
    assert "40 images: 40 predicted" in " ".join(res.stderr.split())
    rows = pd.read_csv(table)
    assert len(rows) == 40 and rows["path"].is_unique  # nothing predicted twice, nothing lost
    assert rows["path"].iloc[: len(kept)].tolist() == kept["path"].tolist()  # kept rows untouched
    data = json.loads((tmp_path / "sub" / "pred" / "predictions.json").read_text())
    assert len(data["images"]) == 40 and data["resumed_after"] == len(kept)
    assert (tmp_path / "sub" / "pred" / "NOTES.txt").read_text() == "mine"
    assert runs["detect"].is_dir()


def test_predict_default_folders_increment(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    _copy_runs({"detect": tiny_runs["detect"]}, tmp_path)
    write_phantom_dataset(tmp_path / "films", n=2, seed=3, size=64, fmt="images")
    for _ in range(2):
        res = fk(tmp_path, "predict", "--source", "films", "--detector", "runs/detect/tiny")
        assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "runs").glob("predict*")) == ["predict", "predict2"]


def _kaggle_with_copies(root: Path, seen_csv: Path, dataset: Path) -> None:
    """train|val|test/<class>/ folders of fresh phantoms; test/ also holds two films the run trained on:
    one byte for byte under a new name, one mirrored (a lossless PNG, so the copy is exact up to the flip)."""
    for split, n in (("train", 6), ("val", 6), ("test", 4)):
        for k in range(n):
            label = "fracture" if k % 2 else "no_fracture"
            (root / split / label).mkdir(parents=True, exist_ok=True)
            ph = generate_phantom(seed=40 + len(split), index=k, size=64, fracture_prob=1.0 if k % 2 else 0.0)
            cv2.imwrite(str(root / split / label / f"{split}_{k}.png"), ph.image)
    seen = pd.read_csv(seen_csv)
    train = seen[seen["split"] == "train"]["path"].tolist()
    shutil.copy(dataset / train[0], root / "test" / "fracture" / "renamed.png")  # phantoms are PNG
    mirrored = cv2.imread(str(dataset / train[1]), cv2.IMREAD_GRAYSCALE)[:, ::-1]
    cv2.imwrite(str(root / "test" / "fracture" / "mirrored.png"), mirrored)


@pytest.mark.parametrize(
    "case",
    [
        "reseeded",  # the run's own dataset re-prepared with another seed: its test split holds training films
        "copies",  # a second dataset that contains a renamed and a mirrored copy of two training films
    ],
)
def test_evaluate_refuses_films_the_model_saw(
    phantom_coco: Path, prepared_phantoms: Path, tiny_runs: dict[str, Path], tmp_path: Path, case: str
) -> None:
    runs = _copy_runs({"classify": tiny_runs["classify"]}, tmp_path)
    (tmp_path / "sub").mkdir()
    if case == "reseeded":
        res = fk(
            tmp_path / "sub", "prepare", str(phantom_coco), "--out", "../ds", "--split", "0.6,0.2,0.2", "--seed", "5"
        )
    else:
        _kaggle_with_copies(tmp_path / "kaggle", runs["classify"] / "seen.csv", prepared_phantoms)
        # an absolute source: a relative class-folder source is issue 11's bug (fixed on its branch)
        res = fk(tmp_path / "sub", "prepare", str(tmp_path / "kaggle"), "--out", "../ds", "--keep-splits")
    assert res.returncode == 0, res.stdout + res.stderr
    args = ["evaluate", "--data", "../ds", "--classifier", "../runs/classify/tiny", "--bootstrap", "20"]
    refused = one_error(fk(tmp_path / "sub", *args))
    assert f"films, or copies of films, that {runs['classify'].resolve()} trained or validated on" in refused
    assert "--allow-overlap" in refused and refused.count(" = train film ") + refused.count(" = val film ") == 2
    assert not (runs["classify"] / "eval").exists()  # refused before anything was written

    res = fk(tmp_path / "sub", *args, "--allow-overlap")
    assert res.returncode == 0, res.stderr
    metrics = json.loads((runs["classify"] / "eval" / "metrics.json").read_text())
    prov = metrics["provenance"]
    count = int(refused.split("error: ")[1].split(" of the ")[0])
    assert prov["train_overlap"] == count > 0 and f"{count} scored films were seen in training" in res.stderr
    if case == "copies":
        assert count == 2 and {Path(e["scored"]).name for e in prov["train_overlap_examples"]} == {
            "mirrored.png",
            "renamed.png",
        }
    assert prov["dataset"]["path"] == str((tmp_path / "ds").resolve()) and prov["split"] == "test"
    run = prov["runs"]["classifier"]
    assert run["data_hash"] != prov["dataset"]["data_hash"] and run["same_data"] is False
    assert "warning: the classifier was trained on another version of the dataset" in res.stderr  # not only on file
    assert set(prov["versions"]) == {"fracturekit", "ultralytics", "torch"} and prov["date"]
    report = (runs["classify"] / "eval" / "report.html").read_text()
    assert report.index(f"{count} scored films are copies") < report.index("<h2>")  # said at the top
