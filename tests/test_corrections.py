"""`prepare --corrections`: a review's decisions relabel, exclude and take films out of detection, on the record."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fracturekit.cli.app import app
from fracturekit.data.hashing import file_sha256
from fracturekit.review.decisions import DecisionLog

runner = CliRunner()


def _manifest(data: Path) -> dict[str, dict[str, str]]:
    with (data / "manifest.csv").open(newline="") as f:
        return {r["source"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def before(phantom_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("before") / "ds"
    assert runner.invoke(app, ["prepare", str(phantom_coco), "--out", str(out)]).exit_code == 0
    return out


def test_decisions_applied_and_recorded(phantom_coco: Path, before: Path, tmp_path: Path) -> None:
    rows = _manifest(before)
    fractured = sorted(s for s, r in rows.items() if r["label"] == "fracture")
    normal = sorted(s for s, r in rows.items() if r["label"] == "no_fracture")
    log = DecisionLog(tmp_path / "decisions.csv")
    log.append(fractured[0], "exclude", "ann")  # overridden by the later row for the same film
    log.append(fractured[0], "no_fracture", "ann")  # -> background image in det/
    log.append(normal[0], "fracture", "ann")  # no box to learn from -> out of det/
    log.append(normal[1], "exclude", "ann", "not a radiograph")
    log.append(fractured[1], "box_wrong", "ann")  # label kept, out of det/ only
    log.append(fractured[2], "fracture", "ann")  # agrees with the label: confirmed, nothing changes
    log.append(fractured[3], "note", "bob", "check the ulna")  # a remark only
    out = tmp_path / "after"
    res = runner.invoke(app, ["prepare", str(phantom_coco), "--out", str(out), "--corrections", str(log.path)])
    assert res.exit_code == 0, res.output
    assert "1 excluded, 1 out of detection (box wrong), 1 confirmed, 1 notes" in res.output
    assert "2 relabelled" in res.output
    after = _manifest(out)
    # a table of what each decision did: (label, corrected_from, decision, status, in det/, boxes)
    expected = {
        fractured[0]: ("no_fracture", "fracture", "no_fracture", "ok", True, "[]"),
        normal[0]: ("fracture", "no_fracture", "fracture", "ok", False, ""),
        normal[1]: ("no_fracture", "", "exclude", "skipped", False, "[]"),  # decoded and split, then left out
        fractured[1]: ("fracture", "", "box_wrong", "ok", False, ""),
        fractured[2]: ("fracture", "", "fracture", "ok", True, rows[fractured[2]]["boxes"]),
        fractured[3]: ("fracture", "", "", "ok", True, rows[fractured[3]]["boxes"]),
    }
    for source, (label, old, decision, status, in_det, boxes) in expected.items():
        r = after[source]
        got = (r["label"], r["corrected_from"], r["decision"], r["status"], bool(r["output_det"]), r["boxes"])
        assert got == (label, old, decision, status, in_det, boxes), source
    assert after[normal[1]]["reason"] == "excluded by review (--corrections)"
    # the split is the one without corrections: every film not excluded keeps it
    assert all(after[s]["split"] == rows[s]["split"] for s in rows if s != normal[1])
    untouched = set(rows) - set(expected)
    assert all(after[s]["label"] == rows[s]["label"] and not after[s]["decision"] for s in untouched)

    summary = json.loads((out / "prepare.json").read_text())
    assert summary["corrections"] == {
        "file": str(log.path),
        "sha256": file_sha256(log.path),
        "rows": 7,
        "films": 5,  # with a decision; the note alone changes nothing
        "notes": 1,
        "relabelled": 2,
        "confirmed": 1,
        "excluded": 1,
        "box_wrong": 1,
        "not_applied": 0,
    }
    assert summary["data_hash"] != json.loads((before / "prepare.json").read_text())["data_hash"]


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        # films the file names that SOURCE lacks are listed, not dropped
        (["images/nowhere.png,exclude", "other/x.png,fracture"], "2 film(s) are not in"),
        # a decision this version does not know, with its line
        (["{film},delete"], "line 2: unknown decision 'delete'"),
    ],
)
def test_bad_decisions_stop_prepare(
    phantom_coco: Path, before: Path, tmp_path: Path, lines: list[str], says: str
) -> None:
    film = next(iter(_manifest(before)))
    bad = tmp_path / "decisions.csv"
    bad.write_text("path,decision\n" + "".join(line.format(film=film) + "\n" for line in lines))
    res = runner.invoke(app, ["prepare", str(phantom_coco), "--out", str(tmp_path / "o"), "--corrections", str(bad)])
    assert res.exit_code == 2 and says in res.output, res.output
    assert "images/nowhere.png" in res.output or "nowhere" not in lines[0]
    assert not (tmp_path / "o").exists()
