"""cv's fold assignment: the films a cv folds, their independent units, K grouped stratified folds, fold roles.

A unit keeps a patient `group` and a duplicate `cluster` together, so no patient or near-copy straddles
two folds; sklearn's StratifiedGroupKFold deals the units to folds by label.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fracturekit.core.errors import UserError
from fracturekit.core.layout import PreparedDataset
from fracturekit.data.split import units

if TYPE_CHECKING:
    from fracturekit.audit import AuditResult

FOLD_COLUMNS = ("source", "fold", "label", "group", "cluster", "split", "path")


def load_films(ds: PreparedDataset, task: str) -> tuple[pd.DataFrame, AuditResult | None]:
    """The films a `task` cv folds: `ok` manifest rows with that task's output, plus `path` and `cluster`.

    `cluster` comes from the manifest when it has the column, else from `fracturekit.audit` reading the
    films (`""` for a film without duplicate); the AuditResult is returned then (else None).
    """
    manifest = pd.read_csv(ds.manifest, dtype=str, keep_default_na=False)
    out_col = "output_cls" if task == "classify" else "output_det"
    films = manifest[(manifest["status"] == "ok") & (manifest[out_col] != "")].reset_index(drop=True)
    if films.empty:
        raise UserError(
            f"{ds.manifest}: no film with {out_col}, so the dataset holds nothing to {task}; "
            f"re-run `fracturekit prepare` on a source with {'labels' if task == 'classify' else 'boxes'}."
        )
    films["path"] = films[out_col]
    if "cluster" in films.columns:
        return films, None
    import tempfile

    from fracturekit.audit import audit

    with tempfile.TemporaryDirectory(prefix="fk-cv-audit-") as tmp:  # out=None would write into the dataset
        result = audit(ds.root, out=Path(tmp))
    of = {m.path: str(c.id) for c in result.clusters for m in c.members}
    films["cluster"] = [
        of.get(a) or of.get(b) or "" for a, b in zip(films["output_cls"], films["output_det"], strict=True)
    ]
    return films, result


def fold_units(groups: Sequence[str], clusters: Sequence[str]) -> np.ndarray:
    """Unit id per film: films sharing a non-empty group or a non-empty cluster (transitively) share one."""
    together: dict[tuple[str, str], list[int]] = {}
    for i, (g, c) in enumerate(zip(groups, clusters, strict=True)):
        if g:
            together.setdefault(("g", g), []).append(i)
        if c:
            together.setdefault(("c", c), []).append(i)
    return units(len(groups), list(together.values()))


def assign_folds(labels: Sequence[str], unit_ids: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold (0..k-1) per film: StratifiedGroupKFold by label over `unit_ids`, shuffled by `seed`.

    sklearn's splitter (not split.assign_splits' greedy ratios) because k equal folds is exactly its job.
    """
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    n_units = len(np.unique(unit_ids))
    if n_units < k:
        raise UserError(
            f"only {n_units} independent units (patients and duplicate clusters) for {k} folds; use --folds {n_units}"
            " or fewer."
        )
    fold = np.full(len(labels), -1)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members": checked below
        for f, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), np.asarray(labels), unit_ids)):
            fold[test] = f
    for f in range(k):
        missing = sorted(set(labels) - {lb for lb, x in zip(labels, fold, strict=True) if x == f})
        if missing:
            raise UserError(
                f"fold {f} of {k} gets no '{missing[0]}' film (too few independent units of that label); "
                "use fewer --folds."
            )
    return fold


def plan_folds(
    ds: PreparedDataset, task: str, k: int, seed: int
) -> tuple[pd.DataFrame, np.ndarray, AuditResult | None]:
    """The films a `task` cv folds with their `fold` assigned, their unit ids, and the audit when it was run.

    One plan for `cross_validate`, `--export-folds` and `--scores`: the same dataset, K and seed give the same folds.
    """
    films, audit_result = load_films(ds, task)
    if task == "classify" and films["label"].nunique() != 2:
        raise UserError(
            f"{ds.manifest}: cv scores a binary fracture/no-fracture classifier, but the films have "
            f"{films['label'].nunique()} labels ({', '.join(sorted(films['label'].unique()))}); prepare with --map."
        )
    unit_ids = fold_units(films["group"].tolist(), films["cluster"].tolist())
    films["fold"] = assign_folds(films["label"].tolist(), unit_ids, k, seed)
    return films, unit_ids, audit_result


def roles(k: int, n_folds: int) -> dict[str, Any]:
    """Fold k tests, fold k+1 (mod K) validates, the rest train."""
    val = (k + 1) % n_folds
    return {"test": k, "val": val, "train": [f for f in range(n_folds) if f not in (k, val)]}
