"""One cv fold: the job it is (picklable), its train + evaluate run, the numbers cv.json keeps, its CPU share.

A fold run's `cv_fold.json` is written last: its presence means the fold is finished and a re-run reuses it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fracturekit.evaluation.metrics import ThresholdRule

_MARKER = "cv_fold.json"  # written last into a fold run: its presence means the fold is finished


@dataclass(frozen=True)
class FoldJob:
    """Everything one fold run needs (picklable: it travels to a worker process or a Ray task)."""

    task: str
    fold: int
    model: str  # label, e.g. "n"
    model_spec: str
    data: str
    run: str
    config: str | None
    overrides: dict[str, Any]
    threshold: ThresholdRule  # parsed once by cross_validate
    bootstrap: int
    seed: int
    device: str | None
    threads: int | None
    slot: int = 0  # which share of the CPUs this job may use when several run at once


def run_fold(job: FoldJob) -> dict[str, Any]:
    """Train and evaluate one fold (or read it back when finished earlier); the fold's record."""
    run = Path(job.run)
    marker = run / _MARKER
    if marker.is_file():
        return {**json.loads(marker.read_text()), "reused": True}
    from fracturekit.core.options import InferenceDevice
    from fracturekit.evaluate import evaluate
    from fracturekit.train import train_recorded

    with _cpu_share(job.threads, job.slot):
        overrides = {**job.overrides, "model": job.model_spec, "exist_ok": True, "seed": job.seed}
        overrides |= {k: v for k, v in (("device", job.device), ("threads", job.threads)) if v is not None}
        trained = train_recorded(job.task, job.data, config=job.config, folder=run, **overrides)
        rd = trained.run
        kind = "classifier" if job.task == "classify" else "detector"
        metrics = evaluate(
            job.data,
            **{kind: rd.root},
            split="test",
            out=rd.eval_dir,
            threshold=job.threshold,
            device=InferenceDevice.of(trained.device),  # where this fold trained, resolved once by train
            bootstrap=job.bootstrap,
            seed=job.seed,
        )
    record = {
        "fold": job.fold,
        "model": job.model,
        "run": str(rd.root),
        "data": job.data,
        "metrics": _fold_metrics(job.task, metrics),
        "train_s": trained.record["timings"]["total_s"],
        "threads": job.threads,
        "device": job.device,
    }
    marker.write_text(json.dumps(record, indent=2))
    return {**record, "reused": False}


def _fold_metrics(task: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """The per-fold numbers cv.json keeps from the fold's metrics.json."""
    if task == "classify":
        c = metrics["classification"]
        keys = ("n", "n_positive", "auroc", "auroc_ci95", "average_precision", "threshold", "sensitivity")
        keys += ("specificity", "temperature", "ece_before", "ece_after")
        return {k: c.get(k) for k in keys}
    d = metrics["detection"]
    il = d["image_level"]
    return {
        "n": d["n_images"],
        "n_positive": il["n_positive"],
        "map50_95": d["map50_95"],
        "map50": d["map50"],
        "pycocotools_map50_95": d["pycocotools"]["map50_95"],
        "image_auroc": d["image_auroc"],
        "image_auroc_ci95": d["image_auroc_ci95"],
        "threshold": d["threshold"],
        "sensitivity": il["sensitivity"],
        "specificity": il["specificity"],
    }


@contextlib.contextmanager
def _cpu_share(threads: int | None, slot: int) -> Iterator[None]:
    """Pin this process to its own `threads` cores while a fold runs beside others on the same CPU.

    torch, OpenCV and fracturekit's `cpu_threads` all read the affinity mask, so evaluation (which sizes
    its threads itself) stays in the share too; two folds on 2 cores then use one core each, not both.
    """
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not threads or not allowed or threads >= len(allowed):
        yield
        return
    start = (slot * threads) % len(allowed)
    share = {allowed[(start + i) % len(allowed)] for i in range(threads)}
    os.sched_setaffinity(0, share)
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)
