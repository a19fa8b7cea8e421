"""Outside models in `evaluate --scores`: a run's own scores written as a CSV / COCO results give the run's numbers,
and bad scores files are refused with one sentence (exit 2)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fracturekit.cli.app import app
from fracturekit.evaluate import evaluate

IGNORED = {"run", "outside"}  # where the numbers came from: a run folder vs the scores files, by design


def _numbers(section: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a metrics.json section, keyed by its path."""
    if isinstance(section, dict):
        return {
            k: v
            for key, val in section.items()
            if key not in IGNORED
            for k, v in _numbers(val, f"{prefix}/{key}").items()
        }
    if isinstance(section, list):
        return {k: v for i, val in enumerate(section) for k, v in _numbers(val, f"{prefix}[{i}]").items()}
    return {prefix: section}


def _assert_same(a: dict, b: dict, tol: float, skip: tuple[str, ...] = ()) -> None:
    na, nb = _numbers(a), _numbers(b)
    na = {k: v for k, v in na.items() if not k.startswith(skip)}
    nb = {k: v for k, v in nb.items() if not k.startswith(skip)}
    assert na.keys() == nb.keys()
    for k, v in na.items():
        if isinstance(v, float) and isinstance(nb[k], float):
            assert math.isclose(v, nb[k], rel_tol=0, abs_tol=tol), (k, v, nb[k])
        else:
            assert v == nb[k], (k, v, nb[k])


@pytest.fixture(scope="module")
def classifier_scores(prepared_phantoms: Path, tiny_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The tiny classifier evaluated directly, and its raw probabilities on val + test as a scores CSV."""
    from fracturekit.core.layout import PreparedDataset
    from fracturekit.evaluation.classification import classify_images
    from fracturekit.infer.model import load_model

    tmp = tmp_path_factory.mktemp("cls-scores")
    ds = PreparedDataset(prepared_phantoms)
    direct = evaluate(prepared_phantoms, classifier=tiny_runs["classify"], out=tmp / "direct", bootstrap=50)
    model = load_model(tiny_runs["classify"], "classify", None, device="cpu", backend="torch", with_metrics=False)
    names = [model.names[i] for i in sorted(model.names)]
    frames = []
    for split in ("val", "test"):
        paths, _, probs = classify_images(model, ds, split, [])
        frame = pd.DataFrame(probs, columns=names)
        frame.insert(0, "path", [str(p.relative_to(prepared_phantoms)) for p in paths])
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table.to_csv(tmp / "scores.csv", index=False)  # pandas writes floats with repr: they read back exactly
    return direct, table, tmp


def test_scores_csv_gives_the_runs_numbers(classifier_scores, prepared_phantoms: Path) -> None:  # noqa: ANN001
    direct, table, tmp = classifier_scores
    m = evaluate(prepared_phantoms, scores=[tmp / "scores.csv"], name="tiny", out=tmp / "outside", bootstrap=50)
    _assert_same(direct["classification"], m["classification"], 1e-9)
    assert m["classification"]["outside"]["name"] == "tiny"
    assert m["provenance"]["runs"]["classifier"]["scores"][0]["sha256"]
    assert m["provenance"]["train_overlap"] is None  # no --seen: not checked, and the report says so
    assert "--scores without --seen" in (tmp / "outside" / "report.html").read_text(encoding="utf-8")
    cases_a, cases_b = (pd.read_csv(tmp / d / "cases.csv") for d in ("direct", "outside"))
    cols = ["path", "kind", "score", "threshold"]
    pd.testing.assert_frame_equal(cases_a[cols], cases_b[cols])

    # the binary form, `score` = the fracture probability, is read as the columns (score, 1 - score); here with
    # manifest `source` names, val and test in two files
    manifest = pd.read_csv(prepared_phantoms / "manifest.csv", keep_default_na=False)
    source_of = dict(zip(manifest["output_cls"], manifest["source"], strict=True))
    split_of = dict(zip(manifest["output_cls"], manifest["split"], strict=True))
    binary = pd.DataFrame({"path": table["path"].map(source_of), "score": table["fracture"]})
    for split in ("val", "test"):
        binary[table["path"].map(split_of) == split].to_csv(tmp / f"{split}.csv", index=False)
    m2 = evaluate(prepared_phantoms, scores=[tmp / "val.csv", tmp / "test.csv"], out=tmp / "binary", bootstrap=50)
    columns = table.assign(no_fracture=1 - table["fracture"])
    columns.to_csv(tmp / "columns.csv", index=False)
    m3 = evaluate(prepared_phantoms, scores=[tmp / "columns.csv"], out=tmp / "columns", bootstrap=50)
    _assert_same(m3["classification"], m2["classification"], 1e-9)


@pytest.fixture(scope="module")
def detector_results(prepared_phantoms: Path, tiny_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """The tiny detector evaluated directly on test (and on val, for its boxes), its boxes as COCO results."""
    tmp = tmp_path_factory.mktemp("det-scores")
    direct = evaluate(prepared_phantoms, detector=tiny_runs["detect"], out=tmp / "direct", bootstrap=50)
    # val: the run validated on it, so only with allow_overlap; its boxes are what a detector would write for val
    evaluate(
        prepared_phantoms, detector=tiny_runs["detect"], split="val", out=tmp / "val", bootstrap=0, allow_overlap=True
    )
    results = []
    for folder, split in (("direct", "test"), ("val", "val")):
        gt = json.loads((tmp / folder / "ground_truth_coco.json").read_text())
        name_of = {im["id"]: im["file_name"] for im in gt["images"]}
        for i, d in enumerate(json.loads((tmp / folder / "detections_coco.json").read_text())):
            name = name_of[d.pop("image_id")]
            # both ways a detector names its film: the prepared file, or image_id = stem (Ultralytics' save_json)
            key = {"file_name": f"det/images/{split}/{name}"} if i % 2 else {"image_id": Path(name).stem}
            results.append({**key, **d})
    (tmp / "results.json").write_text(json.dumps(results))
    return direct, results, tmp


def test_coco_results_give_the_runs_map(detector_results, prepared_phantoms: Path) -> None:  # noqa: ANN001
    direct, _, tmp = detector_results
    m = evaluate(prepared_phantoms, scores=[tmp / "results.json"], out=tmp / "outside", bootstrap=50)
    d, o = direct["detection"], m["detection"]
    assert o["pycocotools"]["map50_95"] == pytest.approx(d["pycocotools"]["map50_95"], abs=1e-9)
    # Ultralytics val needs the weights: null for an outside model, everything else equal
    assert o["map50_95"] is None and o["map_difference"]["map50_95"] is None
    ultralytics = ("/map50", "/precision", "/recall", "/per_class_ap", "/val_settings", "/map_difference")
    _assert_same(d, o, 1e-9, skip=ultralytics)
    assert (tmp / "outside" / "report.html").is_file() and (tmp / "outside" / "cases.csv").is_file()


def _csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("path,score\n" + "".join(f"{p},{s}\n" for p, s in rows))
    return path


def _good_rows(prepared: Path) -> list[tuple[str, str]]:
    manifest = pd.read_csv(prepared / "manifest.csv", keep_default_na=False)
    films = manifest[manifest["split"].isin(["val", "test"]) & (manifest["output_cls"] != "")]
    rng = np.random.default_rng(0)
    return [(p, f"{s:.4f}") for p, s in zip(films["output_cls"], rng.uniform(0, 1, len(films)), strict=True)]


CLASSIFIER_CASES = [
    # (case, how the good rows are spoiled, words of the one sentence)
    ("missing", lambda r: r[1:], "have no score"),
    ("unknown", lambda r: [*r, ("elsewhere/x.png", "0.5"), ("y.png", "0.5")], "2 of "),
    ("duplicate", lambda r: [*r, r[0]], "more than one row"),
    ("NaN", lambda r: [(r[0][0], "nan"), *r[1:]], "no number"),
    ("empty", lambda r: [(r[0][0], ""), *r[1:]], "no number"),
    ("above 1", lambda r: [(r[0][0], "1.5"), *r[1:]], "outside [0, 1]"),
    ("below 0", lambda r: [(r[0][0], "-0.2"), *r[1:]], "outside [0, 1]"),
]


@pytest.mark.parametrize(("case", "spoil", "words"), CLASSIFIER_CASES, ids=[c[0] for c in CLASSIFIER_CASES])
def test_bad_scores_csv_one_sentence_exit_2(
    prepared_phantoms: Path, tmp_path: Path, case: str, spoil, words: str
) -> None:  # noqa: ANN001
    scores = _csv(tmp_path / "scores.csv", spoil(_good_rows(prepared_phantoms)))
    args = ["evaluate", "--data", str(prepared_phantoms), "--scores", str(scores), "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(app, args)
    text = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert words in text and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()  # refused before anything is written


DETECTOR_CASES = [
    ("unknown film", {"image_id": "no_such_film"}, "name films that are not in"),
    ("NaN score", {"score": float("nan")}, "(NaN)"),
    ("score above 1", {"score": 3.0}, "outside [0, 1]"),
    ("unknown class", {"category_id": 7}, "category_id 7"),
]


@pytest.mark.parametrize(("case", "change", "words"), DETECTOR_CASES, ids=[c[0] for c in DETECTOR_CASES])
def test_bad_coco_results_one_sentence_exit_2(
    detector_results,
    prepared_phantoms: Path,
    tmp_path: Path,
    case: str,
    change: dict,
    words: str,  # noqa: ANN001
) -> None:
    _, results, _ = detector_results
    bad = [{**results[0], **change}, *results[1:]]
    (tmp_path / "r.json").write_text(json.dumps(bad))  # NaN as JSON's NaN literal, as Python writes it
    res = CliRunner().invoke(app, ["evaluate", "--data", str(prepared_phantoms), "--scores", str(tmp_path / "r.json")])
    assert res.exit_code == 2, res.output
    assert words in " ".join(res.output.split()) and "Traceback" not in res.output


def test_seen_list_refuses_the_outside_models_training_films(classifier_scores, prepared_phantoms: Path) -> None:  # noqa: ANN001
    _, table, tmp = classifier_scores
    manifest = pd.read_csv(prepared_phantoms / "manifest.csv", keep_default_na=False)
    train = manifest[manifest["split"] == "train"]["source"].tolist()
    (tmp / "seen-train.txt").write_text("\n".join(train) + "\n")
    m = evaluate(prepared_phantoms, scores=[tmp / "scores.csv"], seen=tmp / "seen-train.txt", out=tmp / "seen-ok")
    assert m["provenance"]["train_overlap"] == 0 and m["provenance"]["runs"]["classifier"]["seen_checked"]

    test_film = table["path"].iloc[-1]  # a test film the outside model claims to have trained on
    (tmp / "seen-leak.txt").write_text("\n".join([*train, test_film]) + "\n")
    args = ["evaluate", "--data", str(prepared_phantoms), "--scores", str(tmp / "scores.csv")]
    res = CliRunner().invoke(app, [*args, "--seen", str(tmp / "seen-leak.txt"), "--out", str(tmp / "seen-bad")])
    assert res.exit_code == 2, res.output
    assert "the model whose training films" in " ".join(res.output.split())


def test_compare_says_whether_the_films_are_the_same(
    classifier_scores,
    detector_results,
    prepared_phantoms: Path,  # noqa: ANN001
) -> None:
    _, _, cls_tmp = classifier_scores
    _, _, det_tmp = detector_results
    evaluate(prepared_phantoms, scores=[cls_tmp / "scores.csv"], name="tiny", out=cls_tmp / "cmp", bootstrap=0)
    # a run's evaluation beside the outside model's: the same test films
    res = CliRunner().invoke(app, ["compare", str(cls_tmp / "direct"), str(cls_tmp / "cmp")])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "classify: the 2 models were scored on the same" in text and "tiny" in text
    # the detector's test evaluation beside its val one: different films, said as a warning
    res = CliRunner().invoke(app, ["compare", str(det_tmp / "direct"), str(det_tmp / "val")])
    assert res.exit_code == 0, res.output
    assert "scored on different films" in " ".join(res.output.split())
