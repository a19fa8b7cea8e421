"""Threshold and temperature come from validation only; evaluate() rejects bad input with one sentence."""

from __future__ import annotations

import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fracturekit.core.errors import UserError
from fracturekit.core.layout import PreparedDataset
from fracturekit.evaluate import classification_report, coco_ground_truth
from fracturekit.evaluation import metrics as M
from fracturekit.evaluation.calibration import apply_temperature
from fracturekit.infer import scoring
from fracturekit.infer.scoring import Prediction

NAMES = ["fracture", "no_fracture"]  # Ultralytics order (sorted folders): positive class at index 0


def _probs(p_fracture: np.ndarray) -> np.ndarray:
    return np.stack([p_fracture, 1 - p_fracture], axis=1)


def _val_and_test(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Val separates at ~0.3; test positives sit above 0.85 with many negatives in between.

    A threshold tuned on test would sit near 0.85 (specificity 1); the val threshold (~0.3) must
    instead flag test negatives above it as false positives.
    """
    rng = np.random.default_rng(seed)
    y_val = np.array([0] * 30 + [1] * 30)  # 0 = fracture (positive), 1 = no_fracture
    p_val = np.concatenate([rng.uniform(0.3, 0.5, 30), rng.uniform(0.0, 0.25, 30)])
    y_test = np.array([0] * 20 + [1] * 40)
    p_test = np.concatenate([rng.uniform(0.86, 0.99, 20), rng.uniform(0.0, 0.8, 40)])
    return y_val, _probs(p_val), y_test, _probs(p_test)


@pytest.mark.parametrize("method", ["youden", "f1", "sens:0.95"])  # every data-driven rule
def test_threshold_taken_from_validation_not_test(method: str) -> None:
    y_val, p_val, y_test, p_test = _val_and_test()
    m, _ = classification_report(NAMES, y_val, p_val, y_test, p_test, method, n_boot=0, seed=0)
    cal_val = apply_temperature(p_val, m["temperature"])[:, 0]
    assert m["threshold"] == pytest.approx(M.choose_threshold((y_val == 0).astype(int), cal_val, method))
    # Had test labels been used, this split is perfectly separable: specificity would be 1.
    assert m["specificity"] < 0.9
    assert m["sensitivity"] == 1.0
    # Shuffling the test labels must not move the threshold or the temperature.
    shuffled = np.random.default_rng(1).permutation(y_test)
    m2, _ = classification_report(NAMES, y_val, p_val, shuffled, p_test, method, n_boot=0, seed=0)
    assert (m2["threshold"], m2["temperature"]) == (m["threshold"], m["temperature"])


def test_classification_report_keys() -> None:
    y_val, p_val, y_test, p_test = _val_and_test()
    m, cal = classification_report(NAMES, y_val, p_val, y_test, p_test, "youden", n_boot=50, seed=0)
    for key in ("auroc", "auroc_ci95", "average_precision", "threshold", "temperature", "ece_before", "ece_after"):
        assert key in m
    assert m["positive_class"] == "fracture"
    assert m["n"] == 60 and m["n_positive"] == 20
    assert set(m["sens_at_spec"]) == {"0.80", "0.90", "0.95"}
    assert cal.shape == p_test.shape


def test_classification_report_ece_by_hand() -> None:
    """Four test films, two confidence levels, 15 equal-width bins: ECE worked out on paper.

    Before calibration every film's top label is fracture: three at 0.9 (two right: accuracy 2/3) and one
    at 0.62 (right: accuracy 1), in different bins, so ECE = (3 * |2/3 - 0.9| + 1 * |1 - 0.62|) / 4 = 0.27
    (an unweighted mean over bins would give 0.307). After calibration with the val temperature T,
    p -> p^(1/T) / (p^(1/T) + (1-p)^(1/T)) moves the confidences and keeps their order.
    """
    y_val, p_val, _, _ = _val_and_test()
    y_test = np.array([0, 0, 1, 0])  # 0 = fracture
    p_test = _probs(np.array([0.9, 0.9, 0.9, 0.62]))
    m, _ = classification_report(NAMES, y_val, p_val, y_test, p_test, "youden", n_boot=0, seed=0)
    assert m["ece_before"] == pytest.approx(0.27)
    t = m["temperature"]
    assert t != pytest.approx(1.0)  # the val set is miscalibrated: calibration must move the scores
    hi, lo = (p ** (1 / t) / (p ** (1 / t) + (1 - p) ** (1 / t)) for p in (0.9, 0.62))
    conf_hi, conf_lo = max(hi, 1 - hi), max(lo, 1 - lo)  # the top label's confidence
    assert int(conf_hi * 15) != int(conf_lo * 15)  # still two bins: the hand formula below holds
    acc_hi = 2 / 3 if hi > 0.5 else 1 / 3  # two fractures and one no_fracture
    acc_lo = 1.0 if lo > 0.5 else 0.0  # a fracture: right only while fracture stays the top label
    expected = (3 * abs(acc_hi - conf_hi) + abs(acc_lo - conf_lo)) / 4
    assert m["ece_after"] == pytest.approx(expected)
    assert m["ece_after"] != pytest.approx(m["ece_before"])


def test_multiclass_report() -> None:
    # Three classes: no threshold, macro/micro one-vs-rest AUROC instead.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    logits = rng.normal(size=(90, 3)) + 2 * np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m, _ = classification_report(["a", "b", "c"], y[:45], p[:45], y[45:], p[45:], "youden", 0, 0)
    assert m["threshold"] is None and m["positive_class"] is None
    assert set(m["per_class"]) == {"a", "b", "c"}
    assert m["auroc"] == m["macro_auroc"] > 0.7


def _dataset(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    (root / "det" / "images" / "test").mkdir(parents=True)
    (root / "det" / "labels" / "test").mkdir(parents=True)
    (root / "manifest.csv").write_text("source,split,label,region\na.png,test,fracture,hand\n")
    return root


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "nothing to evaluate"),  # no model given
        ({"classifier": "x", "split": "holdout"}, "unknown split"),  # split name typo
        ({"classifier": "x", "threshold": "median"}, "--threshold median"),  # unknown rule
        ({"classifier": "x", "by": ["site"]}, "no column site"),  # --by names a missing manifest column
    ],
)
def test_evaluate_user_errors(tmp_path: Path, kwargs: dict, fragment: str) -> None:
    from fracturekit.evaluate import evaluate

    with pytest.raises(UserError, match=fragment):
        evaluate(_dataset(tmp_path), **kwargs)


def test_coco_ground_truth_from_yolo_labels(tmp_path: Path) -> None:
    import cv2

    root = _dataset(tmp_path)
    img_dir, lbl_dir = root / "det" / "images" / "test", root / "det" / "labels" / "test"
    for name in ("a", "b", "c"):
        cv2.imwrite(str(img_dir / f"{name}.png"), np.zeros((50, 100), np.uint8))  # 100 wide, 50 high
    (lbl_dir / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n")  # one box: 20 x 20 px centred
    (lbl_dir / "b.txt").write_text("")  # background
    (lbl_dir / "c.txt").write_text("0 0.5 0.5\n7 0.1 0.1 0.1 0.1\n")  # truncated line, unknown class
    skipped: list[dict] = []
    gt, ids = coco_ground_truth(PreparedDataset(root), "test", {0: "fracture"}, skipped)
    assert ids == {"a.png": 1, "b.png": 2, "c.png": 3}
    assert [a["bbox"] for a in gt["annotations"]] == [pytest.approx([40.0, 15.0, 20.0, 20.0])]
    assert len(skipped) == 2 and all("bad label line" in s["reason"] for s in skipped)


def _fake_model(names: list[str], run: object = None) -> SimpleNamespace:
    """What evaluate reads off a loaded `infer.Model`: its class names and run."""
    return SimpleNamespace(names=dict(enumerate(names)), run=run)


def _fake_score(paths: list[Path], **_: object) -> list[Prediction]:
    """`infer.scoring.score` stand-in: p(fracture) 0.9 in fracture/, 0.2 elsewhere; 'broken' files unreadable."""
    out = []
    for i, p in enumerate(paths):
        if "broken" in p.name:
            out.append(Prediction(i, p, error="not a decodable image (Read Error)"))
        else:
            q = 0.9 if p.parent.name == "fracture" else 0.2
            out.append(Prediction(i, p, probs_raw=np.array([q, 1 - q])))
    return out


def test_classify_images_reports_and_skips_bad_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fracturekit.evaluate import classify_images

    monkeypatch.setattr(scoring, "score", _fake_score)

    root = tmp_path / "ds"
    for cls, names in {"fracture": ["a.png", "broken.png"], "no_fracture": ["b.png", "c.png"]}.items():
        (root / "cls" / "test" / cls).mkdir(parents=True)
        for n in names:
            (root / "cls" / "test" / cls / n).write_bytes(b"x")
    skipped: list[dict] = []
    paths, y, p = classify_images(_fake_model(NAMES), PreparedDataset(root), "test", skipped)  # type: ignore[arg-type]
    assert [q.name for q in paths] == ["a.png", "b.png", "c.png"]
    assert y.tolist() == [0, 1, 1]
    assert p[:, 0] == pytest.approx([0.9, 0.2, 0.2])
    assert len(skipped) == 1 and skipped[0]["path"].endswith("broken.png") and "Read Error" in skipped[0]["reason"]


def test_classify_images_rejects_unknown_class_folder(tmp_path: Path) -> None:
    from fracturekit.evaluate import classify_images

    (tmp_path / "cls" / "test" / "dislocation").mkdir(parents=True)
    with pytest.raises(UserError, match="unknown to the classifier"):
        classify_images(_fake_model(NAMES), PreparedDataset(tmp_path), "test", [])  # type: ignore[arg-type]


def _folder_score(names: list[str]):  # noqa: ANN202
    """`infer.scoring.score` stand-in for evaluate(): each film scored from its class folder plus per-file noise."""

    def score(paths: list[Path], **_: object) -> list[Prediction]:
        out = []
        for i, path in enumerate(paths):
            rng = np.random.default_rng(zlib.crc32(path.name.encode()))  # stable across runs
            logits = rng.normal(0, 1, len(names)) + 1.5 * np.eye(len(names))[names.index(path.parent.name)]
            out.append(Prediction(i, path, probs_raw=np.exp(logits) / np.exp(logits).sum()))
        return out

    return score


def _fake_classifier_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: list[str]):  # noqa: ANN202
    """An empty run folder that evaluate() loads as a classifier of `names` scored by `_folder_score`."""
    from fracturekit import evaluate as E
    from fracturekit.core.layout import RunDir

    run = RunDir(tmp_path / "run")
    (run.root / "weights").mkdir(parents=True)
    monkeypatch.setattr(E, "_load_model", lambda *_: _fake_model(names, run))
    monkeypatch.setattr(scoring, "score", _folder_score(names))
    return run


@pytest.mark.parametrize(
    "names",
    [
        ["fracture", "no_fracture"],  # binary: threshold, sensitivity/specificity, positive 'fracture'
        ["radius", "scaphoid", "ulna"],  # multi-class: one-vs-rest AUROC, macro and micro
    ],
)
def test_evaluate_classifier_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, names: list[str]) -> None:
    import json
    from html.parser import HTMLParser

    import pandas as pd

    from fracturekit import evaluate as E

    root = tmp_path / "ds"
    rows = ["split,label,output_cls,region"]
    for split in ("val", "test"):
        for name in names:
            (root / "cls" / split / name).mkdir(parents=True)
            for i in range(12):
                f = root / "cls" / split / name / f"{split}_{name}_{i}.png"
                f.write_bytes(b"x")
                rows.append(f"{split},{name},cls/{split}/{name}/{f.name},{('hand', 'leg')[i % 2]}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    run = _fake_classifier_run(tmp_path, monkeypatch, names)

    m = E.evaluate(root, classifier=run.root, by=["region"], bootstrap=20)
    assert json.loads(run.metrics.read_text()) == m  # default out: <run>/eval
    c = m["classification"]
    assert c["n"] == 12 * len(names)
    assert set(c["subgroups"]["region"]) == {"hand", "leg"}
    assert sum(g["n"] for g in c["subgroups"]["region"].values()) == c["n"]
    if len(names) == 2:
        assert c["positive_class"] == "fracture" and 0 <= c["threshold"] <= 1
    else:
        assert set(c["per_class"]) == set(names) and c["micro_auroc"] is not None
    preds = pd.read_csv(run.eval_dir / "predictions.csv")
    assert len(preds) == c["n"] and set(preds["label"]) == set(names)

    class Imgs(HTMLParser):
        n = 0

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.n += tag == "img" and dict(attrs).get("src", "").startswith("data:image/png;base64,")

    parser = Imgs()
    parser.feed((run.eval_dir / "report.html").read_text(encoding="utf-8"))
    assert parser.n == 3  # ROC/PR, confusion matrix, reliability diagram


@pytest.mark.parametrize(
    ("with_cluster", "n_units"),
    [
        (True, 6),  # 24 test films: patients of 2 films (12), copy clusters join patients in fours (6)
        (False, 12),  # an old manifest without `cluster`: patients only, and metrics.json warns
    ],
)
def test_evaluate_resamples_units(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_cluster: bool, n_units: int
) -> None:
    from fracturekit import evaluate as E

    root = tmp_path / "ds"
    rows = ["split,label,output_cls,group" + (",cluster" if with_cluster else "")]
    for split in ("val", "test"):
        for k, name in enumerate(NAMES):
            (root / "cls" / split / name).mkdir(parents=True)
            for i in range(12):
                f = root / "cls" / split / name / f"{split}_{name}_{i}.png"
                f.write_bytes(b"x")
                # film i's patient holds films i and i^1; a copy cluster joins films 1 and 2 of each four
                cluster = f",c{split}{k}{i // 4}" if i % 4 in (1, 2) else ","
                row = f"{split},{name},cls/{split}/{name}/{f.name},{split}{k}p{i // 2}"
                rows.append(row + (cluster if with_cluster else ""))
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    run = _fake_classifier_run(tmp_path, monkeypatch, NAMES)

    m = E.evaluate(root, classifier=run.root, by=["label"], bootstrap=50)
    c = m["classification"]
    assert (c["n"], c["n_units"]) == (24, n_units)
    assert sum(g["n_units"] for g in c["subgroups"]["label"].values()) == n_units  # no unit spans both labels
    assert m["units"]["linked_by"] == (["group", "cluster"] if with_cluster else ["group"])
    assert ("warning" in m["units"]) == (not with_cluster)
    report = (run.eval_dir / "report.html").read_text(encoding="utf-8")
    assert f"over {n_units} independent units (24 films)" in report
