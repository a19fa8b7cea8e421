"""Leak-free train/val/test assignment: seeded, stratified by label, grouped by patient and duplicate cluster.

Images that must stay together (same patient/study, same duplicate cluster) are merged into units
(connected components); whole units are then dealt to splits. Hand-written rather than sklearn's
StratifiedGroupKFold because that one only makes k EQUAL folds (0.7/0.15/0.15 would need 20 folds and
rounding), refuses fewer groups than folds (small datasets), and cannot honour the images whose split
the source already fixes (`--keep-splits`). The greedy rule below hits arbitrary ratios per label.
The same units, read back from manifest.csv, are what `evaluate` resamples for its confidence intervals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fracturekit.core.errors import UserError
from fracturekit.core.layout import SPLITS

DEFAULT_RATIOS = (0.7, 0.15, 0.15)
# manifest.csv columns whose equal non-empty values tie films into one unit: patient/study, duplicate cluster
UNIT_COLUMNS = ("group", "cluster")


def parse_ratios(text: str) -> tuple[float, float, float]:
    """'0.7,0.15,0.15' -> (0.7, 0.15, 0.15), validated."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--split {text!r}: expected three numbers like 0.7,0.15,0.15.") from None
    return check_ratios(values)


def check_ratios(values: Sequence[float]) -> tuple[float, float, float]:
    """Three non-negative fractions for train/val/test summing to 1, train > 0, or a UserError."""
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6 or values[0] <= 0:
        raise UserError(f"split {tuple(values)}: give three non-negative fractions summing to 1, e.g. 0.7,0.15,0.15.")
    return (float(values[0]), float(values[1]), float(values[2]))


def units(n: int, together: Sequence[Sequence[int]]) -> np.ndarray:
    """Unit id per item: items linked (transitively) by any index set in `together` share one id."""
    rows: list[int] = []
    cols: list[int] = []
    for members in together:
        members = list(members)
        rows.extend(members[:-1])
        cols.extend(members[1:])
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def manifest_units(manifest: pd.DataFrame) -> np.ndarray:
    """Unit id per manifest row: rows sharing a non-empty value in any UNIT_COLUMNS column are one unit.

    Links chain: a patient's film (group) whose copy sits in another patient's group (cluster) makes both
    patients one unit. A column the manifest lacks links nothing (see `unit_basis`).
    """
    together: list[np.ndarray] = []
    for col in UNIT_COLUMNS:
        if col not in manifest.columns:
            continue
        keys = manifest[col].astype(object).where(manifest[col].notna(), "").astype(str).str.strip().to_numpy()
        together += [rows for key, rows in pd.Series(keys).groupby(keys).indices.items() if key]
    return units(len(manifest), together)


def film_units(manifest: pd.DataFrame, path_col: str, rel_paths: Sequence[str]) -> np.ndarray:
    """Unit id per evaluated film, found by its dataset-relative path in `path_col` (output_cls / output_det).

    A film the manifest does not list (added to the folder by hand) is a unit of its own.
    """
    ids = manifest_units(manifest)
    lookup: dict[str, int] = {}
    if path_col in manifest.columns:
        for path, unit in zip(manifest[path_col], ids, strict=True):
            if isinstance(path, str) and path:
                lookup[Path(path).as_posix()] = int(unit)
    fresh = iter(range(len(manifest), len(manifest) + len(rel_paths)))
    return np.asarray([lookup[p] if p in lookup else next(fresh) for p in rel_paths], dtype=int)


def unit_basis(manifest: pd.DataFrame) -> dict[str, object]:
    """What the bootstrap's independent units are built from, for metrics.json (with a warning when partial)."""
    linked_by = [c for c in UNIT_COLUMNS if c in manifest.columns]
    basis: dict[str, object] = {"linked_by": linked_by}
    if "cluster" not in linked_by:
        basis["warning"] = (
            "manifest.csv has no 'cluster' column (prepared by an older fracturekit): duplicate clusters are "
            "unknown, so confidence intervals resample patient groups only and are too narrow if copies exist; "
            "re-run `fracturekit prepare` to record them."
        )
    return basis


def assign_splits(
    labels: Sequence[str],
    together: Sequence[Sequence[int]] = (),
    fixed: Sequence[str | None] | None = None,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: int = 0,
) -> list[str]:
    """Split name per item. Items in one unit always share a split, except `fixed` ones that disagree.

    labels: stratification key per item. together: index sets that must not straddle splits (one per
    patient group and per duplicate cluster). fixed: the source's own split per item or None; a unit
    with fixed members puts its free members where most fixed members are (the audit reports units
    whose fixed members disagree). Free units are shuffled by `seed`, taken largest first, and each
    goes to the split whose per-label counts are furthest below ratio x label total, relative to that
    target (fixed items count).
    """
    ratios = check_ratios(ratios)
    n = len(labels)
    fixed = list(fixed) if fixed is not None else [None] * n
    unit_of = units(n, together)
    members: dict[int, list[int]] = {}
    for i, u in enumerate(unit_of):
        members.setdefault(int(u), []).append(i)

    label_names = sorted(set(labels))
    li = {name: k for k, name in enumerate(label_names)}
    totals = np.bincount([li[x] for x in labels], minlength=len(label_names)).astype(float)
    target = np.outer(ratios, totals)  # (split, label)
    count = np.zeros_like(target)
    result: list[str | None] = list(fixed)
    for i, s in enumerate(fixed):
        if s is not None:
            count[SPLITS.index(s), li[labels[i]]] += 1

    free_units: list[list[int]] = []
    for idx in members.values():
        pinned = [fixed[i] for i in idx if fixed[i] is not None]
        if not pinned:
            free_units.append(idx)
            continue
        votes = Counter(pinned)
        home = max(SPLITS, key=lambda s: (votes.get(s, 0), -SPLITS.index(s)))
        for i in idx:
            if result[i] is None:
                result[i] = home
                count[SPLITS.index(home), li[labels[i]]] += 1

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(free_units))
    ranked = sorted((free_units[k] for k in order), key=len, reverse=True)  # stable: ties keep the shuffle
    allowed = [k for k, r in enumerate(ratios) if r > 0]
    for idx in ranked:
        comp = np.bincount([li[labels[i]] for i in idx], minlength=len(label_names)).astype(float)
        # RELATIVE deficits, so big units are dealt to all splits in proportion (absolute deficits would
        # send every multi-film unit to train first, leaving val/test with singletons only)
        deficit = (target - count) / np.maximum(target, 1e-9)
        overall = (target.sum(axis=1) - count.sum(axis=1)) / np.maximum(target.sum(axis=1), 1e-9)
        best = max(allowed, key=lambda k: (float(deficit[k] @ comp), float(overall[k]), -k))
        count[best] += comp
        for i in idx:
            result[i] = SPLITS[best]
    return [str(s) for s in result]
