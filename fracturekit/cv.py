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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from fracturekit import callable_stage
from fracturekit import metrics as M
from fracturekit.errors import UserError
from fracturekit.layout import MANIFEST_COLUMNS, POSITIVE_CLASS, PreparedDataset, RunDir
from fracturekit.options import check_threshold
from fracturekit.split import units

if TYPE_CHECKING:
    from fracturekit.audit import AuditResult

EXECUTORS = ("local", "ray")
FOLD_COLUMNS = ("source", "fold", "label", "group", "cluster", "split", "path")
OOF_COLUMNS = ("path", "label", "fold", "model", "score", "score_raw", "source")
# Per-fold numbers averaged over folds (mean and sample sd, ddof=1), per task.
SUMMARY_KEYS = {
    "classify": ("auroc", "average_precision", "sensitivity", "specificity"),
    "detect": ("map50_95", "map50", "image_auroc", "sensitivity", "specificity"),
}
_MARKER = "cv_fold.json"  # written last into a fold run: its presence means the fold is finished


# ------------------------------------------------------------------ folds


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


def roles(k: int, n_folds: int) -> dict[str, Any]:
    """Fold k tests, fold k+1 (mod K) validates, the rest train."""
    val = (k + 1) % n_folds
    return {"test": k, "val": val, "train": [f for f in range(n_folds) if f not in (k, val)]}


# ------------------------------------------------------------------ fold datasets


def _link(src: Path, dst: Path) -> None:
    """A symlink (no copy); a hard link or a copy where the file system refuses symlinks."""
    try:
        os.symlink(src, dst)
    except OSError:
        from fracturekit.prepare import _link_or_copy

        _link_or_copy(src, dst)


def build_fold_dataset(ds: PreparedDataset, films: pd.DataFrame, task: str, k: int, n_folds: int, out: Path) -> Path:
    """`out`: a prepared dataset for fold k (cls/ or det/ of links to `ds`'s films, manifest.csv, prepare.json).

    Rebuilt only when its manifest would change, so a finished fold's run keeps its dataset.
    """
    from fracturekit.prepare import data_hash

    r = roles(k, n_folds)
    split_of = {r["test"]: "test", r["val"]: "val", **{f: "train" for f in r["train"]}}
    rows = films.copy()
    rows["split"] = rows["fold"].astype(int).map(split_of)
    rows["fold"] = rows["fold"].astype(str)
    links: list[tuple[Path, str]] = []
    new_cls, new_det, new_lbl = [], [], []
    for row in rows.itertuples(index=False):
        name = Path(row.path).name
        if task == "classify":
            class_dir = Path(row.output_cls).parts[-2]
            rel = f"cls/{row.split}/{class_dir}/{name}"
            links.append((ds.root / row.output_cls, rel))
            new_cls.append(rel)
            new_det.append("")
            new_lbl.append("")
        else:
            rel = f"det/images/{row.split}/{name}"
            lbl = f"det/labels/{row.split}/{Path(name).stem}.txt"
            links += [(ds.root / row.output_det, rel), (ds.root / row.label_file, lbl)]
            new_cls.append("")
            new_det.append(rel)
            new_lbl.append(lbl)
    rows["output_cls"], rows["output_det"], rows["label_file"] = new_cls, new_det, new_lbl
    columns = [*MANIFEST_COLUMNS, *[c for c in rows.columns if c not in MANIFEST_COLUMNS and c != "path"]]
    text = rows[columns].to_csv(index=False)
    if (out / "manifest.csv").is_file() and (out / "manifest.csv").read_text() == text:
        return out
    if out.exists():
        shutil.rmtree(out)  # a stale fold dataset inside the cv folder (links only)
    for src, rel in links:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        _link(src.resolve(), out / rel)
    if task == "detect":
        names = yaml.safe_load(ds.data_yaml.read_text())["names"]
        for s in ("train", "val", "test"):
            (out / "det" / "images" / s).mkdir(parents=True, exist_ok=True)
        data_yaml = {"train": "images/train", "val": "images/val", "test": "images/test", "names": names}
        (out / "det" / "data.yaml").write_text(yaml.safe_dump(data_yaml, sort_keys=False))
    summary = {
        "cv_fold_of": str(ds.root.resolve()),
        "fold": k,
        "roles": r,
        "per_split": {
            s: rows[rows["split"] == s]["label"].value_counts().sort_index().to_dict() for s in ("train", "val", "test")
        },
        "data_hash": data_hash(
            zip(rows["sha256"], rows["split"], rows["label"], rows["boxes"].replace("", "null"), strict=True)
        ),
    }
    (out / "prepare.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "manifest.csv").write_text(text)  # last: its presence means the fold dataset is complete
    return out


# ------------------------------------------------------------------ one fold


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
    threshold: str
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
    from fracturekit.device import resolve_device
    from fracturekit.evaluate import evaluate
    from fracturekit.train import train

    with _cpu_share(job.threads, job.slot):
        overrides = {**job.overrides, "model": job.model_spec, "exist_ok": True, "seed": job.seed}
        overrides |= {k: v for k, v in (("device", job.device), ("threads", job.threads)) if v is not None}
        rd = train(job.task, job.data, config=job.config, folder=run, **overrides)
        device = resolve_device(job.device or "auto")
        kind = "classifier" if job.task == "classify" else "detector"
        metrics = evaluate(
            job.data,
            **{kind: rd.root},
            split="test",
            out=rd.eval_dir,
            threshold=job.threshold,
            device=device.spec.split(",")[0] if device.kind == "cuda" else device.spec,
            bootstrap=job.bootstrap,
            seed=job.seed,
        )
    record = {
        "fold": job.fold,
        "model": job.model,
        "run": str(rd.root),
        "data": job.data,
        "metrics": _fold_metrics(job.task, metrics),
        "train_s": json.loads(rd.record.read_text())["timings"]["total_s"],
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


# ------------------------------------------------------------------ executors


def run_local(
    jobs: list[FoldJob], parallel: int, on_done: Callable[[dict[str, Any]], None], gpus: Sequence[str] = ()
) -> None:
    """Run the jobs in this process one after another, or in `parallel` worker processes (one per slot).

    gpus: CUDA device ids; slot s then trains on gpus[s % len(gpus)].
    """
    if parallel <= 1:
        for job in jobs:
            on_done(run_fold(job))
        return
    queue = deque(jobs)
    lock = threading.Lock()
    failed: list[BaseException] = []

    def slot(s: int) -> None:
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            while True:
                with lock:
                    if failed or not queue:
                        return
                    job = queue.popleft()
                job = replace(job, slot=s, device=gpus[s % len(gpus)] if gpus else job.device)
                try:
                    result = pool.submit(run_fold, job).result()
                except BaseException as exc:
                    with lock:
                        failed.append(exc)
                    return
                with lock:
                    on_done(result)

    with ThreadPoolExecutor(parallel) as threads:
        list(threads.map(slot, range(parallel)))
    if failed:
        raise failed[0]


def run_ray(
    jobs: list[FoldJob], parallel: int, on_done: Callable[[dict[str, Any]], None], gpus: Sequence[str] = ()
) -> None:
    """Each job a Ray task (one GPU each when `gpus` is not empty), at most `parallel` at a time.

    Connects to the cluster in RAY_ADDRESS, else starts a local Ray instance. Data and project paths
    must be on storage that every Ray node sees under the same path.
    """
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'fracturekit[ray]'.") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage report
    env = {k: v for k, v in os.environ.items() if k.startswith(("YOLO_", "FRACTUREKIT_", "MPLCONFIGDIR"))}
    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        _check_ray_fits(ray, max((j.threads or 1) for j in jobs), bool(gpus))
        remote = ray.remote(run_fold)
        pending: dict[Any, None] = {}
        queue = deque(jobs)
        slots = deque(range(parallel))
        slot_of: dict[Any, int] = {}
        while queue or pending:
            while queue and slots:
                job = replace(queue.popleft(), slot=slots.popleft())
                if gpus:  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU: inside the task it is device 0
                    job = replace(job, device="0")
                ref = remote.options(num_cpus=job.threads or 1, num_gpus=1 if gpus else 0).remote(job)
                pending[ref] = None
                slot_of[ref] = job.slot
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                del pending[ref]
                slots.append(slot_of.pop(ref))
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    if isinstance(exc.cause, UserError):  # one sentence, not Ray's remote traceback
                        raise exc.cause from None
                    raise
                on_done(result)
    finally:
        if started:
            ray.shutdown()


def _check_ray_fits(ray: Any, cpus: int, gpu: bool) -> None:
    """Refuse a fold that no Ray node can hold (Ray would leave it pending forever)."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    most_cpus = max((int(r.get("CPU", 0)) for r in nodes), default=0)
    if cpus > most_cpus:
        raise UserError(
            f"each fold asks Ray for {cpus} CPUs but its largest node has {most_cpus}; pass --threads {most_cpus}."
        )
    if gpu and not any(r.get("GPU", 0) >= 1 for r in nodes):
        raise UserError("each fold asks Ray for a GPU but no Ray node has one; pass --device cpu.")


# ------------------------------------------------------------------ the command


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
    config: str | Path | None = None,
    threshold: str = "youden",
    bootstrap: int = 1000,
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """K-fold cross-validation of `train` + `evaluate` on a prepared dataset; returns cv.json's content.

    models: model specs (n, s, ... or a .yaml/.pt), all trained on the same folds (default: the config's).
    overrides: train config keys (epochs, imgsz, seed, device, threads, ...), as for `train`.
    """
    from fracturekit.config import TASKS, resolve_config
    from fracturekit.device import resolve_device
    from fracturekit.yolo_env import cpu_threads

    say = progress or (lambda _msg: None)
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; use --task classify or --task detect.")
    if folds < 3:
        raise UserError(f"--folds {folds}: use at least 3 (one test fold, one validation fold, one to train on).")
    if executor not in EXECUTORS:
        raise UserError(f"--executor {executor}: use local or ray.")
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
    cv_dir = _cv_folder(Path(project or base_cfg["project"]).expanduser(), name)
    _check_ours(cv_dir)

    films, audit_result = load_films(ds, task)
    if task == "classify" and films["label"].nunique() != 2:
        raise UserError(
            f"{ds.manifest}: cv scores a binary fracture/no-fracture classifier, but the films have "
            f"{films['label'].nunique()} labels ({', '.join(sorted(films['label'].unique()))}); prepare with --map."
        )
    unit_ids = fold_units(films["group"].tolist(), films["cluster"].tolist())
    films["fold"] = assign_folds(films["label"].tolist(), unit_ids, folds, seed)
    folds_csv = films[list(FOLD_COLUMNS)].to_csv(index=False)
    settings = _settings(task, ds, folds, seed, dict(zip(labels, specs, strict=True)), config, overrides)
    settings |= {"threshold": threshold, "bootstrap": bootstrap, "folds_sha256": _sha(folds_csv)}
    _check_same_settings(cv_dir, settings)
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
            f"fold {result['fold']} model {result['model']}: AUROC {_f(auroc)}, threshold {_f(m['threshold'])}, "
            f"sensitivity {_f(m['sensitivity'])}, specificity {_f(m['specificity'])} ({how}) "
            f"[{len(results)}/{len(jobs)}]"
        )

    (run_ray if executor == "ray" else run_local)(jobs, parallel, done, gpus)
    record = summarize(task, cv_dir, films, results, labels, bootstrap, seed)
    record = {"status": "finished", "out": str(cv_dir), "settings": settings, "executor": executor, **record}
    record["parallel"] = parallel
    clean = _json_safe(record)
    (cv_dir / "cv.json").write_text(json.dumps(clean, indent=2))
    from fracturekit.report import write_cv_report

    oof = pd.read_csv(cv_dir / "oof_predictions.csv", dtype={"path": str, "source": str})
    write_cv_report(clean, oof, cv_dir / "report.html")
    return clean


def _model_label(spec: str) -> str:
    """A model's short name in folder names and tables: n, s, ... or the file stem."""
    return spec if "/" not in spec and "." not in spec else Path(spec).stem


def _cv_folder(project: Path, name: str | None) -> Path:
    """`<project>/cv/<name>`, or the first free of cv, cv2, ... when no name is given."""
    base = project.resolve() / "cv"
    if name:
        if Path(name).name != name or name in (".", ".."):
            raise UserError(f"--name {name!r}: give a plain folder name; use --project for where it goes.")
        return base / name
    n = 1
    while (base / (f"cv{n}" if n > 1 else "cv")).exists():
        n += 1
    return base / (f"cv{n}" if n > 1 else "cv")


def _check_ours(cv_dir: Path) -> None:
    """Refuse a non-empty folder that no fracturekit cv wrote (nothing a user put there is touched)."""
    if cv_dir.exists() and any(cv_dir.iterdir()) and not (cv_dir / "cv.json").is_file():
        raise UserError(f"{cv_dir} exists and is not a fracturekit cv folder (no cv.json); pass another --name.")


def _check_same_settings(cv_dir: Path, settings: dict[str, Any]) -> None:
    """A re-run into an existing cv folder resumes it only when every setting (and so every fold) is the same."""
    path = cv_dir / "cv.json"
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text()).get("settings", {})
    except json.JSONDecodeError:
        raise UserError(f"{path}: not readable JSON; pass another --name.") from None
    old = _json_safe(old)
    new = _json_safe(settings)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            raise UserError(
                f"{cv_dir} holds a cv with other settings ({key}: {old.get(key)!r} there, {new.get(key)!r} now); "
                "pass another --name, or the same settings to resume it."
            )


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _settings(
    task: str,
    ds: PreparedDataset,
    folds: int,
    seed: int,
    models: dict[str, str],
    config: str | Path | None,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    """What makes two cvs the same (so a re-run may reuse finished folds): not threads, device or executor."""
    summary = json.loads(ds.summary.read_text()) if ds.summary.is_file() else {}
    skip = ("threads", "device", "project", "seed", "model", "exist_ok")
    return {
        "task": task,
        "data": str(ds.root.resolve()),
        "data_hash": summary.get("data_hash"),
        "manifest_sha256": _sha(ds.manifest.read_text()),
        "folds": folds,
        "seed": seed,
        "models": models,
        "config": str(Path(config).resolve()) if config else None,
        "config_sha256": _sha(Path(config).read_text()) if config else None,
        "train_overrides": {
            k: str(v) if isinstance(v, Path) else v for k, v in sorted(overrides.items()) if k not in skip
        },
        "test_split": "folded in: every ok film is in one fold; the prepared train/val/test split is not used",
        "roles": "fold k tests, fold (k+1) mod K validates (early stopping, threshold, temperature), the rest train",
    }


def _f(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _json_safe(obj: Any) -> Any:
    from fracturekit.evaluate import _nan_to_none

    return json.loads(json.dumps(_nan_to_none(obj), default=str))


# ------------------------------------------------------------------ pooling


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
    fold_rows, oof_parts = [], []
    for r in results:
        ro = roles(r["fold"], int(films["fold"].max()) + 1)
        fold_rows.append(
            {
                "fold": r["fold"],
                "model": r["model"],
                "val_fold": ro["val"],
                "train_folds": ro["train"],
                "run": r["run"],
                **r["metrics"],
            }
        )
        pred = pd.read_csv(RunDir(Path(r["run"])).eval_dir / "predictions.csv", dtype={"path": str})
        name = pred["path"].map(lambda p: Path(p).name)
        film = by_name.loc[name]
        if (film["fold"].astype(int) != r["fold"]).any():
            raise RuntimeError(f"{r['run']}: predictions on films outside test fold {r['fold']}")
        calibrated = "score_calibrated" in pred.columns
        oof_parts.append(
            pd.DataFrame(
                {
                    "path": film["path"].to_numpy(),
                    "label": film["label"].to_numpy(),
                    "unit": film["unit"].to_numpy(),  # for the bootstraps, not written to oof_predictions.csv
                    "fold": r["fold"],
                    "model": r["model"],
                    "score": (pred["score_calibrated"] if calibrated else pred["score"]).to_numpy(),
                    "score_raw": pred["score"].to_numpy(),
                    "source": film["source"].to_numpy(),
                }
            )
        )
    oof = pd.concat(oof_parts, ignore_index=True)
    oof.to_csv(cv_dir / "oof_predictions.csv", index=False, columns=list(OOF_COLUMNS))
    keys = SUMMARY_KEYS[task]
    mean, std, pooled = {}, {}, {}
    for label in labels:
        rows = [f for f in fold_rows if f["model"] == label]
        mean[label] = {k: _nanstat(np.nanmean, [f[k] for f in rows]) for k in keys}
        std[label] = {k: _nanstat(lambda a: np.nanstd(a, ddof=1), [f[k] for f in rows]) for k in keys}
        part = oof[oof["model"] == label]
        y = positive(part["label"])
        lo, hi = M.bootstrap_ci(y, part["score"].to_numpy(), part["unit"].to_numpy(), n_boot, seed)
        pooled[label] = {
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
    out: dict[str, Any] = {"models": labels, "folds": fold_rows, "mean": mean, "std": std, "oof": pooled}
    out["std_note"] = "sample standard deviation over folds (ddof=1)"
    if len(labels) > 1:
        out["comparison"] = [
            compare_models(oof, fold_rows, a, b, task, n_boot, seed)
            for i, a in enumerate(labels)
            for b in labels[i + 1 :]
        ]
    return out


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


callable_stage(__name__)  # `fracturekit.cv(...)` runs cross_validate() above: see fracturekit.Stage
