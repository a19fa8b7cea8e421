"""`fracturekit cv`: k-fold cross-validation on patient- and duplicate-grouped folds, locally or on Ray.

Folds: every `ok` film of a prepared dataset (its own train/val/test split is folded in: each film is
scored exactly once, out of fold) is dealt to K folds by sklearn's StratifiedGroupKFold, stratified by
label, over units that keep a patient `group` and a duplicate `cluster` together (the manifest's
`cluster` column when it has one, else the audit's clusters found by reading the films).
Roles: fold k is the test fold, fold k+1 (mod K) the validation fold (early stopping, threshold,
temperature), the other K-2 folds train. Each fold gets a dataset of symlinks to the prepared films
(no image is copied) and an ordinary `train` run evaluated by `evaluate` on its test fold.

`<project>/cv/<name>/`: folds.csv, data/fold<k>/ (the fold datasets), fold<k>/ (the runs; `fold<k>-<model>/`
with several models), oof_predictions.csv, cv.json, report.html, audit/ (when clusters were recomputed).
Re-running with the same --name and settings reuses the finished folds.

Modules: `folds` (fold assignment), `datasets` (the fold datasets), `fold` (one fold's run), `executors`
(local or Ray), `pooling` (per-fold and pooled statistics, model comparison), `folder` (the cv folder and
resuming), `command` (`cross_validate`, which ties them together).
"""

from fracturekit import callable_stage
from fracturekit.cv.command import cross_validate
from fracturekit.cv.datasets import build_fold_dataset
from fracturekit.cv.executors import EXECUTORS, run_local, run_ray
from fracturekit.cv.fold_job import FoldJob, run_fold
from fracturekit.cv.fold_plan import FOLD_COLUMNS, assign_folds, fold_units, load_films, roles
from fracturekit.cv.pooling import OOF_COLUMNS, SUMMARY_KEYS, compare_models, positive, summarize

__all__ = [
    "EXECUTORS",
    "FOLD_COLUMNS",
    "OOF_COLUMNS",
    "SUMMARY_KEYS",
    "FoldJob",
    "assign_folds",
    "build_fold_dataset",
    "compare_models",
    "cross_validate",
    "fold_units",
    "load_films",
    "positive",
    "roles",
    "run_fold",
    "run_local",
    "run_ray",
    "summarize",
]

callable_stage(__name__)  # `fracturekit.cv(...)` runs cross_validate(): see fracturekit.Stage
