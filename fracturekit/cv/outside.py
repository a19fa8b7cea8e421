"""cv for models fracturekit does not train: the folds out as file lists, the out-of-fold scores back in.

`export_folds` writes, per fold, the train/val/test films (the same folds `cross_validate` trains on: same
dataset, K and seed) for an outside training script; `cv_scores` takes that script's per-fold scores files
(`oof/fold{k}.csv`, or COCO results `.json`), evaluates each on its fold exactly as a fold run's `evaluate`
would (`evaluate --scores` on the fold dataset: threshold and temperature from the val fold), and pools them
into the same oof_predictions.csv, cv.json and report.html, a paired comparison included when several
models are given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fracturekit.core.errors import UserError
from fracturekit.core.layout import PreparedDataset
from fracturekit.core.outputs import check_free, claim, write_record
from fracturekit.core.paths import user_path
from fracturekit.cv.cv_folder import check_ours, check_same_settings, cv_folder, dataset_identity, json_safe, sha
from fracturekit.cv.datasets import build_fold_dataset
from fracturekit.cv.fold_job import _fold_metrics
from fracturekit.cv.fold_plan import FOLD_COLUMNS, plan_folds, roles
from fracturekit.cv.pooling import summarize
from fracturekit.data.hashing import file_sha256

LIST_COLUMNS = ("path", "file", "label", "group", "cluster")


def _seed(task: str, seed: int | None) -> int:
    """The seed `cross_validate` would fold with: the flag, else the task config's default."""
    from fracturekit.training.config import resolve_config

    return int(seed) if seed is not None else int(resolve_config(task, None, {})["seed"])


def export_folds(
    task: str, data: str | Path, out: str | Path, *, folds: int = 5, seed: int | None = None, exist_ok: bool = False
) -> dict[str, Any]:
    """Write `out/folds.csv` and `out/fold<k>/{train,val,test}.csv` (path, file, label, group, cluster).

    `path` is the film's manifest `source`, the name `cv --scores` reads back; `file` the prepared image to
    train on (absolute). Roles as in cross_validate: fold k tests, fold k+1 (mod K) validates, the rest train.
    """
    if folds < 3:
        raise UserError(f"--folds {folds}: use at least 3 (one test fold, one validation fold, one to train on).")
    ds = PreparedDataset.open(data)
    out_dir = user_path(out)
    seed = _seed(task, seed)
    films, _, _ = plan_folds(ds, task, folds, seed)
    films = films.assign(file=[str((ds.root / p).resolve()) for p in films["path"]], path=films["source"])
    planned = ["folds.csv", *[f"fold{k}/{s}.csv" for k in range(folds) for s in ("train", "val", "test")]]
    ours = claim(out_dir, "cv", exist_ok, flag="--export-folds")
    check_free(out_dir, planned, ours, "cv --export-folds")
    write_record(out_dir, "cv", planned)
    out_dir.mkdir(parents=True, exist_ok=True)
    films[[c for c in FOLD_COLUMNS if c != "path"] + ["file"]].rename(columns={"source": "path"}).to_csv(
        out_dir / "folds.csv", index=False
    )
    counts = {}
    for k in range(folds):
        (out_dir / f"fold{k}").mkdir(exist_ok=True)
        r = roles(k, folds)
        for split, members in (("train", r["train"]), ("val", [r["val"]]), ("test", [r["test"]])):
            part = films[films["fold"].isin(members)]
            part[list(LIST_COLUMNS)].to_csv(out_dir / f"fold{k}" / f"{split}.csv", index=False)
            counts[f"fold{k}/{split}"] = len(part)
    return {"out": str(out_dir), "folds": folds, "seed": seed, "task": task, "films": len(films), "counts": counts}


def _label(pattern: str) -> str:
    """A scores model's short name: the folder of its pattern (`oof/fold{k}.csv` -> oof), else the file stem."""
    parent = Path(pattern).parent.name
    return parent or Path(pattern).stem.replace("{k}", "")


def _score_files(patterns: Sequence[str], folds: int) -> tuple[list[str], dict[tuple[str, int], Path]]:
    """The models' short names and (name, fold) -> scores file, each checked to exist, from the `{k}` patterns."""
    if folds < 3:
        raise UserError(f"--folds {folds}: use at least 3 (one test fold, one validation fold, one to train on).")
    for pattern in patterns:
        if "{k}" not in pattern:
            raise UserError(f"--scores {pattern}: put {{k}} where the fold number goes, e.g. 'oof/fold{{k}}.csv'.")
    labels = [_label(p) for p in patterns]
    if len(set(labels)) != len(labels):
        raise UserError(f"--scores {', '.join(patterns)}: two models share the name {labels}; use distinct folders.")
    files = {
        (label, k): user_path(p.replace("{k}", str(k)))
        for label, p in zip(labels, patterns, strict=True)
        for k in range(folds)
    }
    absent = [str(f) for f in files.values() if not f.is_file()]
    if absent:
        raise UserError(
            f"--scores: {len(absent)} fold files are missing (e.g. {absent[0]}); write one per fold, 0 to {folds - 1}."
        )
    return labels, files


def _evaluate_fold_scores(
    task: str, fold_data: Path, scores: Path, label: str, run: Path, threshold: str, bootstrap: int, seed: int
) -> dict[str, Any]:
    """Evaluate one model's scores of one fold on the fold's dataset (into `run`/eval); the numbers cv.json keeps."""
    from fracturekit.evaluate import evaluate

    metrics = evaluate(
        fold_data,
        scores=[scores],
        name=label,
        out=run / "eval",
        exist_ok=True,
        threshold=threshold,
        bootstrap=bootstrap,
        seed=seed,
    )
    return _fold_metrics(task, metrics)


def cv_scores(
    task: str,
    data: str | Path,
    patterns: Sequence[str],
    *,
    folds: int = 5,
    seed: int | None = None,
    project: str | Path | None = None,
    name: str | None = None,
    threshold: str = "youden",
    bootstrap: int = 1000,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Pool outside out-of-fold scores: `patterns` (one per model) name each fold's file with `{k}`.

    Fold k's file scores the films of its val fold (threshold, temperature) and its test fold, named as
    `export_folds` wrote them; each is evaluated on the fold's dataset like a fold run, then pooled.
    """
    say = progress or (lambda _msg: None)
    labels, files = _score_files(patterns, folds)
    ds = PreparedDataset.open(data)
    seed = _seed(task, seed)
    films, _, _ = plan_folds(ds, task, folds, seed)
    folds_csv = films[list(FOLD_COLUMNS)].to_csv(index=False)
    cv_dir = cv_folder(Path(project or "runs").expanduser(), name)
    check_ours(cv_dir)
    settings = {
        "task": task,
        **dataset_identity(ds),
        "folds": folds,
        "seed": seed,
        "models": dict(zip(labels, patterns, strict=True)),
        "scores_sha256": {f"{label}/fold{k}": file_sha256(f) for (label, k), f in files.items()},
        "threshold": threshold,
        "bootstrap": bootstrap,
        "folds_sha256": sha(folds_csv),
        "test_split": "folded in: every ok film is in one fold; the prepared train/val/test split is not used",
        "roles": "fold k tests, fold (k+1) mod K validates (threshold, temperature); outside scores, no training here",
    }
    check_same_settings(cv_dir, settings)
    cv_dir.mkdir(parents=True, exist_ok=True)
    (cv_dir / "folds.csv").write_text(folds_csv)
    results = []
    for k in range(folds):
        fold_data = build_fold_dataset(ds, films, task, k, folds, cv_dir / "data" / f"fold{k}")
        for label in labels:
            run = cv_dir / (f"fold{k}" if len(labels) == 1 else f"fold{k}-{label}")
            m = _evaluate_fold_scores(task, fold_data, files[(label, k)], label, run, threshold, bootstrap, seed)
            results.append({"fold": k, "model": label, "run": str(run), "data": str(fold_data), "metrics": m})
            auroc = m["auroc"] if task == "classify" else m["image_auroc"]
            say(f"fold {k} model {label}: AUROC {auroc:.3f}, threshold {m['threshold']:.3f} ({files[(label, k)]})")
    record = summarize(task, cv_dir, films, results, labels, bootstrap, seed)
    clean = json_safe({"status": "finished", "out": str(cv_dir), "settings": settings, "executor": "scores", **record})
    (cv_dir / "cv.json").write_text(json.dumps(clean, indent=2))
    from fracturekit.evaluation.report import write_cv_report

    oof = pd.read_csv(cv_dir / "oof_predictions.csv", dtype={"path": str, "source": str})
    write_cv_report(clean, oof, cv_dir / "report.html")
    return clean
