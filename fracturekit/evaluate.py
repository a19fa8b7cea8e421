"""`fracturekit evaluate`: how good the trained models really are, on one split of a prepared dataset.

Both models are scored through the inference core (`fracturekit.infer`), the very path `predict` uses, so a
threshold chosen here means the same there. The classifier half (`evaluation.classification`) fits the
temperature and chooses the threshold on the VALIDATION split, then applies both unchanged to the evaluated
split; the detector half (`evaluation.detection`) reports Ultralytics `val` numbers, pycocotools on the core's
boxes against a COCO ground truth built from the YOLO labels, and an image-level score (highest box
confidence, 0 without a box) so the detector gets an AUROC on every image, backgrounds included. Writes
metrics.json, predictions.csv, report.html, cases.csv + cases/ (the films to review, see fracturekit.evaluation.cases)
and, for a detector, ground_truth_coco.json + detections_coco.json (the very boxes COCOeval scored, so anyone
can re-score them) into `out`.

A model fracturekit did not train enters as its scores (`--scores`: a CSV of probabilities, or COCO results
boxes; `evaluation.outside` reads and checks them) and goes through the same halves from the arrays on, so its
outputs are those of a run; provenance names the scores files and their sha256 instead of a run.

Before any inference, every film to be scored is compared with the films each model trained and validated
on (a run's seen.csv, an outside model's --seen list; fracturekit.training.provenance, by the audit's duplicate test):
a copy refuses the evaluation unless `allow_overlap`, and metrics.json's `provenance` (build_provenance)
records the count either way.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fracturekit import callable_stage
from fracturekit.core.errors import UserError
from fracturekit.core.folderlock import FolderLock, lock_folder, release_on_error
from fracturekit.core.layout import SPLITS, PreparedDataset, RunDir
from fracturekit.core.options import InferenceOptions
from fracturekit.core.outputs import check_free, claim, files_under, increment, write_record
from fracturekit.core.paths import rel_to, user_path
from fracturekit.core.progress import Progress
from fracturekit.data.imageio import is_image_file
from fracturekit.data.split import unit_basis
from fracturekit.evaluation import cases as C
from fracturekit.evaluation.calibration import TEMPERATURE_BOUNDS
from fracturekit.evaluation.cases import DEFAULT_N, ModelScores
from fracturekit.evaluation.classification import classification_report, classify_images, evaluate_classifier
from fracturekit.evaluation.common import THRESHOLD_SPLIT, EvalContext, labelled_confusion
from fracturekit.evaluation.detection import check_detection_data, coco_ground_truth, evaluate_detector
from fracturekit.evaluation.outside import (
    OutsideModel,
    evaluate_scores_classifier,
    evaluate_scores_detector,
    outside_models,
    read_scores,
)
from fracturekit.infer.backends import CAM_NAME, REFERENCE_NAME
from fracturekit.infer.model import Model, load_model

__all__ = [
    "THRESHOLD_SPLIT",
    "build_provenance",
    "classification_report",
    "classify_images",
    "coco_ground_truth",
    "evaluate",
    "labelled_confusion",
    "metric_warnings",
]
# "Too few to judge": below 10 positives a sensitivity moves in steps of 0.1 or more; below 30 films the
# AUROC CI usually spans more than 0.2. A 95% CI wider than 0.2 AUROC runs from "weak" to "good".
MIN_POSITIVES, MIN_FILMS, WIDE_CI = 10, 30, 0.2
log = logging.getLogger(__name__)


# ------------------------------------------------------------------ provenance, warnings, labels


def _ci_width(ci: Any) -> float:
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or any(v is None or math.isnan(v) for v in ci):
        return float("nan")
    return float(ci[1] - ci[0])


def metric_warnings(metrics: dict[str, Any]) -> list[str]:
    """Warning signs a reader should see before the numbers; subgroups too small to judge are marked in place.

    A temperature at its search bound, a test split of under MIN_FILMS independent units, subgroups under
    MIN_POSITIVES positives or MIN_FILMS films, 95% CIs wider than WIDE_CI, runs trained on another dataset
    version, evaluation on the threshold split.
    """
    out: list[str] = []
    if metrics.get("warning"):
        out.append(metrics["warning"])
    prov = metrics.get("provenance") or {}
    ds_hash = (prov.get("dataset") or {}).get("data_hash")
    for name, run in (prov.get("runs") or {}).items():
        if ds_hash and run.get("data_hash") and run["data_hash"] != ds_hash:
            out.append(
                f"the {name} was trained on another version of the dataset (data_hash {run['data_hash'][:12]} vs "
                f"{ds_hash[:12]}: other films, labels, split or --clahe/--max-side): its test films may have been "
                "training films, or prepared otherwise than the films it learned from."
            )
    c = metrics.get("classification") or {}
    t = c.get("temperature")
    lo, hi = TEMPERATURE_BOUNDS
    if t is not None and any(abs(math.log(t / b)) < 1e-3 for b in (lo, hi)):
        out.append(
            f"the classifier's temperature {t:.3g} sits at its search bound ({lo:.2g}-{hi:.0f}): one scalar "
            "cannot calibrate these val scores (a near-constant model or too few val films); "
            "do not read the calibrated probabilities as frequencies."
        )
    d = metrics.get("detection") or {}
    for model, section, ci in (("classifier", c, c.get("auroc_ci95")), ("detector", d, d.get("image_auroc_ci95"))):
        units = section.get("n_units") if section else None
        if units is not None and units < MIN_FILMS:
            # a split of a copy-family set can hold hundreds of films and two units (bench/leakage_bench.py
            # --families: 212 test films, 2 units, AUROC 0.999 that only ranked two families)
            out.append(
                f"the {model}'s test films are {units} independent unit{'s' * (units != 1)} "
                f"(films linked as copies or by patient count once; < {MIN_FILMS}): its AUROC ranks those units, "
                "not films; use cross-validation (fracturekit cv) or a larger test split."
            )
        if section and _ci_width(ci) > WIDE_CI:
            out.append(
                f"the {model}'s AUROC 95% CI [{ci[0]:.3f}, {ci[1]:.3f}] is {_ci_width(ci):.2f} wide (> {WIDE_CI}): "
                "too few films to rank it against another model."
            )
        for col, groups in (section.get("subgroups") or {}).items():
            small = []
            for value, g in groups.items():
                n_pos = g.get("n_positive")  # None for a multi-class classifier: the film count alone decides
                g["too_few_to_judge"] = (n_pos is not None and n_pos < MIN_POSITIVES) or (g.get("n") or 0) < MIN_FILMS
                if g["too_few_to_judge"]:
                    small.append(f"{value} ({g.get('n')} films, {g.get('n_positive')} positive)")
            if small:
                out.append(
                    f"{model} by {col}: too few to judge (< {MIN_POSITIVES} positives or < {MIN_FILMS} films): "
                    + ", ".join(small)
                    + "."
                )
    return out


# ------------------------------------------------------------------ main entry


def _load_model(run: str | Path, task: str, opts: InferenceOptions) -> Model:
    """The run's best.pt (PyTorch: what is evaluated is the trained model itself) through the inference core."""
    return load_model(run, task, opts.imgsz, device=opts.device, backend=REFERENCE_NAME, with_metrics=False)


def nan_to_none(obj: Any) -> Any:
    """JSON has no NaN: write null for undefined metrics."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {str(k): nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    if isinstance(obj, np.generic):
        return nan_to_none(obj.item())
    return obj


@release_on_error  # a refusal after the lock is taken leaves no lock, nor the folder it made
def evaluate(
    data: str | Path,
    *,
    classifier: str | Path | None = None,
    detector: str | Path | None = None,
    scores: list[str | Path] | None = None,
    name: str | None = None,
    seen: str | Path | None = None,
    split: str = "test",
    out: str | Path | None = None,
    threshold: str = "youden",
    by: list[str] | None = None,
    imgsz: int | None = None,
    device: str = "auto",
    bootstrap: int = 1000,
    seed: int = 0,
    exist_ok: bool = False,
    allow_overlap: bool = False,
    cases: int = DEFAULT_N,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Evaluate a classifier and/or detector run on `split` of a prepared dataset; returns metrics.json's dict.

    Writes metrics.json, predictions.csv, report.html, cases.csv with `cases` pictures per model and kind
    in cases/, the detector's COCO files (and Ultralytics' val folder) into `out` (default: the first free
    of `<classifier or detector run>/eval`, `eval2`, ...; with both runs and no `out`, the detector run's
    next eval folder gets a copy of metrics.json too). A used `out` is refused unless `exist_ok` (then only
    evaluate's own earlier files there are replaced). Films the runs trained or validated on refuse the
    evaluation unless `allow_overlap`. Prints nothing: notes (imgsz rounded, one GPU of several) go to the
    `fracturekit.evaluate` logger, and `report.summary_table` renders the returned dict as a table.
    `progress` hears the seen-film check's hashing (("hashing films", films done, films)) and each scored
    batch (("classify test", films done, films)).

    `device` may also be an `options.InferenceDevice` already resolved (a cv fold passes the one it trained on).

    scores: an outside model's scores instead of a run (`evaluation.outside`): a CSV of class probabilities
    (classifier) and/or a COCO results JSON (detector), each role one or more files covering the val and
    evaluated splits; `name` names that model (default: the first file's stem; default out
    `runs/eval-<name>`), `seen` lists the films it trained on for the seen-film check (else not checked).
    """
    ds = PreparedDataset.open(data)
    outside = _check_models(classifier, detector, scores, name, seen)
    opts = InferenceOptions.build(device=device, imgsz=imgsz, threshold=threshold)  # resolved once, passed down
    for note in opts.notes:
        log.warning(note)
    _check_split_and_cases(split, cases)
    manifest, by = _manifest_with(ds, by)
    roles = [(role, RunDir.find(r)) for role, r in (("classifier", classifier), ("detector", detector)) if r]
    # Both models are loaded and their tasks checked before anything is written: a wrong run leaves no folder.
    clf = _load_model(classifier, "classify", opts) if classifier is not None else None
    det = _load_model(detector, "detect", opts) if detector is not None else None
    if det is not None:
        check_detection_data(ds, split)  # a dataset without boxes is refused before its folder is made
    for m in outside:
        read_scores(m, ds, manifest, split)  # every check of the scores files before anything is written
    overlaps = _seen_check(ds, split, roles, outside, allow_overlap, progress)
    out_dir = _out_dir(out, roles, outside)
    planned = ["metrics.json", "predictions.csv", "report.html"]
    lock = _claim_out_dir(out_dir, planned, exist_ok)  # noqa: F841 - held until evaluate returns

    result = _result_header(ds, split, roles, overlaps, outside, out_dir, manifest, by)
    skipped: list[dict] = []
    rule = opts.threshold
    assert rule is not None  # built with a threshold above
    ctx = EvalContext(ds, split, out_dir, rule, opts.device.torch, bootstrap, seed, manifest, by, skipped, progress)
    rows, plots, scored = _run_halves(result, ctx, clf, det, outside)
    result["skipped"] = skipped
    result["warnings"] = metric_warnings(result)
    pd.concat(rows, ignore_index=True).to_csv(out_dir / "predictions.csv", index=False)
    table = C.write(out_dir, ds.root, manifest, scored, cases, _cam_model(clf, opts))
    result["cases"] = _cases_record(table, cases)
    plots["cases"] = table[table["picture"] != ""]
    clean = nan_to_none(result)
    _write_outputs(clean, plots, out_dir, planned, detector if out is None and classifier is not None else None)
    return clean


def _check_split_and_cases(split: str, cases: int) -> None:
    """A UserError for an unknown --split or a negative --cases."""
    if split not in SPLITS:
        raise UserError(f"--split {split}: unknown split; use one of {', '.join(SPLITS)}.")
    if cases < 0:
        raise UserError(f"--cases {cases}: must be 0 (no pictures) or more pictures per kind.")


def _claim_out_dir(out_dir: Path, planned: list[str], exist_ok: bool) -> FolderLock:
    """Lock `out_dir` for this evaluate (one command per --out), refuse it when used by something else (or
    by an earlier evaluate, unless `exist_ok`), record the files `planned` there, and create it; the lock."""
    lock = lock_folder(out_dir, "evaluate")
    ours = claim(out_dir, "evaluate", exist_ok)
    check_free(out_dir, planned, ours, "evaluate")
    write_record(out_dir, "evaluate", planned)  # before writing: a killed run's files are known too
    out_dir.mkdir(parents=True, exist_ok=True)
    return lock


def _result_header(
    ds: PreparedDataset,
    split: str,
    roles: list[tuple[str, RunDir]],
    overlaps: list[Any],
    outside: list[OutsideModel],
    out_dir: Path,
    manifest: pd.DataFrame,
    by: list[str],
) -> dict[str, Any]:
    """metrics.json's first keys: what was evaluated, on what, where it was written, and how CIs resample."""
    result: dict[str, Any] = {
        "provenance": build_provenance(ds, split, roles, overlaps, outside),
        "data": str(ds.root),
        "out": str(out_dir),
        "split": split,
        "threshold_split": THRESHOLD_SPLIT,
        "by": by,
        "units": unit_basis(manifest),  # what the bootstrap CIs resample: films linked by these columns
    }
    if split == THRESHOLD_SPLIT:
        result["warning"] = "evaluated on the split the threshold and temperature were fitted on: optimistic."
    return result


def _cases_record(table: pd.DataFrame, per_kind: int) -> dict[str, Any]:
    """metrics.json's `cases`: the cases.csv file, the pictures per kind, and the count of cases per model and kind."""
    return {
        "csv": "cases.csv",
        "per_kind": per_kind,
        "counts": {f"{m} {k}": int(v) for (m, k), v in table.groupby(["model", "kind"]).size().items()},
    }


def _out_dir(out: str | Path | None, roles: list[tuple[str, RunDir]], outside: list[OutsideModel]) -> Path:
    """`out`, else the first free eval folder of the first run (or runs/eval-<name> for outside scores)."""
    out_dir = (
        user_path(out)
        if out
        else increment(roles[0][1].eval_dir if roles else Path("runs") / f"eval-{outside[0].name}")
    )
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; pass a folder.")
    return out_dir


def _cam_model(clf: Model | None, opts: InferenceOptions) -> Model | None:
    """The classifier whose EigenCAM the case pictures show: the one evaluated, unless that is an export file
    (no PyTorch graph), then its run's best.pt, loaded on the same device."""
    if clf is None or clf.run is None or not clf.run.best.is_file() or clf.cam:
        return clf
    return load_model(clf.run.best, "classify", opts.imgsz, device=opts.device, backend=CAM_NAME)


def _check_models(
    classifier: str | Path | None,
    detector: str | Path | None,
    scores: list[str | Path] | None,
    name: str | None,
    seen: str | Path | None,
) -> list[OutsideModel]:
    """The outside models of `scores`; UserError when nothing, or one role twice, is to be evaluated."""
    outside = outside_models(scores or [], name, seen)
    if classifier is None and detector is None and not outside:
        raise UserError("nothing to evaluate: pass --classifier RUN and/or --detector RUN, or --scores FILE.")
    for m in outside:
        if (classifier if m.role == "classifier" else detector) is not None:
            raise UserError(
                f"--scores {m.files[0]} and --{m.role} both give the {m.role}; evaluate one of them, then `compare`."
            )
    if seen is not None and not outside:
        raise UserError(f"--seen {seen} lists an outside model's training films: pass it with --scores FILE.")
    return outside


def _manifest_with(ds: PreparedDataset, by: list[str] | None) -> tuple[pd.DataFrame, list[str]]:
    """The dataset's manifest and the --by columns; UserError naming a column it lacks."""
    manifest = pd.read_csv(ds.manifest, dtype={"group": str, "cluster": str})  # keys: '007' is not 7
    by = list(by or [])
    missing = [c for c in by if c not in manifest.columns]
    if missing:
        raise UserError(
            f"{ds.manifest}: no column {', '.join(missing)} for --by; available: {', '.join(manifest.columns)}."
        )
    return manifest, by


def _run_halves(
    result: dict[str, Any], ctx: EvalContext, clf: Model | None, det: Model | None, outside: list[OutsideModel]
) -> tuple[list[pd.DataFrame], dict[str, Any], list[ModelScores]]:
    """Evaluate each model (run or outside scores) into its `result` section; (predictions rows, plots, scores)."""
    rows: list[pd.DataFrame] = []
    plots: dict[str, Any] = {}
    scored: list[ModelScores] = []
    halves: list[tuple[str, Any, Any]] = [
        ("classification", clf, evaluate_classifier),
        ("detection", det, evaluate_detector),
    ]
    halves += [
        ("classification", m, evaluate_scores_classifier)
        if m.role == "classifier"
        else ("detection", m, evaluate_scores_detector)
        for m in outside
    ]
    for section, model, run_half in halves:
        if model is None:
            continue
        half = run_half(model, ctx)
        result[section] = half.metrics
        if model in outside:
            result[section]["outside"] = model.provenance()  # the scores behind the numbers, instead of a run
        rows.append(half.rows)
        if half.scores is not None:
            scored.append(half.scores)
        plots.setdefault("curves", {}).update(half.plots.pop("curves", {}))
        plots.update(half.plots)
    return rows, plots, scored


def _write_outputs(
    clean: dict[str, Any], plots: dict[str, Any], out_dir: Path, planned: list[str], copy_to: str | Path | None
) -> None:
    """metrics.json (and its copy in the detector run `copy_to`'s next eval folder), report.html, the record."""
    from fracturekit.evaluation.report import write_report

    (out_dir / "metrics.json").write_text(json.dumps(clean, indent=2))
    if copy_to is not None:
        # `predict` reads each model's threshold from ITS run's latest eval*/metrics.json: give the detector a copy.
        det_eval = increment(RunDir.find(copy_to).eval_dir)
        write_record(det_eval, "evaluate", ["metrics.json"])
        (det_eval / "metrics.json").write_text(json.dumps(clean, indent=2))
    write_report(clean, plots, out_dir / "report.html", pictures=out_dir)
    ours = ("ultralytics_val_", "cases/", "cases.csv", "ground_truth_coco.json", "detections_coco.json")
    write_record(out_dir, "evaluate", [f for f in files_under(out_dir) if f.startswith(ours)] + planned)


def _scored_paths(ds: PreparedDataset, split: str, role: str) -> list[str]:
    """Dataset-relative paths of the films `role` will score on `split` (what classify_images/val read)."""
    if role == "classifier":
        split_dir = ds.cls_dir / split
        files = sorted(p for p in split_dir.rglob("*") if p.is_file() and is_image_file(p))
    else:
        files = ds.det_images(split)
    return [rel_to(p, ds.root) for p in files]


def _seen_check(
    ds: PreparedDataset,
    split: str,
    roles: list[tuple[str, RunDir]],
    outside: list[OutsideModel],
    allow: bool,
    progress: Progress | None,
) -> list[Any]:
    """Compare the films each model will score with the films it trained/validated on; refuse on overlap.

    A run's films come from its seen.csv; an outside model's from its --seen list (not checked without one).
    The scored films are signed for the augmented-copy test when some run kept its films' signatures and
    trained on another dataset (on its own, prepare's audit ran that test and split by it: `for_dataset`).
    """
    from fracturekit.evaluation.outside import seen_items
    from fracturekit.training.provenance import (
        Overlap,
        for_dataset,
        load_seen,
        overlap,
        overlap_items,
        require_no_overlap,
        scored_items,
    )

    models = [(role, rd) for role, rd in roles] + [(m.role, m) for m in outside]
    paths = {role: _scored_paths(ds, split, role) for role, _ in models}
    seen = {
        role: for_dataset(load_seen(who, "classify" if role == "classifier" else "detect"), ds) for role, who in roles
    }
    copies = any(s is not None and s.copies is not None for s in seen.values())
    items, key_of = scored_items(ds, sorted(set().union(*paths.values())), progress, copies=copies)
    overlaps = []
    for role, who in models:
        films = [items[k] for k in sorted({key_of[p] for p in paths[role]})]
        if isinstance(who, RunDir):
            overlaps.append(overlap(seen[role], who, films))
        elif who.seen is None:
            overlaps.append(Overlap(who.files[0], [], checked=False))
        else:
            phrase = f"the model whose training films {who.seen} lists"
            overlaps.append(overlap_items(seen_items(who.seen, ds), who.seen, films, who=phrase))
    require_no_overlap(overlaps, len(items), ds, split, allow)
    return overlaps


def build_provenance(
    ds: PreparedDataset,
    split: str,
    roles: list[tuple[str, RunDir]],
    overlaps: list[Any],
    outside: list[OutsideModel] = (),  # type: ignore[assignment]
) -> dict:
    """metrics.json `provenance`: what these numbers were computed from, so a reader can check it.

    versions (fracturekit, ultralytics, torch), date, the scored dataset and its data_hash, the split, and per
    run (classifier/detector) its path, training data and data_hash (from run.json) and the films of this
    evaluation it trained or validated on; for an outside model, its name and scores files with their sha256
    instead of a run. train_overlap: scored films that are copies of a film some model trained or validated on
    (0 = clean; None when a model has no record of its films, so no check was made); a run's
    seen_copies_checked says whether augmented copies were looked for too (False: a run without seen_copies.npz,
    or scored on its own dataset, whose split prepare made by that test; checked by hashes only).
    """

    def _version(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    data_hash = ds.recorded_data_hash()
    runs = {}
    for (role, rd), ov in zip(roles, overlaps[: len(roles)], strict=True):
        try:
            record = json.loads(rd.record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
        runs[role] = {
            "path": str(rd.root.resolve()),
            "data": record.get("data"),
            "data_hash": record.get("data_hash"),
            "same_data": record.get("data_hash") is not None and record.get("data_hash") == data_hash,
            "seen_checked": ov.checked,
            "seen_copies_checked": ov.copies_checked,
            "train_overlap": len(ov.films) if ov.checked else None,
        }
    for m, ov in zip(outside, overlaps[len(roles) :], strict=True):
        runs[m.role] = {
            **m.provenance(),
            "seen_checked": ov.checked,
            "train_overlap": len(ov.films) if ov.checked else None,
        }
    films = set().union(*(o.films for o in overlaps))
    return {
        "versions": {k: _version(k) for k in ("fracturekit", "ultralytics", "torch")},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"path": str(ds.root.resolve()), "data_hash": data_hash},
        "split": split,
        "runs": runs,
        "train_overlap": len(films) if all(o.checked for o in overlaps) else None,
        "train_overlap_examples": [
            {"scored": a, "seen_split": s, "seen": b, "run": str(o.source)} for o in overlaps for a, s, b in o.pairs
        ][:10],
    }


callable_stage(__name__)  # `fracturekit.evaluate(...)` runs evaluate() above: see fracturekit.Stage
