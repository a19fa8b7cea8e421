"""`audit --label-issues`: flipped labels found from out-of-sample scores, mixed-label copies found as conflicts."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fracturekit.cli.app import app
from fracturekit.data.phantoms import write_phantom_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from label_noise import flipped, simulated_scores  # noqa: E402

runner = CliRunner()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def flipped_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str], dict[str, int]]:
    """200 phantoms in class folders, 10 moved to the other class folder (seed 3), prepared.

    Returns (prepared dataset, manifest `source` of the flipped films, true label per `source`).
    """
    raw = write_phantom_dataset(tmp_path_factory.mktemp("raw") / "flip", n=200, seed=3, size=48, fmt="folders")
    films = sorted(p for p in raw.rglob("*.png"))
    classes = sorted({p.parent.name for p in films})
    truth = {p.relative_to(raw).as_posix(): int(p.parent.name == "fracture") for p in films}
    assert classes == ["fracture", "no_fracture"] and 60 < sum(truth.values()) < 140
    moved = set()
    for k in flipped(len(films), 10, np.random.default_rng(3)):
        src = films[k]
        dst = raw / next(c for c in classes if c != src.parent.name) / src.name
        shutil.move(src, dst)
        rel = dst.relative_to(raw).as_posix()
        truth[rel] = truth.pop(src.relative_to(raw).as_posix())
        moved.add(rel)
    out = tmp_path_factory.mktemp("prepared") / "flip"
    res = runner.invoke(app, ["prepare", str(raw), "--out", str(out), "--film-split"])
    assert res.exit_code == 0, res.output
    return out, moved, truth


@pytest.mark.parametrize(
    ("auroc", "at_least"),
    [
        (0.99, 7),  # a model that separates the classes: the issue's bar, 7 of the 10 flipped in the top 15
        (0.5, 0),  # a model at chance finds them only by luck: the ranking is the scores' doing, not the labels'
    ],
)
def test_flipped_labels_rank_at_the_top(
    flipped_dataset: tuple[Path, set[str], dict[str, int]], tmp_path: Path, auroc: float, at_least: int
) -> None:
    data, moved, truth = flipped_dataset
    sources = sorted(truth)
    s = simulated_scores(np.array([truth[p] for p in sources]), auroc, np.random.default_rng(11))
    scores = tmp_path / "scores.csv"
    scores.write_text("path,score\n" + "".join(f"{p},{v:.6f}\n" for p, v in zip(sources, s, strict=True)))
    res = runner.invoke(app, ["audit", str(data), "--label-issues", "--scores", str(scores)])
    assert res.exit_code == 0, res.output
    assert "label issues:" in res.output and "200 scored" in res.output
    rows = _rows(data / "audit" / "label_issues.csv")
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    assert all(r["suggested_label"] != r["given_label"] for r in rows)
    found = len({r["source"] for r in rows[:15]} & moved)
    if at_least:
        assert found >= at_least, (found, [(r["source"], r["score"]) for r in rows[:15]])
    else:
        assert found <= 5  # chance would put 15 x 10/200 = 0.75 flipped films in the top 15


def test_multiclass_scores_and_bad_scores(flipped_dataset: tuple[Path, set[str], dict[str, int]], tmp_path: Path):
    data, moved, truth = flipped_dataset
    sources = sorted(truth)
    s = simulated_scores(np.array([truth[p] for p in sources]), 0.99, np.random.default_rng(11))
    # one column per class: the path cleanlab takes for any number of classes
    per_class = tmp_path / "per_class.csv"
    per_class.write_text(
        "path,fracture,no_fracture\n" + "".join(f"{p},{v:.6f},{1 - v:.6f}\n" for p, v in zip(sources, s, strict=True))
    )
    res = runner.invoke(app, ["audit", str(data), "--label-issues", "--scores", str(per_class)])
    assert res.exit_code == 0, res.output
    assert len({r["source"] for r in _rows(data / "audit" / "label_issues.csv")[:15]} & moved) >= 7
    for text, words in [
        ("path,score\nnowhere.png,0.5\n", "none of its 1 films"),  # films named that the dataset lacks
        ("path,prob\n" + f"{sources[0]},0.5\n", "needs a `score` column"),  # no score column
        ("path,score\n" + f"{sources[0]},high\n", "not a number"),
        ("path,score\n" + f"{sources[0]},1.5\n", "probabilities in [0, 1]"),
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        res = runner.invoke(app, ["audit", str(data), "--label-issues", "--scores", str(bad)])
        assert res.exit_code == 2 and words in res.output, res.output
        assert "duplicates.csv" not in res.output  # refused before the audit ran and wrote
    res = runner.invoke(app, ["audit", str(data), "--scores", str(per_class)])
    assert res.exit_code == 2 and "add --label-issues" in res.output


def test_scores_without_cleanlab_are_refused_before_the_audit(
    flipped_dataset: tuple[Path, set[str], dict[str, int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cleanlab absent (a None module makes its import fail): one sentence naming the extra, exit 2, nothing audited
    data, _, truth = flipped_dataset
    scores = tmp_path / "scores.csv"
    scores.write_text("path,score\n" + "".join(f"{p},0.5\n" for p in sorted(truth)))
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
    res = runner.invoke(app, ["audit", str(data), "--label-issues", "--scores", str(scores)])
    assert res.exit_code == 2 and "pip install 'fracturekit[labels]'" in res.output, res.output
    assert "duplicates.csv" not in res.output


def test_conflicts_flag_the_minority_and_both_films_of_a_tie(tmp_path: Path) -> None:
    raw = write_phantom_dataset(tmp_path / "raw", n=8, seed=5, size=48, fmt="folders")
    films = {p.name: p for p in raw.rglob("*.png")}
    by_class = {c: sorted(n for n, p in films.items() if p.parent.name == c) for c in ("fracture", "no_fracture")}
    a, b = by_class["fracture"][0], by_class["no_fracture"][0]
    # a: one fractured film copied twice as not fractured -> 2 against 1, the fractured original is flagged
    shutil.copy(films[a], raw / "no_fracture" / "copy_a1.png")
    shutil.copy(films[a], raw / "no_fracture" / "copy_a2.png")
    # b: a not-fractured film copied once as fractured -> 1 against 1, both flagged
    shutil.copy(films[b], raw / "fracture" / "copy_b.png")
    res = runner.invoke(app, ["audit", str(raw), "--label-issues"])
    assert res.exit_code == 2 and "pass --out DIR" in res.output  # never written into the raw source
    res = runner.invoke(app, ["audit", str(raw), "--label-issues", "--out", str(tmp_path / "audit")])
    assert res.exit_code == 0, res.output
    assert "label issues: 3 films (3 conflict, 0 model, 0 box)" in res.output
    rows = {Path(r["path"]).name: r for r in _rows(tmp_path / "audit" / "label_issues.csv")}
    assert set(rows) == {a, b, "copy_b.png"}
    assert rows[a]["suggested_label"] == "no_fracture" and rows[a]["score"] == "0.6667" and rows[a]["rank"] == "1"
    assert rows[b]["suggested_label"] == "fracture" and rows[b]["score"] == "0.5000"
    assert rows["copy_b.png"]["suggested_label"] == "no_fracture" and rows[a]["link"] == "exact"


def test_detector_boxes_against_ground_truth(prepared_phantoms: Path, tmp_path: Path) -> None:
    """`box`: rows with `boxes` and `gt_boxes` (evaluate's predictions.csv detector rows) flag disagreeing films."""
    manifest = _rows(prepared_phantoms / "manifest.csv")
    fractured = [r for r in manifest if r["label"] == "fracture" and r["output_det"]]
    normal = [r for r in manifest if r["label"] == "no_fracture" and r["output_det"]]

    def gt(r: dict[str, str]) -> list[dict[str, float]]:
        return [dict(zip(("x1", "y1", "x2", "y2"), b[1:5], strict=True)) for b in json.loads(r["boxes"])]

    def box(x1: float, y1: float, x2: float, y2: float, conf: float) -> dict[str, float]:
        return {"x1": x1, "y1": y1, "x2": x2, "y2": y2, "confidence": conf, "class": "fracture"}

    far = gt(fractured[0])[0]
    away = box(0, 0, 2, 2, 0.8) if far["x1"] > 3 and far["y1"] > 3 else box(60, 60, 63, 63, 0.8)
    cases = [
        (fractured[0], [away], "box"),  # confident, but nowhere near the fracture: flagged
        (fractured[1], [box(*gt(fractured[1])[0].values(), 0.9)], None),  # on the fracture: fine
        (fractured[2], [], None),  # nothing found: a miss is the model reason's business, not a box issue
        (normal[0], [box(10, 10, 20, 20, 0.7)], "box"),  # a box on a film without fracture: flagged
        (normal[1], [], None),
    ]
    scores = tmp_path / "predictions.csv"
    with scores.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "model", "score", "boxes", "gt_boxes"])
        for r, boxes, _ in cases:
            top = max([b["confidence"] for b in boxes], default=0.01)
            w.writerow([r["output_det"], "detector", top, json.dumps(boxes), json.dumps(gt(r))])
    res = runner.invoke(app, ["audit", str(prepared_phantoms), "--out", str(tmp_path / "a"), "--label-issues"]
                        + ["--scores", str(scores)])  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = {r["source"]: r for r in _rows(tmp_path / "a" / "label_issues.csv")}
    for r, _, reason in cases:
        got = rows.get(r["source"], {}).get("reason", "")
        assert ("box" in got) == (reason == "box"), (r["source"], got)
    assert rows[normal[0]["source"]]["suggested_label"] == "fracture"
    assert rows[fractured[0]["source"]]["score"] == "0.8000"


F, N = "fracture", "no_fracture"


@pytest.mark.parametrize(
    ("members", "flagged"),
    [
        # (label, link kind, carries a box) per film -> {film index: (suggested, score)}
        ([(F, "exact", False), (N, "exact", False), (N, "exact", False)], {0: (N, 0.6667)}),  # plain majority
        ([(F, "exact", False), (N, "exact", False)], {0: (N, 0.5), 1: (F, 0.5)}),  # a tie flags both
        # two augmented copies (half a vote each) against one pixel copy: a tie, not a 2-to-1 majority
        ([(F, "exact", False), (F, "exact", False), (N, "augmented", False), (N, "augmented", False)],
         {2: (F, 0.6667), 3: (F, 0.6667)}),
        ([(F, "near", False), (N, "name", False), (N, "name", False), (N, "exact", False)], {0: (N, 0.6667)}),
        ([(F, "exact", False), (N, "augmented", False), (N, "augmented", False)], {0: (N, 0.5), 1: (F, 0.5),
                                                                                    2: (F, 0.5)}),
        # FracAtlas' pattern: a boxed fracture and three unboxed copies in the no-fracture folder: the box decides
        ([(F, "exact", True), (N, "exact", False), (N, "exact", False), (N, "near", False)],
         {1: (F, 1.0), 2: (F, 1.0), 3: (F, 1.0)}),
        # boxes on both sides: only the boxed films vote, a tie whatever the unboxed films say, so all are flagged
        ([(F, "exact", True), (N, "exact", True), (N, "exact", False), (N, "exact", False)],
         {0: (N, 0.5), 1: (F, 0.5), 2: (F, 0.5), 3: (F, 0.5)}),
    ],
)  # fmt: skip
def test_conflicts_weigh_links_and_boxes(members: list[tuple[str, str, bool]], flagged: dict[int, tuple[str, float]]):
    from fracturekit.audit import AuditResult, ClusterMember, DuplicateCluster
    from fracturekit.data.label_issues import Film, conflict_issues

    films = [Film(f"f{i}.png", f"src/f{i}.png", label, boxed=boxed) for i, (label, _, boxed) in enumerate(members)]
    cluster = DuplicateCluster(
        1, [ClusterMember(f.path, "train", f.label, m[1]) for f, m in zip(films, members, strict=True)]
    )
    found = conflict_issues(films, AuditResult(len(films), 10, [cluster], [1]))
    got = {int(p[1:-4]): (i.suggested, round(i.score, 4)) for p, i in found.items()}
    assert got == flagged
