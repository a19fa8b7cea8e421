"""`fracturekit compare`: training runs side by side (model size, task, settings, time, metrics).

Each run contributes what it has: its settings (run.json, config.yaml, or Ultralytics' args.yaml),
validation metrics of its best epoch (results.csv), the weights' size and parameter count, and the
held-out numbers of `fracturekit evaluate` (eval/metrics.json) when that was run. A missing piece is
an empty cell, never an error, so runs at different stages can still be compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from rich.table import Table

from fracturekit.core.errors import UserError
from fracturekit.core.layout import RunDir
from fracturekit.core.paths import user_path

# results.csv column that ranks epochs per task (Ultralytics keeps best.pt by a fitness close to these).
_BEST_BY = {"detect": "metrics/mAP50-95(B)", "classify": "metrics/accuracy_top1"}
_VAL_COLUMNS = {
    "metrics/accuracy_top1": "val_top1",
    "metrics/mAP50(B)": "val_map50",
    "metrics/mAP50-95(B)": "val_map50_95",
}


def _read_mapping(path: Path) -> dict[str, Any]:
    """A JSON or YAML mapping, or {} when the file is missing or unreadable (reported as empty cells)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def _param_count(weights: Path) -> float | None:
    """Millions of parameters in a checkpoint (None when it cannot be loaded)."""
    if not weights.is_file():
        return None
    from fracturekit.infer.model import load_checkpoint

    try:
        model = load_checkpoint(weights).model
    except UserError:  # a truncated or foreign file: show an empty cell, keep comparing the others
        return None
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 3)


def _device(value: Any) -> str | None:
    """run.json records the device as a dict (requested, used, name); config files as a string."""
    if isinstance(value, dict):
        used = _first(value.get("used"), value.get("requested"))
        return f"{used} ({value['name']})" if value.get("name") else (str(used) if used is not None else None)
    return None if value is None else str(value)


def _task_of(settings: dict[str, Any], results: pd.DataFrame | None) -> str | None:
    task = settings.get("task")
    if task:
        return str(task)
    if results is not None:
        if _BEST_BY["detect"] in results.columns:
            return "detect"
        if _BEST_BY["classify"] in results.columns:
            return "classify"
    return None


def run_summary(run: str | Path) -> dict[str, Any]:
    """One row of the comparison for a run folder (or a weights file inside one)."""
    rd = RunDir.find(run)
    record = _read_mapping(rd.record)
    config = _read_mapping(rd.config)
    args = _read_mapping(rd.root / "args.yaml")  # Ultralytics' own copy of the training arguments
    settings = {**args, **config, **record}
    results: pd.DataFrame | None = None
    if rd.results_csv.is_file():
        results = pd.read_csv(rd.results_csv)
        results.columns = [c.strip() for c in results.columns]
    task = _task_of(settings, results)
    row: dict[str, Any] = {
        "run": str(rd.root),
        "task": task,
        "model": settings.get("model"),
        "params_M": _param_count(rd.best),
        "weights_MB": round(rd.best.stat().st_size / 2**20, 2) if rd.best.is_file() else None,
        "epochs": len(results) if results is not None else settings.get("epochs"),
        "imgsz": settings.get("imgsz"),
        "batch": settings.get("batch"),
        "device": _device(settings.get("device")),
        "pretrained": settings.get("pretrained"),
        "data_hash": _short(record.get("data_hash")),
        "train_time_s": None,
    }
    if results is not None and len(results):
        if "time" in results.columns:  # Ultralytics logs cumulative seconds per epoch
            row["train_time_s"] = round(float(results["time"].iloc[-1]), 1)
        key = _BEST_BY.get(task or "")
        best = results.loc[results[key].idxmax()] if key in results.columns else results.iloc[-1]
        row["best_epoch"] = int(best["epoch"]) if "epoch" in results.columns else None
        for col, name in _VAL_COLUMNS.items():
            if col in results.columns:
                row[name] = float(best[col])
    timings = settings.get("timings") if isinstance(settings.get("timings"), dict) else {}
    row["train_time_s"] = _first(timings.get("total_s"), row["train_time_s"])
    evaluation = _read_mapping(rd.metrics)
    if evaluation:
        section = evaluation.get("classification" if task == "classify" else "detection") or {}
        if section.get("run") and Path(section["run"]).resolve() != rd.root.resolve():
            section = {}  # eval/ of this run holds the OTHER model's numbers only
        row |= _evaluated(evaluation, section)
    return row


def _evaluated(evaluation: dict[str, Any], section: dict[str, Any]) -> dict[str, Any]:
    """The held-out columns of one model's metrics.json section: where it was evaluated, on which films, numbers."""
    provenance = evaluation.get("provenance") or {}
    row: dict[str, Any] = {
        "eval_split": evaluation.get("split"),
        "eval_data": (provenance.get("dataset") or {}).get("path") or evaluation.get("data"),
        "eval_data_hash": _short((provenance.get("dataset") or {}).get("data_hash")),
        "eval_train_overlap": provenance.get("train_overlap"),
        "eval_films": section.get("n", section.get("n_images")),
        "eval_films_sha256": _short(section.get("films_sha256")),
    }
    keys = ("auroc", "average_precision", "sensitivity", "specificity", "ece_after", "map50_95", "map50")
    for key in (*keys, "image_auroc"):
        if key in section:
            row[f"test_{key}"] = section[key]
    if "pycocotools" in section:
        row["test_coco_map50_95"] = section["pycocotools"].get("map50_95")
    return row


def evaluation_summary(folder: Path) -> list[dict[str, Any]]:
    """Rows for an `evaluate` output folder (e.g. an outside model's `evaluate --scores`): one per model in it."""
    evaluation = _read_mapping(folder / "metrics.json")
    rows = []
    for task, key in (("classify", "classification"), ("detect", "detection")):
        section = evaluation.get(key)
        if not section:
            continue
        outside = section.get("outside") or {}
        model = outside.get("name") or (Path(section["run"]).name if section.get("run") else None)
        rows.append({"run": str(folder), "task": task, "model": model, **_evaluated(evaluation, section)})
    if not rows:
        raise UserError(f"{folder / 'metrics.json'}: no classification or detection section; run `evaluate` again.")
    return rows


def _short(data_hash: Any) -> str | None:
    """The first 12 hex digits of a data_hash: enough to tell datasets apart in a table."""
    return str(data_hash)[:12] if data_hash else None


def data_warnings(df: pd.DataFrame) -> list[str]:
    """Sentences for runs whose held-out numbers are not comparable: evaluated on different data or splits."""
    if "eval_split" not in df.columns:
        return []
    evaluated = df.dropna(subset=["eval_split"])
    keys = {(row.get("eval_data_hash") or row.get("eval_data"), row["eval_split"]) for _, row in evaluated.iterrows()}
    if len(keys) <= 1:
        return []
    where = "; ".join(
        f"{Path(row['run']).name}: {row['eval_split']} of {row.get('eval_data')} "
        f"(data_hash {row.get('eval_data_hash')})"
        for _, row in evaluated.iterrows()
    )
    return [
        f"the runs were evaluated on different data or splits, so their held-out numbers are not comparable: {where}"
    ]


def films_note(df: pd.DataFrame) -> list[tuple[bool, str]]:
    """Per task, (same films?, a sentence): whether the evaluated models were scored on the same films."""
    if "eval_films_sha256" not in df.columns:
        return []
    notes = []
    for task, rows in df.dropna(subset=["eval_films_sha256"]).groupby("task"):
        if len(rows) < 2:
            continue
        if rows["eval_films_sha256"].nunique() == 1:
            n = int(rows["eval_films"].iloc[0])
            notes.append((True, f"{task}: the {len(rows)} models were scored on the same {n} films."))
        else:
            where = "; ".join(
                f"{Path(r['run']).name}: {int(r['eval_films'])} films ({r['eval_films_sha256']})"
                for _, r in rows.iterrows()
            )
            notes.append((False, f"{task}: the models were scored on different films, not paired: {where}."))
    return notes


def compare(runs: list[Path]) -> pd.DataFrame:
    """Side-by-side table: one row per run (`run_summary`), or per model of an `evaluate` output folder
    (`evaluation_summary`: an outside model's `evaluate --scores`); missing = NaN."""
    if not runs:
        raise UserError("no runs given; pass two or more `fracturekit train` run folders.")
    rows: list[dict[str, Any]] = []
    for r in runs:
        folder = user_path(r)
        is_eval = folder.is_dir() and (folder / "metrics.json").is_file() and not (folder / "weights").is_dir()
        rows += evaluation_summary(folder) if is_eval else [run_summary(r)]
    return pd.DataFrame(rows)


def compare_table(df: pd.DataFrame) -> Table:
    """Rich table with runs as columns and one row per attribute (wide tables do not fit a terminal)."""
    table = Table(title="fracturekit compare")
    table.add_column("")
    for i, run in enumerate(df["run"]):
        table.add_column(f"{i + 1}: {Path(run).parent.name}/{Path(run).name}", justify="right")
    for col in df.columns.drop("run"):
        cells = []
        for v in df[col]:
            if v is None or (isinstance(v, float) and pd.isna(v)):
                cells.append("")
            elif isinstance(v, float):
                cells.append(f"{v:.4g}")
            else:
                cells.append(str(v))
        table.add_row(col, *cells)
    return table
