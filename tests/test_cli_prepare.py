"""CLI `prepare` and `audit`: exit codes, options, printed summary."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from fracturekit.cli.app import app
from fracturekit.cli.prepare import parse_mapping
from fracturekit.core.errors import UserError
from fracturekit.data.phantoms import generate_phantom

runner = CliRunner()


def _leaky(root: Path) -> Path:
    """train/test class folders where one test film is a mirrored copy of a train film."""
    for s, base in (("train", 0), ("test", 50)):
        for cls in ("broken", "intact"):
            (root / s / cls).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                img = generate_phantom(seed=9, index=base + i + (cls == "intact") * 10, size=64).image
                cv2.imwrite(str(root / s / cls / f"{s}{cls}{i}.png"), img)
    mirrored = cv2.imread(str(root / "train/broken/trainbroken0.png"), 0)[:, ::-1]
    cv2.imwrite(str(root / "test/broken/copy.png"), mirrored)
    return root


def test_audit_strict_exit_codes(tmp_path: Path) -> None:
    src = _leaky(tmp_path / "raw")
    loose = runner.invoke(app, ["audit", str(src), "--out", str(tmp_path / "a")])
    strict = runner.invoke(app, ["audit", str(src), "--strict"])
    assert loose.exit_code == 0 and "LEAKS" in loose.output
    assert strict.exit_code == 1 and "1 leaks across splits" in strict.output
    assert json.loads((tmp_path / "a" / "audit.json").read_text())["leaks"] == 1


def test_prepare_then_strict_audit_is_clean(tmp_path: Path, no_network: list[str]) -> None:
    src = _leaky(tmp_path / "raw")
    out = tmp_path / "ds"
    res = runner.invoke(
        app,
        [
            "prepare",
            str(src),
            "--out",
            str(out),
            "--split",
            "0.5,0.25,0.25",
            "--seed",
            "2",
            "--map",
            "broken=fracture,intact=no_fracture",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "prepared 13 of 13 images (folders)" in res.output
    summary = json.loads((out / "prepare.json").read_text())
    assert set(summary["per_split"]["train"]) == {"fracture", "no_fracture"}
    assert runner.invoke(app, ["audit", str(out), "--strict"]).exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prepare", "/nonexistent/raw"], "no such folder"),  # wrong path
        (["prepare", "{src}", "--format", "nifti"], "unknown format"),  # unknown format
        (["prepare", "{src}", "--split", "0.8,0.3"], "split (0.8, 0.3)"),  # two fractions only
        (["prepare", "{src}", "--map", "fractured"], "--map"),  # malformed mapping
        # a key that names no class (a typo of `broken`): it changed nothing, in silence
        (["prepare", "{src}", "--map", "brokn=fracture"], "--map brokn=fracture: changed nothing"),
        # one right key does not excuse the wrong one
        (["prepare", "{src}", "--map", "broken=fracture,intakt=no_fracture"], "is 'intakt'; its classes after --map"),
        (["audit", "/nonexistent/raw"], "no such file"),  # wrong audit path
    ],
)
def test_user_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    src = _leaky(tmp_path / "raw")
    res = runner.invoke(
        app, [a.replace("{src}", str(src)) for a in args] + ["--out", str(tmp_path / "o")] * (args[0] == "prepare")
    )
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output


def test_audit_out_is_an_output_folder_like_any_other(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`audit --out DIR` typed twice is refused, --exist-ok replaces what audit wrote there, and a user's own file
    of the same name is never written over (it was, silently); the dataset's own audit/ is still rewritten."""
    monkeypatch.chdir(tmp_path)
    _leaky(Path("raw"))
    first = runner.invoke(app, ["audit", "raw", "--out", "a"])
    assert first.exit_code == 0, first.output
    (Path("a") / "mine.txt").write_text("my notes")
    again = runner.invoke(app, ["audit", "raw", "--out", "a"])  # the same command, typed again
    assert again.exit_code == 2 and "/a already holds files" in again.output and "--exist-ok" in again.output
    replaced = runner.invoke(app, ["audit", "raw", "--out", "a", "--exist-ok", "--label-issues"])
    assert replaced.exit_code == 0, replaced.output
    assert (Path("a") / "label_issues.csv").is_file() and (Path("a") / "mine.txt").read_text() == "my notes"
    # a folder of the user's that holds a duplicates.csv of theirs: refused, with and without --exist-ok
    Path("mine").mkdir()
    (Path("mine") / "duplicates.csv").write_text("my own table")
    for extra in ([], ["--exist-ok"]):
        res = runner.invoke(app, ["audit", "raw", "--out", "mine", *extra])
        assert res.exit_code == 2 and "mine" in res.output, res.output
        assert (Path("mine") / "duplicates.csv").read_text() == "my own table"
    assert sorted(p.name for p in Path("mine").iterdir()) == ["duplicates.csv"]  # no record, no lock left
    # a prepared dataset's own audit/ (prepare wrote it): `audit DS` and `audit DS --out DS/audit` rewrite it
    assert runner.invoke(app, ["prepare", "raw", "--out", "ds", "--split", "0.5,0.25,0.25"]).exit_code == 0
    for extra in ([], ["--out", "ds/audit"], ["--out", "./ds/audit/"]):
        res = runner.invoke(app, ["audit", "ds", *extra])
        assert res.exit_code == 0 and "wrote" in res.output, res.output


def test_parse_mapping() -> None:
    assert parse_mapping("Fractured=fracture, normal = no_fracture") == {
        "Fractured": "fracture",
        "normal": "no_fracture",
    }
    assert parse_mapping(None) is None
    with pytest.raises(UserError):
        parse_mapping("a=")


def test_brackets_in_names_are_printed_as_typed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Paths and class names holding [...] print as typed: the CLI's consoles read no Rich markup in them."""
    monkeypatch.chdir(tmp_path)
    src = _leaky(Path("raw"))
    (src / "train" / "broken").rename(src / "train" / "frac[1]")
    (src / "test" / "broken").rename(src / "test" / "frac[1]")
    audit = runner.invoke(app, ["audit", "raw", "--out", "a[b]"])
    assert audit.exit_code == 0, audit.output
    assert "wrote a[b]/duplicates.csv and a[b]/audit.json" in audit.output  # was "wrote a/duplicates.csv"
    assert "copy.png[test:frac[1]]" in audit.output  # the audit table's examples: name[split:label]
    prep = runner.invoke(app, ["prepare", "raw", "--out", "ds[x]", "--split", "0.5,0.25,0.25"])
    assert prep.exit_code == 0, prep.output
    assert "frac[1]" in prep.output and "/ds[x] in " in prep.output
    refused = runner.invoke(app, ["prepare", "raw", "--out", "ds[x]"])  # the folder exists: a user error
    assert refused.exit_code == 2 and "ds[x]" in refused.output, refused.output
