"""`cross_validate`, the cv command: checks its options, assigns the folds, runs the fold jobs, pools, reports.

It writes folds.csv, audit/ (when it recomputed the clusters), cv.json (status running, then finished) and
report.html; the other modules of `fracturekit.cv` do the parts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fracturekit.core.errors import UserError
from fracturekit.core.folderlock import lock_folder, release_on_error
from fracturekit.core.layout import PreparedDataset
from fracturekit.core.options import check_threshold
from fracturekit.cv.cv_folder import check_ours, check_same_settings, cv_folder, cv_settings, json_safe, sha
from fracturekit.cv.datasets import build_fold_dataset
from fracturekit.cv.executors import EXECUTORS, check_ray_address, run_local, run_ray
from fracturekit.cv.fold_job import FoldJob
from fracturekit.cv.fold_plan import FOLD_COLUMNS, plan_folds
from fracturekit.cv.pooling import summarize
from fracturekit.evaluation.report import fmt

if TYPE_CHECKING:
    from fracturekit.evaluation.metrics import ThresholdRule


@release_on_error  # a refusal after the lock is taken leaves no lock, nor the folder it made
def cross_validate(
    task: str,
    data: str | Path,
    *,
    folds: int = 5,
    models: Sequence[str] | None = None,
    project: str | Path | None = None,
    name: str | None = None,
    executor: str = "local",
    parallel: int = 1,
    ray_timeout: float = 60.0,
    config: str | Path | None = None,
    threshold: str = "youden",
    bootstrap: int = 1000,
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """K-fold cross-validation of `train` + `evaluate` on a prepared dataset; returns cv.json's content.

    models: model specs (n, s, ... or a .yaml/.pt), all trained on the same folds (default: the config's).
    ray_timeout: seconds the Ray cluster in RAY_ADDRESS has to answer (executor "ray") before a UserError.
    overrides: train config keys (epochs, imgsz, seed, device, threads, ...), as for `train`.
    """
    say = progress or (lambda _msg: None)
    rule = _check_options(task, folds, executor, parallel, ray_timeout, threshold)
    ds = PreparedDataset.open(data)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for key in ("name", "resume"):
        if overrides.pop(key, None):
            raise UserError(f"--{key} is not a cv option: name the cv with --name; a re-run resumes it.")
    base_cfg, specs, labels = _model_specs(task, config, overrides, models)
    seed = int(base_cfg["seed"])
    cv_dir = cv_folder(Path(project or base_cfg["project"]).expanduser(), name)
    check_ours(cv_dir)
    lock = lock_folder(cv_dir, "cv")  # noqa: F841 - held until cv returns: one cv per folder (folds lock their own)

    films, unit_ids, audit_result = plan_folds(ds, task, folds, seed)
    settings = cv_settings(task, ds, folds, seed, dict(zip(labels, specs, strict=True)), config, overrides)
    settings = _start(cv_dir, films, audit_result, settings | {"threshold": threshold, "bootstrap": bootstrap})
    say(
        f"{len(films)} films in {folds} folds ({np.unique(unit_ids).size} independent units; "
        f"{int((films['cluster'] != '').sum())} films in duplicate clusters); cv folder {cv_dir}"
    )
    common, gpus = _common_job(task, base_cfg, overrides, config, rule, bootstrap, seed, executor, parallel)
    jobs = _fold_jobs(common, ds, films, folds, cv_dir, labels, specs)
    results: list[dict[str, Any]] = []
    (run_ray if executor == "ray" else run_local)(jobs, parallel, _reporter(task, results, len(jobs), say), gpus)
    record = summarize(task, cv_dir, films, results, labels, bootstrap, seed)
    record = {"status": "finished", "out": str(cv_dir), "settings": settings, "executor": executor, **record}
    record["parallel"] = parallel
    clean = json_safe(record)
    (cv_dir / "cv.json").write_text(json.dumps(clean, indent=2))
    from fracturekit.evaluation.report import write_cv_report

    oof = pd.read_csv(cv_dir / "oof_predictions.csv", dtype={"path": str, "source": str})
    write_cv_report(clean, oof, cv_dir / "report.html")
    return clean


def _start(cv_dir: Path, films: pd.DataFrame, audit_result: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Write folds.csv, audit/ (when the clusters were recomputed) and cv.json (running); the settings recorded.

    A cv folder holding another cv's settings is refused first (`check_same_settings`).
    """
    folds_csv = films[list(FOLD_COLUMNS)].to_csv(index=False)
    settings = settings | {"folds_sha256": sha(folds_csv)}
    check_same_settings(cv_dir, settings)
    cv_dir.mkdir(parents=True, exist_ok=True)
    (cv_dir / "folds.csv").write_text(folds_csv)
    if audit_result is not None:
        audit_result.write(cv_dir / "audit")  # the duplicate clusters the folds were grouped by
    (cv_dir / "cv.json").write_text(json.dumps({"status": "running", "settings": settings}, indent=2))
    return settings


def _common_job(
    task: str,
    base_cfg: Any,
    overrides: dict[str, Any],
    config: str | Path | None,
    rule: ThresholdRule,
    bootstrap: int,
    seed: int,
    executor: str,
    parallel: int,
) -> tuple[FoldJob, list[str]]:
    """What every fold job shares, and the GPUs the executor spreads folds over (none: each fold's own device).

    The device is resolved here once, to plan where the folds go; each fold resolves its own where it runs
    (another process or Ray node), once, for its training and evaluation.
    """
    from fracturekit.core.device import resolve_device
    from fracturekit.core.yolo_env import cpu_threads

    device = resolve_device(overrides.get("device", base_cfg["device"]))
    spread = parallel > 1 or executor == "ray"
    gpus = device.spec.split(",") if device.kind == "cuda" and spread else []
    threads = overrides.get("threads")
    if threads is None and spread and device.kind == "cpu":
        threads = max(1, cpu_threads() // parallel)
    common = FoldJob(
        task=task,
        fold=0,
        model="",
        model_spec="",
        data="",
        run="",
        config=str(Path(config).resolve()) if config else None,
        overrides={k: v for k, v in overrides.items() if k not in ("threads", "device", "seed", "model", "project")},
        threshold=rule,
        bootstrap=bootstrap,
        seed=seed,
        device=None if gpus else overrides.get("device"),
        threads=threads,
    )
    return common, gpus


def _check_options(
    task: str, folds: int, executor: str, parallel: int, ray_timeout: float, threshold: str
) -> ThresholdRule:
    """Refuse bad cv options before any work; the --threshold rule, parsed once for every fold."""
    from fracturekit.training.config import check_known_task

    check_known_task(task)
    if folds < 3:
        raise UserError(f"--folds {folds}: use at least 3 (one test fold, one validation fold, one to train on).")
    if executor not in EXECUTORS:
        raise UserError(f"--executor {executor}: use local or ray.")
    if executor == "ray":
        check_ray_address(ray_timeout)  # before any work: a cluster that does not answer is named within the timeout
    if parallel < 1:
        raise UserError(f"--parallel {parallel}: use 1 or more.")
    return check_threshold(threshold)


def _model_specs(
    task: str, config: str | Path | None, overrides: dict[str, Any], models: Sequence[str] | None
) -> tuple[Any, list[str], list[str]]:
    """(the resolved base config, each model's spec, each model's label); refuses bad flags before any work.

    Files become absolute paths (in `overrides` too): a worker process or Ray task need not share this
    working directory.
    """
    from fracturekit.training.config import resolve_config

    base_cfg = resolve_config(task, config, overrides)
    specs = [str(Path(m).resolve()) if Path(m).is_file() else m for m in (models or [str(base_cfg["model"])])]
    if overrides.get("weights"):
        overrides["weights"] = str(Path(overrides["weights"]).expanduser().resolve())
    labels = [_model_label(s) for s in specs]
    if len(set(labels)) != len(labels):
        raise UserError(f"--model {','.join(specs)}: two models share the name {labels}; pass distinct models.")
    for spec in specs:
        resolve_config(task, config, {**overrides, "model": spec})
    return base_cfg, specs, labels


def _fold_jobs(
    common: FoldJob,
    ds: PreparedDataset,
    films: pd.DataFrame,
    folds: int,
    cv_dir: Path,
    labels: list[str],
    specs: list[str],
) -> list[FoldJob]:
    """One job per fold and model (`common` holds what they share), each fold's dataset built under cv_dir/data."""
    jobs = []
    for k in range(folds):
        fold_data = build_fold_dataset(ds, films, common.task, k, folds, cv_dir / "data" / f"fold{k}")
        for label, spec in zip(labels, specs, strict=True):
            run = cv_dir / (f"fold{k}" if len(labels) == 1 else f"fold{k}-{label}")
            jobs.append(
                replace(
                    common,
                    fold=k,
                    model=label,
                    model_spec=spec,
                    data=str(fold_data.resolve()),
                    run=str(run.resolve()),
                )
            )
    return jobs


def _reporter(
    task: str, results: list[dict[str, Any]], n_jobs: int, say: Callable[[str], None]
) -> Callable[[dict[str, Any]], None]:
    """What the executors call with each finished fold: keep its result and say its numbers."""

    def done(result: dict[str, Any]) -> None:
        results.append(result)
        m = result["metrics"]
        auroc = m["auroc"] if task == "classify" else m["image_auroc"]
        how = "finished earlier, reused" if result["reused"] else f"trained in {result['train_s']:.0f} s"
        say(
            f"fold {result['fold']} model {result['model']}: AUROC {fmt(auroc)}, threshold {fmt(m['threshold'])}, "
            f"sensitivity {fmt(m['sensitivity'])}, specificity {fmt(m['specificity'])} ({how}) "
            f"[{len(results)}/{n_jobs}]"
        )

    return done


def _model_label(spec: str) -> str:
    """A model's short name in folder names and tables: n, s, ... or the file stem."""
    return spec if "/" not in spec and "." not in spec else Path(spec).stem
