"""`cross_validate`, the cv command: checks its options, assigns the folds, runs the fold jobs, pools, reports.

It writes folds.csv, audit/ (when it recomputed the clusters), cv.json (status running, then finished) and
report.html; the other modules of `fracturekit.cv` do the parts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fracturekit.cv.datasets import build_fold_dataset
from fracturekit.cv.executors import EXECUTORS, check_ray_address, run_local, run_ray
from fracturekit.cv.fold import FoldJob
from fracturekit.cv.folder import check_ours, check_same_settings, cv_folder, cv_settings, json_safe, sha
from fracturekit.cv.folds import FOLD_COLUMNS, plan_folds
from fracturekit.cv.pooling import summarize
from fracturekit.errors import UserError
from fracturekit.folderlock import lock_folder
from fracturekit.layout import PreparedDataset
from fracturekit.options import check_threshold
from fracturekit.report import fmt


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
    from fracturekit.config import check_known_task, resolve_config
    from fracturekit.device import resolve_device
    from fracturekit.yolo_env import cpu_threads

    say = progress or (lambda _msg: None)
    check_known_task(task)
    if folds < 3:
        raise UserError(f"--folds {folds}: use at least 3 (one test fold, one validation fold, one to train on).")
    if executor not in EXECUTORS:
        raise UserError(f"--executor {executor}: use local or ray.")
    if executor == "ray":
        check_ray_address(ray_timeout)  # before any work: a cluster that does not answer is named within the timeout
    if parallel < 1:
        raise UserError(f"--parallel {parallel}: use 1 or more.")
    check_threshold(threshold)
    ds = PreparedDataset.open(data)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for key in ("name", "resume"):
        if overrides.pop(key, None):
            raise UserError(f"--{key} is not a cv option: name the cv with --name; a re-run resumes it.")
    base_cfg = resolve_config(task, config, overrides)  # refuses bad flags before any work
    # files as absolute paths: a worker process or Ray task need not share this working directory
    specs = [str(Path(m).resolve()) if Path(m).is_file() else m for m in (models or [str(base_cfg["model"])])]
    if overrides.get("weights"):
        overrides["weights"] = str(Path(overrides["weights"]).expanduser().resolve())
    labels = [_model_label(s) for s in specs]
    if len(set(labels)) != len(labels):
        raise UserError(f"--model {','.join(specs)}: two models share the name {labels}; pass distinct models.")
    for spec in specs:
        resolve_config(task, config, {**overrides, "model": spec})
    seed = int(base_cfg["seed"])
    cv_dir = cv_folder(Path(project or base_cfg["project"]).expanduser(), name)
    check_ours(cv_dir)
    lock = lock_folder(cv_dir, "cv")  # noqa: F841 - held until cv returns: one cv per folder (folds lock their own)

    films, unit_ids, audit_result = plan_folds(ds, task, folds, seed)
    folds_csv = films[list(FOLD_COLUMNS)].to_csv(index=False)
    settings = cv_settings(task, ds, folds, seed, dict(zip(labels, specs, strict=True)), config, overrides)
    settings |= {"threshold": threshold, "bootstrap": bootstrap, "folds_sha256": sha(folds_csv)}
    check_same_settings(cv_dir, settings)
    cv_dir.mkdir(parents=True, exist_ok=True)
    (cv_dir / "folds.csv").write_text(folds_csv)
    if audit_result is not None:
        audit_result.write(cv_dir / "audit")  # the duplicate clusters the folds were grouped by
    record: dict[str, Any] = {"status": "running", "settings": settings}
    (cv_dir / "cv.json").write_text(json.dumps(record, indent=2))
    say(
        f"{len(films)} films in {folds} folds ({np.unique(unit_ids).size} independent units; "
        f"{int((films['cluster'] != '').sum())} films in duplicate clusters); cv folder {cv_dir}"
    )

    device = resolve_device(overrides.get("device", base_cfg["device"]))
    gpus = device.spec.split(",") if device.kind == "cuda" and (parallel > 1 or executor == "ray") else []
    threads = overrides.get("threads")
    if threads is None and (parallel > 1 or executor == "ray") and device.kind == "cpu":
        threads = max(1, cpu_threads() // parallel)
    job_overrides = {k: v for k, v in overrides.items() if k not in ("threads", "device", "seed", "model", "project")}
    jobs = []
    for k in range(folds):
        fold_data = build_fold_dataset(ds, films, task, k, folds, cv_dir / "data" / f"fold{k}")
        for label, spec in zip(labels, specs, strict=True):
            run = cv_dir / (f"fold{k}" if len(labels) == 1 else f"fold{k}-{label}")
            jobs.append(
                FoldJob(
                    task=task,
                    fold=k,
                    model=label,
                    model_spec=spec,
                    data=str(fold_data.resolve()),
                    run=str(run.resolve()),
                    config=str(Path(config).resolve()) if config else None,
                    overrides=job_overrides,
                    threshold=threshold,
                    bootstrap=bootstrap,
                    seed=seed,
                    device=None if gpus else overrides.get("device"),
                    threads=threads,
                )
            )

    results: list[dict[str, Any]] = []

    def done(result: dict[str, Any]) -> None:
        results.append(result)
        m = result["metrics"]
        auroc = m["auroc"] if task == "classify" else m["image_auroc"]
        how = "finished earlier, reused" if result["reused"] else f"trained in {result['train_s']:.0f} s"
        say(
            f"fold {result['fold']} model {result['model']}: AUROC {fmt(auroc)}, threshold {fmt(m['threshold'])}, "
            f"sensitivity {fmt(m['sensitivity'])}, specificity {fmt(m['specificity'])} ({how}) "
            f"[{len(results)}/{len(jobs)}]"
        )

    (run_ray if executor == "ray" else run_local)(jobs, parallel, done, gpus)
    record = summarize(task, cv_dir, films, results, labels, bootstrap, seed)
    record = {"status": "finished", "out": str(cv_dir), "settings": settings, "executor": executor, **record}
    record["parallel"] = parallel
    clean = json_safe(record)
    (cv_dir / "cv.json").write_text(json.dumps(clean, indent=2))
    from fracturekit.report import write_cv_report

    oof = pd.read_csv(cv_dir / "oof_predictions.csv", dtype={"path": str, "source": str})
    write_cv_report(clean, oof, cv_dir / "report.html")
    return clean


def _model_label(spec: str) -> str:
    """A model's short name in folder names and tables: n, s, ... or the file stem."""
    return spec if "/" not in spec and "." not in spec else Path(spec).stem
