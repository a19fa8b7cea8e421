"""fracturekit cv: grouped stratified folds, fold roles, out-of-fold pooling, resume, local == Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from fracturekit.cli.app import app
from fracturekit.core.errors import UserError
from fracturekit.core.layout import PreparedDataset, RunDir
from fracturekit.cv import assign_folds, build_fold_dataset, cross_validate, fold_units, roles
from fracturekit.cv.fold_plan import plan_folds
from fracturekit.evaluation.metrics import paired_auroc_test

runner = CliRunner()
F, N = "fracture", "no_fracture"


def _grouping(case: str) -> tuple[list[str], list[str], list[str], list[list[int]]]:
    """(labels, groups, clusters, index sets that must share a fold) for one tricky grouping."""
    rng = np.random.default_rng(7)
    n = 60
    labels = [F if i % 3 == 0 else N for i in range(n)]
    groups, clusters = [""] * n, [""] * n
    together: list[list[int]] = []
    if case == "patients":  # 20 patients of 3 films, labels mixed within a patient
        groups = [f"p{i // 3}" for i in range(n)]
        together = [[i, i + 1, i + 2] for i in range(0, n, 3)]
    elif case == "chain":  # patient A {0,1}, duplicate 1~2, patient B {2,3}, duplicate 3~4: one unit 0..4
        groups[0:2], groups[2:4] = ["A", "A"], ["B", "B"]
        clusters[1:3], clusters[3:5] = ["c1", "c1"], ["c2", "c2"]
        together = [[0, 1, 2, 3, 4]]
    elif case == "conflicting_duplicate":  # the same film labelled both ways stays in one fold
        clusters[0], clusters[1] = "c9", "c9"
        labels[0], labels[1] = F, N
        together = [[0, 1]]
    elif case == "big_patient":  # one patient with 12 of 60 films (a fifth of the data)
        groups[:12] = ["big"] * 12
        together = [list(range(12))]
    elif case == "random":  # random patients and random duplicate pairs across patients
        groups = [f"p{g}" for g in rng.integers(0, 25, n)]
        for k, (a, b) in enumerate(rng.choice(n, (6, 2), replace=False)):
            clusters[a] = clusters[b] = f"d{k}"
        together = [[i for i in range(n) if groups[i] == g] for g in set(groups)]
        together += [[i for i in range(n) if clusters[i] == c] for c in set(clusters) - {""}]
    return labels, groups, clusters, together


@pytest.mark.parametrize(
    "case",
    [
        "singletons",  # no group, no cluster: empty strings must not join all films into one unit
        "patients",
        "chain",
        "conflicting_duplicate",
        "big_patient",
        "random",
    ],
)
@pytest.mark.parametrize("k", [3, 5])
def test_folds_disjoint_and_grouped(case: str, k: int) -> None:
    labels, groups, clusters, together = _grouping(case)
    unit = fold_units(groups, clusters)
    fold = assign_folds(labels, unit, k, seed=0)
    assert set(fold.tolist()) == set(range(k))  # every film in exactly one fold, every fold used
    for idx in together:
        assert len({int(fold[i]) for i in idx}) == 1, f"{case}: {idx} spans folds {fold[idx]}"
    for f in range(k):  # stratified: both labels in every fold
        assert {labels[i] for i in np.flatnonzero(fold == f)} == {F, N}
    if case == "singletons":
        assert len(set(unit.tolist())) == len(labels)
        assert np.bincount(fold).max() - np.bincount(fold).min() <= 2  # equal folds, up to rounding


def test_folds_seeded() -> None:
    labels, groups, clusters, _ = _grouping("random")
    unit = fold_units(groups, clusters)
    a, b, c = (assign_folds(labels, unit, 5, seed=s) for s in (1, 1, 2))
    assert (a == b).all() and (a != c).any()


@pytest.mark.parametrize(
    ("labels", "groups", "k", "message"),
    [
        ([F, N] * 2, ["a", "a", "b", "b"], 3, "only 2 independent units"),  # 2 patients, 3 folds
        ([F] + [N] * 20, [""] * 21, 3, "gets no 'fracture' film"),  # one positive film for 3 folds
    ],
)
def test_impossible_folds_refused(labels: list[str], groups: list[str], k: int, message: str) -> None:
    with pytest.raises(UserError, match=message):
        assign_folds(labels, fold_units(groups, [""] * len(labels)), k, seed=0)


@pytest.mark.parametrize("k", range(3, 11))
def test_val_fold_is_never_the_test_fold(k: int) -> None:
    seen_val = []
    for f in range(k):
        r = roles(f, k)
        assert r["test"] == f and r["val"] != f and sorted([f, r["val"], *r["train"]]) == list(range(k))
        seen_val.append(r["val"])
    assert sorted(seen_val) == list(range(k))  # every fold validates exactly once


@pytest.mark.parametrize(
    ("a_scores", "significant"),
    [
        ("same", False),  # identical scorers: difference 0, p = 1
        ("perfect_vs_noise", True),  # a perfect scorer against a random one on 200 films
    ],
)
def test_paired_auroc_test(a_scores: str, significant: bool) -> None:
    rng = np.random.default_rng(0)
    y = np.array([1] * 80 + [0] * 120)
    b = rng.random(200)
    a = b.copy() if a_scores == "same" else y + 0.1 * rng.random(200)
    t = paired_auroc_test(y, a, b, n_boot=500, seed=0)
    assert t["auroc_a"] == pytest.approx(roc_auc_score(y, a)) and t["auroc_b"] == pytest.approx(roc_auc_score(y, b))
    assert t["significant"] is significant
    if significant:
        assert t["difference_ci95"][0] > 0 and t["p_value"] < 0.01
    else:
        assert t["difference"] == 0 and t["p_value"] == 1.0


# ------------------------------------------------------------------ end to end on phantoms

TINY: dict[str, Any] = {"epochs": 1, "imgsz": 32, "batch": 8, "threads": 1, "bootstrap": 200}
MODELS = ["n", "yolov8n-cls.yaml"]  # the same network twice: the comparison must find no difference


@pytest.fixture(scope="module")
def local_cv(prepared_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[str]]:
    """A 3-fold classify cv of two models on the 60 phantoms, run here one fold after another."""
    said: list[str] = []
    project = tmp_path_factory.mktemp("cv")
    result = cross_validate(
        "classify",
        prepared_phantoms,
        folds=3,
        models=MODELS,
        project=project,
        name="local",
        progress=said.append,
        **TINY,
    )
    return result, said


def test_outputs_and_oof_auroc_equals_sklearn(
    local_cv: tuple[dict[str, Any], list[str]], prepared_phantoms: Path
) -> None:
    result, _ = local_cv
    out = Path(result["out"])
    folds = pd.read_csv(out / "folds.csv", keep_default_na=False)
    manifest = pd.read_csv(prepared_phantoms / "manifest.csv", keep_default_na=False)
    assert list(folds.columns)[:5] == ["source", "fold", "label", "group", "cluster"]
    assert sorted(folds["source"]) == sorted(manifest.loc[manifest["status"] == "ok", "source"])
    oof = pd.read_csv(out / "oof_predictions.csv")
    assert list(oof.columns)[:5] == ["path", "label", "fold", "model", "score"]
    for model in result["models"]:
        part = oof[oof["model"] == model]
        assert sorted(part["source"]) == sorted(folds["source"])  # every film scored once, out of fold
        assert (part.set_index("source")["fold"] == folds.set_index("source")["fold"].loc[part["source"]]).all()
        expected = roc_auc_score(part["label"] == "fracture", part["score"])
        assert result["oof"][model]["auroc"] == pytest.approx(expected, abs=1e-12)
        lo, hi = result["oof"][model]["auroc_ci95"]
        assert lo <= expected <= hi
        per_fold = [f["auroc"] for f in result["folds"] if f["model"] == model]
        assert result["mean"][model]["auroc"] == pytest.approx(np.mean(per_fold))
        assert result["std"][model]["auroc"] == pytest.approx(np.std(per_fold, ddof=1))
    (cmp,) = result["comparison"]
    assert cmp["difference"] == pytest.approx(0.0) and cmp["significant"] is False
    assert json.loads((out / "cv.json").read_text())["status"] == "finished"
    assert "pooled out-of-fold" in (out / "report.html").read_text()


def test_oof_scores_feed_label_issues(local_cv: tuple[dict[str, Any], list[str]], prepared_phantoms: Path) -> None:
    """The command cv prints next reads cv's own oof_predictions.csv: every film scored, the first model used."""
    result, _ = local_cv
    oof = Path(result["out"]) / "oof_predictions.csv"
    audit = Path(result["out"]) / "label-audit"
    res = runner.invoke(app, ["audit", str(prepared_phantoms), "--out", str(audit), "--label-issues"]
                        + ["--scores", str(oof)])  # fmt: skip
    assert res.exit_code == 0, res.output
    ok = pd.read_csv(prepared_phantoms / "manifest.csv", keep_default_na=False).query("status == 'ok'")
    assert f"{len(ok)} scored" in res.output and "holds 2 models" in res.output
    rows = pd.read_csv(audit / "label_issues.csv", keep_default_na=False)
    assert set(rows["source"]) <= set(ok["source"]) and list(rows["rank"]) == list(range(1, len(rows) + 1))
    assert (rows["suggested_label"] != rows["given_label"]).all()


def test_fold_roles_and_links(local_cv: tuple[dict[str, Any], list[str]]) -> None:
    """Each fold dataset tests fold k, validates on another fold, trains on the rest, and links (not copies) films."""
    result, _ = local_cv
    out = Path(result["out"])
    fold_of = pd.read_csv(out / "folds.csv", keep_default_na=False).set_index("source")["fold"]
    for k in range(3):
        data = out / "data" / f"fold{k}"
        m = pd.read_csv(data / "manifest.csv", keep_default_na=False)
        films_fold = m["source"].map(fold_of)
        test, val = set(films_fold[m["split"] == "test"]), set(films_fold[m["split"] == "val"])
        train = set(films_fold[m["split"] == "train"])
        assert test == {k} and len(val) == 1 and val != test and not train & (test | val)
        assert all((data / p).is_symlink() for p in m["output_cls"])
        assert (data / "signatures.npz").is_symlink()  # prepare's signatures: the fold's train signs no film
        for model in MODELS:
            run = RunDir.find(out / f"fold{k}-{Path(model).stem}")  # an ordinary run folder
            assert run.best.is_file() and run.metrics.is_file()


def test_fold_datasets_keep_the_pixel_options(phantom_coco: Path, prepared_phantoms: Path, tmp_path: Path) -> None:
    """A fold of a dataset prepared with --clahe is a version of its own, as that dataset is: same films, labels
    and folds as the fold of the plain dataset, another data_hash (a model of one is not the other's)."""
    from fracturekit.prepare import prepare

    clahe = prepare(phantom_coco, tmp_path / "clahe", split=(0.6, 0.2, 0.2), seed=0, clahe=True).dataset
    summaries = {}
    for name, ds in (("plain", PreparedDataset(prepared_phantoms)), ("clahe", clahe)):
        films, _, _ = plan_folds(ds, "classify", 3, 0)
        fold = build_fold_dataset(ds, films, "classify", 0, 3, tmp_path / name / "fold0")
        summaries[name] = json.loads((fold / "prepare.json").read_text())
        summaries[name]["films"] = films[["sha256", "label", "fold"]].sort_values("sha256").to_numpy().tolist()
    plain, other = summaries["plain"], summaries["clahe"]
    assert plain["pixels"] is None and other["pixels"] == "clahe"
    assert plain["films"] == other["films"] and plain["per_split"] == other["per_split"]
    assert plain["data_hash"] != other["data_hash"]


def test_rerun_resumes_and_other_settings_refused(
    local_cv: tuple[dict[str, Any], list[str]], prepared_phantoms: Path
) -> None:
    """An interrupted fold (no cv_fold.json: killed after training) is trained again, the finished ones reused."""
    result, _ = local_cv
    out = Path(result["out"])
    (out / "fold2-n" / "cv_fold.json").unlink()
    said: list[str] = []
    same = {"folds": 3, "models": MODELS, "project": out.parents[1], "name": "local"}
    again = cross_validate("classify", prepared_phantoms, progress=said.append, **same, **TINY)
    assert sum("finished earlier, reused" in s for s in said) == 5
    assert sum("fold 2 model n" in s and "trained in" in s for s in said) == 1
    assert again["oof"] == result["oof"] and again["folds"] == result["folds"]  # seeded: the same numbers again
    with pytest.raises(UserError, match="other settings"):
        cross_validate("classify", prepared_phantoms, **same, **{**TINY, "epochs": 2})


def test_cli_resumes_and_prints_table(local_cv: tuple[dict[str, Any], list[str]], prepared_phantoms: Path) -> None:
    result, _ = local_cv
    out = Path(result["out"])
    args = ["cv", "--task", "classify", "--data", str(prepared_phantoms), "--folds", "3", "--model", ",".join(MODELS)]
    args += ["--project", str(out.parents[1]), "--name", "local", "--epochs", "1", "--imgsz", "32", "--batch", "8"]
    args += ["--threads", "1", "--bootstrap", "200"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())  # rich wraps long lines at the console width
    assert "mean ± sd" in text and "pooled out-of-fold" in text and "not significant" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--folds", "2"], "at least 3"),  # no fold left to train on
        (["--executor", "dask"], "use local or ray"),
        (["--parallel", "0"], "1 or more"),
        (["--threshold", "high"], "--threshold high"),
        (["--set", "nonsense=1"], "unknown key"),
    ],
)
def test_cli_bad_options_exit_2(prepared_phantoms: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    r = runner.invoke(
        app, ["cv", "--task", "classify", "--data", str(prepared_phantoms), "--project", str(tmp_path), *extra]
    )
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "cv").exists()  # refused before anything is written


@pytest.mark.slow  # a Ray instance and 3 trainings: about 2 minutes on an idle 2-core machine; `make test` runs it
def test_ray_gives_the_same_folds_and_numbers(
    local_cv: tuple[dict[str, Any], list[str]], prepared_phantoms: Path, tmp_path: Path
) -> None:
    """Two folds at a time as Ray tasks on a local Ray instance, one thread each, like the local run."""
    pytest.importorskip("ray")
    result, _ = local_cv
    ray_result = cross_validate(
        "classify",
        prepared_phantoms,
        folds=3,
        models=MODELS[:1],
        project=tmp_path,
        name="ray",
        executor="ray",
        parallel=2,
        **TINY,
    )
    local_out, ray_out = Path(result["out"]), Path(ray_result["out"])
    assert (local_out / "folds.csv").read_text() == (ray_out / "folds.csv").read_text()
    local_oof = pd.read_csv(local_out / "oof_predictions.csv")
    local_oof = local_oof[local_oof["model"] == "n"].reset_index(drop=True)
    ray_oof = pd.read_csv(ray_out / "oof_predictions.csv")
    pd.testing.assert_frame_equal(local_oof, ray_oof)
    assert ray_result["oof"]["n"] == result["oof"]["n"]


@pytest.mark.slow  # 3 detector trainings: about a minute on an idle 2-core machine
def test_detect_cv(prepared_phantoms: Path, tmp_path: Path) -> None:
    """Detection folds: det/ links (labels found beside the linked images), mAP per fold, image-level OOF AUROC."""
    result = cross_validate("detect", prepared_phantoms, folds=3, project=tmp_path, name="det", **TINY)
    out = Path(result["out"])
    m = pd.read_csv(out / "data" / "fold0" / "manifest.csv", keep_default_na=False)
    assert all((out / "data" / "fold0" / p).is_symlink() for p in [*m["output_det"], *m["label_file"]])
    assert all(0 <= f["map50_95"] <= 1 and f["n"] > 0 for f in result["folds"])
    oof = pd.read_csv(out / "oof_predictions.csv")
    assert len(oof) == len(m)
    assert result["oof"]["n"]["auroc"] == pytest.approx(roc_auc_score(oof["label"] == "fracture", oof["score"]))
