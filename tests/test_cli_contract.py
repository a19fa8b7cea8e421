"""CLI contract: the installed `fracturekit`, run as a subprocess the way a person types it.

Every command runs from a working folder (`work/`) beside the data, with relative paths (`../data/...`,
`~/...`, a symlink, spaces and non-ASCII names). Each case asserts the exit code, what is printed (a
user error is ONE line `error: ...`, never a traceback) and the files left behind.

Adding a case is one row: a `Case` in FLOW (steps that build on each other, run in order) or in CASES
(independent, each against the world FLOW left). In `args`, `{name}` is replaced by the relative path
of `world[name]` (see the `world` fixture) and the line is split like a shell does (`shlex`).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest

from fracturekit.data.phantoms import generate_phantom, write_phantom_dataset

FRACTUREKIT = Path(sys.executable).with_name("fracturekit")  # the console script installed beside this Python
TIMEOUT_S = 600


@dataclass(frozen=True)
class Case:
    """One command line and what it must do."""

    id: str
    args: str  # after `fracturekit`; {name} -> relative path of world[name]
    code: int = 0
    says: tuple[str, ...] = ()  # substrings of stdout + stderr (for errors: of the one error line)
    leaves: tuple[str, ...] = ()  # paths ({name} allowed) that must exist afterwards
    not_leaves: tuple[str, ...] = ()  # paths that must not exist afterwards
    file_has: tuple[tuple[str, str], ...] = ()  # (path, substring) pairs: the file must contain the text
    cwd: str = "work"  # folder (relative to the world's base) the command is typed in


def _graz_tree(holder: Path) -> Path:
    """A GRAZPEDWRI-DX-like archive under `holder/GRAZPEDWRI-DX/`: 8 films of 4 patients, YOLO labels, dataset.csv.

    Names follow the real release (`<patient>_<timehash>_01_WRI-L1_M014`); class 3 is `fracture`, 8 is `text`.
    """
    root = holder / "GRAZPEDWRI-DX"
    rows = ["filestem,patient_id,projection"]
    for k in range(8):
        patient, split = k // 2 + 1, ("train", "train", "valid", "test")[k // 2]
        stem = f"{patient:04d}_{1297860395 + k}_01_WRI-L{k % 2 + 1}_M014"
        img = generate_phantom(seed=3, index=k, size=64)
        (root / "data" / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "data" / "labels" / split).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "data" / "images" / split / f"{stem}.png"), img.image)
        label = "3 0.5 0.5 0.3 0.3\n" if img.fractured else "8 0.1 0.9 0.1 0.1\n"
        (root / "data" / "labels" / split / f"{stem}.txt").write_text(label)
        rows.append(f"{stem},{patient},{k % 2 + 1}")
    (root / "dataset.csv").write_text("\n".join(rows) + "\n")
    names = "".join(
        f"  {i}: {n}\n"
        for i, n in enumerate(
            ["boneanomaly", "bonelesion", "foreignbody", "fracture", "metal", "periostealreaction"]
            + ["pronatorsign", "softtissue", "text"]
        )
    )
    (root / "data" / "meta.yaml").write_text(
        f"train: images/train\nval: images/valid\ntest: images/test\nnc: 9\nnames:\n{names}"
    )
    return root


def _gif_named_jpg(folder: Path) -> None:
    """A GIF saved under a .jpg name (found in a real Kaggle set), plus a .webp film and macOS junk."""
    from PIL import Image

    img = generate_phantom(seed=8, index=1, size=64).image
    Image.fromarray(img).save(folder / "gif_in_disguise.jpg", format="GIF")
    Image.fromarray(generate_phantom(seed=8, index=2, size=64).image).save(folder / "film.webp", format="WEBP")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "._gif_in_disguise.jpg").write_bytes(b"\0\5\26\7")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_runs: dict[str, Path]) -> dict[str, Path]:
    """The folders a user has: raw data with awkward names, a detector run, a working folder; name -> path."""
    base = tmp_path_factory.mktemp("contract")
    raw = write_phantom_dataset(base / "data" / "fractures ñ set", n=40, seed=11, size=64, fmt="coco")
    kaggle = write_phantom_dataset(base / "data" / "my kaggle", n=12, seed=12, size=64, fmt="folders")
    _gif_named_jpg(kaggle / "fracture")
    films = write_phantom_dataset(base / "data" / "new films", n=3, seed=13, size=64, fmt="images")
    graz_holder = base / "data" / "graz holder"
    _graz_tree(graz_holder)
    no_csv = base / "data" / "graz without csv"
    shutil.copytree(graz_holder / "GRAZPEDWRI-DX" / "data", no_csv / "data")
    (base / "link").symlink_to(kaggle, target_is_directory=True)
    det = Path(shutil.copytree(tiny_runs["detect"], base / "runs" / "detect" / "tiny"))  # export writes beside it
    (base / "work").mkdir()
    return {
        "base": base,
        "raw": raw,
        "kaggle": kaggle,
        "films": films,
        "graz_holder": graz_holder,
        "no_csv": no_csv,
        "det": det,
        "ds": base / "ds",
        "runs": base / "runs",
        "clf": base / "runs" / "classify" / "c",
        "out": base / "out",
    }


def _fill(text: str, world: dict[str, Path], cwd: Path, quote: bool = True) -> str:
    """Replace {name} by world[name] relative to `cwd` (shell-quoted for a command line)."""
    for name, path in world.items():
        rel = os.path.relpath(path, cwd)
        text = text.replace("{" + name + "}", shlex.quote(rel) if quote else rel)
    return text


def run_case(case: Case, world: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    """Run one case as typed and check everything it promises."""
    base = world["base"]
    cwd = base / case.cwd
    env = {
        **os.environ,
        "HOME": str(base),  # `~/...` means the world's base; nothing lands in the real home
        "YOLO_CONFIG_DIR": str(base / ".yolo"),
        "MPLCONFIGDIR": str(base / ".mpl"),
        "COLUMNS": "80",
    }
    res = subprocess.run(
        [str(FRACTUREKIT), *shlex.split(_fill(case.args, world, cwd))],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    output = res.stdout + res.stderr
    where = f"\n$ cd {cwd} && fracturekit {_fill(case.args, world, cwd)}\n{output[-3000:]}"
    assert res.returncode == case.code, f"exit {res.returncode}, expected {case.code}{where}"
    assert "Traceback" not in output, where
    if case.code == 2:
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0] == res.stderr.strip().splitlines()[-1], f"not one error line{where}"
        for text in case.says:
            assert text in errors[0], f"{text!r} not in the error line{where}"
    else:
        for text in case.says:
            assert text in " ".join(output.split()), f"{text!r} not printed{where}"  # rich may wrap lines
    for rel in case.leaves:
        assert (cwd / _fill(rel, world, cwd, quote=False)).exists(), f"{rel} missing{where}"
    for rel in case.not_leaves:
        assert not (cwd / _fill(rel, world, cwd, quote=False)).exists(), f"{rel} left behind{where}"
    for rel, text in case.file_has:
        assert text in (cwd / _fill(rel, world, cwd, quote=False)).read_text(), f"{rel} lacks {text!r}{where}"
    return res


# The pipeline typed from work/, each step on what the previous one wrote (order matters).
FLOW = [
    # prepare a COCO set whose folder name has a space and a non-ASCII letter; ../ paths both ways
    Case(
        "prepare",
        "prepare {raw} --out {ds} --split 0.6,0.2,0.2 --meta {raw}/metadata.csv",
        says=("prepared 40 of 40 images", "grouping: 40 of 40 films grouped", "meta csv 40"),
        leaves=("{ds}/manifest.csv", "{ds}/det/data.yaml", "{ds}/prepare.json"),
        file_has=(("{ds}/manifest.csv", "\nimages/phantom_11_00000.png,"),),  # source relative to its root
    ),
    # audit the prepared dataset from inside it: `.`
    Case("audit", "audit . --strict", says=("LEAKS",), leaves=("audit/audit.json",), cwd="ds"),
    # train the classifier for 1 epoch at imgsz 40: rounded up to 64 with a note; --device auto is the default
    Case(
        "train",
        "train --task classify --data {ds} --project {runs} --name c --epochs 1 --imgsz 40 --batch 16",
        says=("--imgsz 40 rounded up to 64", "run folder:"),
        leaves=("{clf}/weights/best.pt", "{clf}/run.json"),
    ),
    # evaluate both models (the detector: conftest's tiny run, copied); default --device auto resolves to a device
    Case(
        "evaluate",
        "evaluate --data {ds} --classifier {clf} --detector {det} --out {out}/eval --bootstrap 50",
        says=("wrote metrics.json",),
        leaves=("{out}/eval/metrics.json", "{out}/eval/report.html", "{out}/eval/predictions.csv"),
    ),
    # predict on a folder with a space in its name, with the new --iou; paths in the CSV relative to --source
    Case(
        "predict",
        "predict --source {films} --detector {det} --classifier {clf} --out {out}/pred --conf 0.05 --iou 0.5",
        says=("3 images: 3 predicted",),
        leaves=("{out}/pred/predictions.csv", "{out}/pred/phantom_13_00000.jpg"),
        file_has=(("{out}/pred/predictions.csv", "\nphantom_13_00000.png,"),),
    ),
    # export the detector to ONNX beside its weights
    Case("export", "export {det} --format onnx --imgsz 64", says=("exported",), leaves=("{det}/weights/best.onnx",)),
]

# Independent cases against the world FLOW left: wrong combinations, awkward paths, presets.
CASES = [
    # a classifier run passed as --detector: one sentence naming the file and what it is (was an IndexError)
    Case(
        "clf-as-detector",
        "evaluate --data {ds} --detector {clf} --out {out}/x1",
        2,
        ("best.pt: a classify model was given where a detect model is needed; pass it as --classifier",),
        not_leaves=("{out}/x1",),
    ),
    # a detector passed as --classifier (was "class 'no_fracture' is unknown")
    Case(
        "det-as-classifier",
        "evaluate --data {ds} --classifier {det} --out {out}/x2",
        2,
        ("a detect model was given where a classify model is needed; pass it as --detector",),
        not_leaves=("{out}/x2",),
    ),
    # the same mistake in predict
    Case(
        "predict-clf-as-detector",
        "predict --source {films} --detector {clf} --out {out}/x3",
        2,
        ("a classify model was given where a detect model is needed",),
        not_leaves=("{out}/x3",),
    ),
    # export to a format that needs a GPU toolchain (was an AssertionError traceback)
    Case("export-engine", "export {det} --format engine", 2, ("--format engine: not available offline", "onnx")),
    # thresholds outside (0, 1]
    Case(
        "conf-above-1", "predict --source {films} --detector {det} --conf 1.5", 2, ("--conf 1.5: must lie in (0, 1]",)
    ),
    Case("iou-zero", "predict --source {films} --detector {det} --iou 0", 2, ("--iou 0.0: must lie in (0, 1]",)),
    # a size that is not positive
    Case("imgsz-zero", "predict --source {films} --detector {det} --imgsz 0", 2, ("--imgsz 0: must be a positive",)),
    # a device that does not exist
    Case("device-typo", "evaluate --data {ds} --classifier {clf} --device gpu", 2, ("--device gpu: not a device",)),
    # a relative class-folder path typed as `./`, with a GIF named .jpg, a .webp film and macOS junk in it
    Case(
        "prepare-dot-slash",
        "prepare ./{kaggle} --out {out}/kaggle",
        says=("prepared 14 of 14 images", "ignored: operating-system or archiver junk"),
        file_has=(
            ("{out}/kaggle/manifest.csv", "content is GIF although named .jpg: re-encoded as PNG"),
            ("{out}/kaggle/manifest.csv", "fracture/film.webp,"),
            ("{out}/kaggle/prepare.json", '"source": "fracture/._gif_in_disguise.jpg"'),
        ),
        cwd=".",
    ),
    # `cd data && fracturekit audit .` on a raw dataset
    Case("audit-raw-dot", "audit .", says=("LEAKS",), cwd="data/my kaggle"),
    # `~` and a symlinked root (the shell does not expand ~ inside --out=...)
    Case("prepare-tilde-symlink", "prepare ~/link --out=~/out/tilde", leaves=("{out}/tilde/manifest.csv",)),
    # the preset pointed one folder too high: finds GRAZPEDWRI-DX/dataset.csv one level down and groups patients
    Case(
        "preset-one-level-high",
        "prepare {graz_holder} --preset grazpedwri-dx --out {out}/graz",
        says=("grouping: 8 of 8 films grouped (4 patient groups from GRAZPEDWRI-DX/dataset.csv)", "meta csv 8"),
        file_has=(("{out}/graz/prepare.json", '"meta_csv": 8'),),
    ),
    # the preset's CSV is nowhere: an error naming the way out, not a silent film-level split
    Case(
        "preset-csv-missing",
        "prepare {no_csv} --preset grazpedwri-dx --out {out}/nocsv",
        2,
        ("dataset.csv (patient ids) not found", "--film-split"),
        not_leaves=("{out}/nocsv",),
    ),
    # ... unless the user asks for a film-level split explicitly
    Case(
        "preset-film-split",
        "prepare {no_csv} --preset grazpedwri-dx --film-split --out {out}/filmsplit",
        says=("--film-split: patient keys not used",),
        leaves=("{out}/filmsplit/manifest.csv",),
    ),
    # a --meta CSV that names none of the films
    Case(
        "meta-not-joinable",
        "prepare {kaggle} --meta {graz_holder}/GRAZPEDWRI-DX/dataset.csv --out {out}/nojoin",
        2,
        ("none of the 14 films matches a row",),
    ),
    # a --meta CSV that does not exist
    Case("meta-missing", "prepare {kaggle} --meta nothing.csv --out {out}/nometa", 2, ("nothing.csv: no such file",)),
    # the raw dataset passed where a prepared one goes: prepare reads it (was "run prepare SOURCE --out <raw>",
    # which prepare refuses: --out inside the source)
    Case(
        "train-on-raw",
        "train --task classify --data {kaggle}",
        2,
        ("a raw dataset, not a prepared one", "fracturekit prepare"),
    ),
    Case("evaluate-on-raw-coco", "evaluate --data {raw} --classifier {clf}", 2, ("a raw dataset, not a prepared one",)),
    # a --group-regex that matches no film
    Case("regex-matches-nothing", "prepare {kaggle} --group-regex 'P(\\d+)_' --out {out}/re", 2, ("matches none",)),
]


@pytest.fixture(scope="module")
def flowed(world: dict[str, Path]) -> dict[str, Path]:
    """The world after the whole FLOW ran, step by step (a failing step fails every test using it)."""
    for case in FLOW:
        run_case(case, world)
    return world


def test_flow(flowed: dict[str, Path]) -> None:
    """prepare -> audit -> train -> evaluate -> predict -> export typed with relative paths all succeeded."""
    metrics = json.loads((flowed["out"] / "eval" / "metrics.json").read_text())
    assert {"classification", "detection"} <= set(metrics)
    run = json.loads((flowed["clf"] / "run.json").read_text())
    assert run["device"]["requested"] == "auto" and run["device"]["used"] in ("cpu", "mps", "0")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, flowed: dict[str, Path]) -> None:
    run_case(case, flowed)


def test_inference_on_two_gpus_says_it_uses_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--device 0,1` in evaluate/predict/export: the first GPU, with a note (no GPU here, so Device is faked)."""
    import fracturekit.core.options as options
    from fracturekit.core.device import Device

    monkeypatch.setattr(options, "resolve_device", lambda requested: Device("0,1", "cuda", "fake"))
    dev, torch_device, note = options.inference_device("0,1")
    assert (dev.gpus, torch_device) == ((0, 1), "cuda:0")
    assert note is not None and "GPU 0 is used" in note
