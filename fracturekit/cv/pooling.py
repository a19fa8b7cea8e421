"""cv's statistics over the fold records: per-fold table, mean and sd, pooled out-of-fold AUROC, model comparison.

Writes oof_predictions.csv (every film scored once, by the fold that tested it); bootstraps resample units.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fracturekit.core.layout import POSITIVE_CLASS, RunDir
from fracturekit.cv.fold_plan import fold_units, roles
from fracturekit.evaluation import metrics as M

OOF_COLUMNS = ("path", "label", "fold", "model", "score", "score_raw", "source")
# Per-fold numbers averaged over folds (mean and sample sd, ddof=1), per task.
SUMMARY_KEYS = {
    "classify": ("auroc", "average_precision", "sensitivity", "specificity"),
    "detect": ("map50_95", "map50", "image_auroc", "sensitivity", "specificity"),
}


def summarize(
    task: str,
    cv_dir: Path,
    films: pd.DataFrame,
    results: list[dict[str, Any]],
    labels: list[str],
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """folds / mean / std / oof (+ comparison) from the fold records; writes oof_predictions.csv."""
    by_name = films.assign(
        name=films["path"].map(lambda p: Path(p).name),
        unit=fold_units(films["group"].tolist(), films["cluster"].tolist()),
    ).set_index("name")
    results = sorted(results, key=lambda r: (labels.index(r["model"]), r["fold"]))
    n_folds = int(films["fold"].max()) + 1
    fold_rows = [_fold_row(r, n_folds) for r in results]
    oof = pd.concat([_oof_part(r, by_name) for r in results], ignore_index=True)
    oof.to_csv(cv_dir / "oof_predictions.csv", index=False, columns=list(OOF_COLUMNS))
    keys = SUMMARY_KEYS[task]
    mean, std, pooled = {}, {}, {}
    for label in labels:
        rows = [f for f in fold_rows if f["model"] == label]
        mean[label] = {k: _nanstat(np.nanmean, [f[k] for f in rows]) for k in keys}
        std[label] = {k: _nanstat(lambda a: np.nanstd(a, ddof=1), [f[k] for f in rows]) for k in keys}
        pooled[label] = _pooled_oof(oof[oof["model"] == label], task, n_boot, seed)
    out: dict[str, Any] = {"models": labels, "folds": fold_rows, "mean": mean, "std": std, "oof": pooled}
    out["std_note"] = "sample standard deviation over folds (ddof=1)"
    if len(labels) > 1:
        out["comparison"] = [
            compare_models(oof, fold_rows, a, b, task, n_boot, seed)
            for i, a in enumerate(labels)
            for b in labels[i + 1 :]
        ]
    return out


def _fold_row(result: dict[str, Any], n_folds: int) -> dict[str, Any]:
    """One fold record as a row of the per-fold table: which folds it trained and validated on, its metrics."""
    ro = roles(result["fold"], n_folds)
    return {
        "fold": result["fold"],
        "model": result["model"],
        "val_fold": ro["val"],
        "train_folds": ro["train"],
        "run": result["run"],
        **result["metrics"],
    }


def _oof_part(result: dict[str, Any], by_name: pd.DataFrame) -> pd.DataFrame:
    """A fold run's scores on its test fold (read from its predictions.csv) as out-of-fold rows, calibrated
    where the run calibrated; a RuntimeError when it scored a film outside that fold."""
    pred = pd.read_csv(RunDir(Path(result["run"])).eval_dir / "predictions.csv", dtype={"path": str})
    film = by_name.loc[pred["path"].map(lambda p: Path(p).name)]
    if (film["fold"].astype(int) != result["fold"]).any():
        raise RuntimeError(f"{result['run']}: predictions on films outside test fold {result['fold']}")
    calibrated = "score_calibrated" in pred.columns
    return pd.DataFrame(
        {
            "path": film["path"].to_numpy(),
            "label": film["label"].to_numpy(),
            "unit": film["unit"].to_numpy(),  # for the bootstraps, not written to oof_predictions.csv
            "fold": result["fold"],
            "model": result["model"],
            "score": (pred["score_calibrated"] if calibrated else pred["score"]).to_numpy(),
            "score_raw": pred["score"].to_numpy(),
            "source": film["source"].to_numpy(),
        }
    )


def _pooled_oof(part: pd.DataFrame, task: str, n_boot: int, seed: int) -> dict[str, Any]:
    """One model's pooled out-of-fold numbers: AUROC with its unit-bootstrap CI, average precision, counts."""
    y = positive(part["label"])
    lo, hi = M.bootstrap_ci(y, part["score"].to_numpy(), part["unit"].to_numpy(), n_boot, seed)
    return {
        "n": len(part),
        "n_positive": int(y.sum()),
        "auroc": M.auroc(y, part["score"].to_numpy()),
        "auroc_ci95": [lo, hi],
        "n_units": M.n_units(part["unit"].to_numpy(), len(part)),
        "average_precision": M.average_precision(y, part["score"].to_numpy()),
        "score": "calibrated fracture probability (temperature from the val fold)"
        if task == "classify"
        else "image score: highest box confidence, 0 without a box",
    }


def positive(labels: pd.Series) -> np.ndarray:
    """1 for a fractured film (label `fracture`), else 0."""
    return (labels.astype(str) == POSITIVE_CLASS).to_numpy().astype(int)


def _nanstat(fn: Callable[[np.ndarray], Any], values: list[Any]) -> float:
    a = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    if np.isnan(a).all() or (fn is not np.nanmean and np.count_nonzero(~np.isnan(a)) < 2):
        return float("nan")
    return float(fn(a))


def compare_models(
    oof: pd.DataFrame, fold_rows: list[dict[str, Any]], a: str, b: str, task: str, n_boot: int, seed: int
) -> dict[str, Any]:
    """Model a vs b on the same films: per-fold AUROC differences and a paired bootstrap on the pooled OOF scores."""
    sa = oof[oof["model"] == a].set_index("path")
    sb = oof[oof["model"] == b].set_index("path").loc[sa.index]
    y = positive(sa["label"])
    test = M.paired_auroc_test(
        y, sa["score"].to_numpy(), sb["score"].to_numpy(), n_boot, seed, units=sa["unit"].to_numpy()
    )
    key = "auroc" if task == "classify" else "image_auroc"
    per_fold = {f["fold"]: f[key] for f in fold_rows if f["model"] == a}
    diffs = [per_fold[f["fold"]] - f[key] for f in fold_rows if f["model"] == b]
    return {
        "a": a,
        "b": b,
        **test,
        "per_fold_difference": diffs,
        "folds_a_better": int(sum(d > 0 for d in diffs)),
        "n_folds": len(diffs),
    }
