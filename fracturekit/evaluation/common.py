"""What the classification and detection evaluations share: their inputs, their result shape, subgroup lookups."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fracturekit.core.layout import PreparedDataset
from fracturekit.core.progress import Progress
from fracturekit.evaluation.cases import ModelScores
from fracturekit.evaluation.metrics import ThresholdRule
from fracturekit.infer.scoring import Prediction

THRESHOLD_SPLIT = "val"


@dataclass
class EvalContext:
    """One evaluation's inputs, the same for both models."""

    ds: PreparedDataset
    split: str
    out_dir: Path
    threshold: ThresholdRule  # the rule (youden, f1, sens:0.95, or a number) applied on THRESHOLD_SPLIT, parsed once
    device: str  # torch device string of the InferenceOptions evaluate built (resolved once there)
    bootstrap: int
    seed: int
    manifest: pd.DataFrame
    by: list[str]
    skipped: list[dict]  # films left out and why; both models append
    progress: Progress | None = None  # hears each scored batch (films done of films), for the CLI's bar


@dataclass
class ModelResult:
    """One model's evaluation: the same shape for the classifier and the detector."""

    metrics: dict[str, Any]  # its metrics.json section ("classification" or "detection")
    rows: pd.DataFrame  # its predictions.csv rows
    plots: dict[str, Any]  # report plots: "curves" (merged across models) and model-specific ones
    scores: ModelScores | None  # image-level scores for the cases to review (None: multi-class classifier)


def films_sha256(rel_paths: Sequence[str]) -> str:
    """One digest of the scored films (dataset-relative paths, order ignored): equal digests, same films."""
    return hashlib.sha256("\n".join(sorted(rel_paths)).encode()).hexdigest()


def skip_errors(preds: Sequence[Prediction], model: str, skipped: list[dict]) -> list[Prediction]:
    """The readable films' predictions; each unreadable one goes to `skipped` with its reason."""
    for p in preds:
        if p.error:
            skipped.append({"path": str(p.path), "model": model, "reason": p.error})
    return [p for p in preds if not p.error]


def manifest_lookup(manifest: pd.DataFrame, column: str, path_col: str) -> dict[str, str]:
    """Dataset-relative output path -> value of `column` (missing values become 'NA')."""
    if path_col not in manifest.columns:
        return {}
    rows = manifest.dropna(subset=[path_col])
    values = rows[column].astype(object).where(rows[column].notna(), "NA").astype(str)
    return dict(zip(rows[path_col].astype(str).map(lambda s: Path(s).as_posix()), values, strict=True))


def subgroup_values(manifest: pd.DataFrame, column: str, path_col: str, rel_paths: list[str]) -> np.ndarray:
    """The manifest's `column` value per film (by its dataset-relative path); 'NA' where unknown."""
    lookup = manifest_lookup(manifest, column, path_col)
    return np.asarray([lookup.get(p, "NA") for p in rel_paths], dtype=object)


def labelled_confusion(matrix: list[list[int]], labels: list[str]) -> dict[str, Any]:
    """A confusion matrix that says what its rows and columns are: {"true A": {"predicted B": count}}."""
    return {
        "rows": "true class",
        "columns": "predicted class",
        "labels": labels,
        "counts": {f"true {a}": {f"predicted {b}": int(n) for b, n in zip(labels, row, strict=True)}
                   for a, row in zip(labels, matrix, strict=True)},
    }  # fmt: skip
