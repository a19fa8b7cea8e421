"""Predict on new films: fracture probability, boxes and an annotated copy per image, fast on a plain CPU.

This module owns what predict adds around the inference core (`fracturekit.infer`, which loads the
models and scores the films exactly as `evaluate` does): the films named by --source (recursive folders,
files, globs; bad files reported and skipped), the output folder with its annotated images, EigenCAM
overlays, and the run of predictions.csv streamed film by film (so --resume can continue a killed run),
predictions.json and predictions_coco.json, whose rows `fracturekit.infer.predictions` writes and reads.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import logging
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fracturekit import callable_stage
from fracturekit.core.diskspace import is_no_space, no_space
from fracturekit.core.errors import UserError
from fracturekit.core.folderlock import lock_folder
from fracturekit.core.layout import POSITIVE_CLASS
from fracturekit.core.options import NMS_IOU as IOU
from fracturekit.core.options import InferenceOptions, check_max_pixels
from fracturekit.core.outputs import check_free, claim, increment, latest, read_record, record_settings, write_record
from fracturekit.core.paths import user_path
from fracturekit.core.progress import Progress
from fracturekit.core.yolo_env import cpu_threads
from fracturekit.data.imageio import MAX_PIXELS, is_image_file
from fracturekit.infer.backends import CAM_NAME
from fracturekit.infer.model import Model, load_model
from fracturekit.infer.pipeline import Pipeline
from fracturekit.infer.predictions import (
    CSV_COLUMNS,
    PACS_CSV_COLUMNS,
    coco_predictions,
    csv_row,
    film_key,
    read_rows,
    record,
)
from fracturekit.infer.scoring import Prediction, Scorer, default_batch
from fracturekit.ingest.files import junk_reason, walk_files

log = logging.getLogger(__name__)
FETCH_AHEAD = 32  # PACS films fetched, scored and deleted at a time: bounds the disk a long study list takes
FETCH_FOLDER = ".fetching"  # in the output folder: the PACS films being scored, deleted once scored


# --------------------------------------------------------------------------------------------- sources
def list_sources(source: str | Path) -> list[Path]:
    """Image files named by `source`: a folder (recursive), one file, or a glob pattern; sorted."""
    src = Path(source)
    if src.is_dir():
        files = sorted(Path(p) for p in walk_files(src))
    elif src.is_file():
        return [user_path(src)]
    elif glob.has_magic(str(source)):
        found = (user_path(p) for p in glob.glob(str(source), recursive=True))
        files = sorted(p for p in found if p.is_file() and junk_reason([p.name]) is None)  # its folders were chosen
    else:
        raise UserError(f"{source}: no such file, folder or glob match; pass --source with a folder of X-rays.")
    images = [p for p in files if is_image_file(p)]
    if len(images) < len(files):
        log.warning("ignored %d files whose suffix is not an image type", len(files) - len(images))
    if not images:
        raise UserError(f"{source}: no image files found (.jpg .png .tif .dcm ...); point --source at X-rays.")
    return images


def source_root(source: str | Path, paths: list[Path]) -> Path:
    """The folder predictions name films relative to: --source itself, else the films' common folder."""
    if isinstance(source, Path) and source.is_dir():
        return source
    return Path(os.path.commonpath([p.parent for p in paths]))


def source_path(source: str | Path) -> str | Path:
    """--source as given: a glob pattern keeps its magic (only `~` expanded), a path is resolved."""
    text = os.path.expanduser(os.fspath(source))
    return text if not Path(text).exists() and glob.has_magic(text) else user_path(text)


def _output_names(paths: list[Path], source: str | Path) -> list[str]:
    """A unique, flat file stem per image: its path under the source folder with '/' turned into '__'."""
    root = Path(source) if Path(source).is_dir() else None
    names: list[str] = []
    seen: set[str] = set()
    for p in paths:
        rel = p.relative_to(root) if root is not None else Path(p.name)
        stem = "__".join(rel.with_suffix("").parts)
        name, k = stem, 1
        while name in seen:  # same stem, different suffix (a.png and a.jpg)
            name, k = f"{stem}_{k}", k + 1
        seen.add(name)
        names.append(name)
    return names


# ------------------------------------------------------------------------------------------ outputs
def _annotate(gray: np.ndarray, rec: dict[str, Any], reduction: int = 1) -> np.ndarray:
    """Boxes with class and confidence on the film, the probability and decision on a band above it (BGR).

    `reduction`: `gray` is the film decoded at 1/reduction size, the record's boxes in the film's own pixels.
    """
    from fracturekit.infer import annotate as A

    boxes = [
        A.Box(
            (b["x1"] / reduction, b["y1"] / reduction, b["x2"] / reduction, b["y2"] / reduction),
            A.PREDICTED,
            f"{b['class']} {b['confidence']:.2f}".strip(),
        )
        for b in rec["boxes"]
    ]
    caption = []
    if rec["fracture_probability"] is not None:
        color = A.POSITIVE if rec["decision"] == POSITIVE_CLASS else A.NEGATIVE
        p, thr = rec["fracture_probability"], rec["threshold"]
        caption.append([(f"{rec['score_source']} p={p:.3f} -> {rec['decision']} (thr {thr:.2f})", color)])
    return A.annotate(gray, boxes, caption)


def _overlay(gray: np.ndarray, heat: np.ndarray, classifier: bool = False) -> np.ndarray:
    """A JET heatmap blended 50/50 over the film; a classifier's is hatched and labelled outside its centre crop."""
    from fracturekit.infer.annotate import centre_crop, heatmap_panel

    return heatmap_panel(gray, heat, centre_crop(*gray.shape[:2]) if classifier else None)


def _write(path: Path, img: np.ndarray) -> None:
    ok, data = cv2.imencode(path.suffix, img)
    if not ok:
        raise OSError(f"could not encode {path}")
    path.write_bytes(data.tobytes())  # not cv2.imwrite: a full disk must raise ENOSPC, not return False


def _drawn(path: Path, draw: Callable[..., np.ndarray], *args: Any) -> Callable[[], None]:
    """A writer job: draw the image with `draw(*args)` (in the writer, off the inference thread) and write it."""
    return lambda: _write(path, draw(*args))


def output_folder(out: str | Path | None, resume: bool) -> Path:
    """The explicit --out, else the first free of runs/predict, runs/predict2, ... (the latest one to resume)."""
    if out is not None:
        return Path(out)
    base = Path("runs") / "predict"
    if resume:
        found = latest(base, "predictions.csv")
        if found is None:
            raise UserError(f"--resume: no {base}*/predictions.csv to resume; pass --out with the folder to resume.")
        return found
    return increment(base)


def _resume_state(out: Path, settings: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(files predict recorded in `out`, film paths already in its predictions.csv) for --resume.

    Paths as the CSV holds them: relative to the source root, so a resume from another folder matches too;
    SOP Instance UIDs for films from a PACS.
    """
    ours = read_record(out, "predict")
    if "predictions.csv" not in ours or not (out / "predictions.csv").is_file():
        raise UserError(f"--resume: {out} holds no predictions.csv written by predict; run without --resume.")
    # full_size: annotated films at another size; a folder predicted before it was recorded was drawn reduced
    before = {"full_size": False} | record_settings(out, "predict")
    changed = [
        k for k in ("detector", "classifier", "conf", "iou", "imgsz", "full_size") if before.get(k) != settings[k]
    ]
    if changed:
        k = changed[0]
        raise UserError(
            f"--resume: {out} was predicted with --{k.replace('_', '-')} {before.get(k)}, not {settings[k]}; resume "
            "with the same models and options, or pass --exist-ok without --resume to start over."
        )
    done = {film_key(r) for r in read_rows(out / "predictions.csv")}
    return ours, done


def _scored(
    scorer: Scorer,
    paths: list[Path],
    pool: ThreadPoolExecutor,
    pipe: Pipeline,
    batch: int,
    todo: list[int],
    threads: int | None,
    max_pixels: int | None,
    pacs: Any,
    films: list[Any],
) -> Any:
    """`Pipeline.stream`'s batches; from a PACS, its films fetched FETCH_AHEAD at a time first and deleted once scored.

    A film that cannot be fetched comes back as a Prediction with the reason as its error.
    """
    if pacs is None:
        yield from pipe.stream(scorer, paths, batch, todo, threads, max_pixels)
        return
    from fracturekit.hospital.pacs import FetchError

    def fetch(i: int) -> str:
        try:
            pacs.fetch(films[i], paths[i])
        except FetchError as exc:
            return str(exc)
        return ""

    for k in range(0, len(todo), FETCH_AHEAD):
        chunk = todo[k : k + FETCH_AHEAD]
        reasons = dict(zip(chunk, pool.map(fetch, chunk), strict=True))
        yield from pipe.stream(scorer, paths, batch, [i for i in chunk if not reasons[i]], threads, max_pixels)
        failed = [Prediction(i, paths[i], error=reasons[i]) for i in chunk if reasons[i]]
        if failed:
            yield failed
        for i in chunk:
            paths[i].unlink(missing_ok=True)


def _dicom_kinds(text: str | None) -> tuple[str, ...]:
    from fracturekit.hospital.dicom_out import parse_kinds

    try:
        kinds = parse_kinds(text)
    except ValueError as exc:
        raise UserError(f"{exc}; pass --dicom-out sr, sc or sr,sc.") from None
    if kinds:
        try:
            import highdicom  # noqa: F401
        except ImportError:
            raise UserError(f"--dicom-out {text}: needs highdicom; pip install 'fracturekit[dicom]'.") from None
    return kinds


@contextlib.contextmanager
def _fetching(folder: Path | None, paths: list[Path]) -> Any:
    """The folder PACS films are fetched into (none for files): the fetched `paths` are deleted however predict
    ends, then the folder if that empties it (a film's data is not left behind; nor is anything else touched)."""
    if folder is None:
        yield
        return
    folder.mkdir(exist_ok=True)
    try:
        yield
    finally:
        for p in paths:
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: something of the user's is in it
            folder.rmdir()


def _pacs_record(rec: dict[str, Any], film: Any) -> dict[str, Any]:
    """A PACS film's record: its study, series and SOP Instance UIDs in place of the path of its fetched copy."""
    named = {"study_uid": film.study, "series_uid": film.series, "sop_uid": film.sop}
    return {**named, **{k: v for k, v in rec.items() if k != "path"}}


def _dicom_out(writer: Any, pacs: Any, header: Any, name: str, rec: dict[str, Any], gray: np.ndarray) -> None:
    """Write the film's SR/SC (and STOW them to the PACS with --push): runs in the pool like the image writes.

    A film whose header lacks what the objects need (a SOP Instance UID, a study) gets a warning in its row,
    not a stopped run; its row is written after this returns, so the warning reaches predictions.csv.
    """
    try:
        written = writer.write(header, name, rec, _annotate(gray, rec) if "sc" in writer.kinds else None)
    except (AttributeError, TypeError, ValueError) as exc:  # what highdicom and pydicom raise for missing tags
        rec["warnings"].append(f"no DICOM output ({type(exc).__name__}: {exc})")
        return
    if pacs is not None:
        pacs.push(written)


# ------------------------------------------------------------------------------------------ main API
class Predictions(list):  # type: ignore[type-arg]
    """predict's return value: its records (a list, one dict per film, as always), plus what it decided.

    `out` is the folder written, as named (the --out given, or the runs/predict* chosen); `meta` is predictions.json
    without its images (models used and why, device, batch, notes), so a caller need not read it back.
    """

    def __init__(self, records: list[dict[str, Any]], out: Path, meta: dict[str, Any]) -> None:
        super().__init__(records)
        self.out = out
        self.meta = meta


@dataclass
class _Plan:
    """One predict run as planned before anything is written: the films, their names, the models, the files."""

    source: str | Path
    pacs: Any
    films: list[Any]  # PACS films (empty for files)
    paths: list[Path]  # the files scored (a PACS film's: where it is fetched to)
    names: list[str]  # the flat output stem of each film
    root: Path  # predictions name films relative to it
    keys: list[str]  # each film's key in predictions.csv (its relative path, or SOP Instance UID)
    det: Model | None
    clf: Model | None
    scorer: Scorer
    batch: int
    writer: Any  # the DICOM output writer, None without --dicom-out
    settings: dict[str, Any]  # what --resume must find unchanged
    planned: set[str]  # the files this run may write in `out`
    run_notes: list[str]  # what the options adjusted (imgsz rounded, one GPU of several): each record's note
    ours: set[str] = field(default_factory=set)  # the files earlier predicts recorded in `out`
    done: set[str] = field(default_factory=set)  # film keys already in a resumed predictions.csv

    @property
    def columns(self) -> list[str]:
        return PACS_CSV_COLUMNS if self.pacs is not None else CSV_COLUMNS


def predict(
    source: str | Path,
    *,
    detector: str | Path | Model | None = None,
    classifier: str | Path | Model | None = None,
    out: str | Path | None = None,
    imgsz: int | None = None,
    conf: float = 0.25,
    iou: float = IOU,
    cam: bool = False,
    batch: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    max_pixels: int | None = MAX_PIXELS,
    save_images: bool = True,
    exist_ok: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
    backend: str = "auto",
    dicom_out: str | None = None,
    studies: list[str] | None = None,
    modality: str | None = None,
    since: str | None = None,
    push: bool = False,
    full_size: bool = False,
) -> Predictions:
    """Predict every film under `source`; write annotated images, predictions.csv/.json into `out`.

    `out` None: the first free of runs/predict, runs/predict2, ... A used `out` is refused unless
    `exist_ok` (then only predict's own earlier files there are replaced). Each film's row is appended to
    predictions.csv and flushed once its annotated image is written, so a killed run keeps every finished
    film; `resume` continues such a run in `out` (default: the latest runs/predict*), skipping the films
    already listed. predictions.json is written from the CSV at the end.

    Returns one record per image (in sorted path order; a `Predictions` list whose `out` and `meta` say
    where they went and how): path (relative to the --source folder, or to
    the films' common folder for a file or glob; predictions.json `source_root` holds it), width,
    height, fracture_probability (the classifier's calibrated probability, else the detector's best
    box confidence), decision (positive/negative class at the tuned threshold), threshold,
    score_source, detector_score, boxes (film pixels with confidence and class), annotated (image
    path relative to `out`), cam (heatmap paths relative to `out`), error
    (why the file was skipped, empty when fine), warnings (reader notes such as truncated JPEG), note
    (set when no `evaluate` metrics were found: the 0.5 default threshold was used).

    `conf` only chooses the boxes shown and listed: detector_score is the best box at the core's
    SCORE_FLOOR whatever `conf` is, as `evaluate` scores it. `batch` None: `infer.default_batch`. A film of more
    than `max_pixels` pixels (None: no limit) gets its size as its error, undecoded. `progress` is called
    with ("predict", films done, films to do) after each batch (the CLI draws a bar from it).

    Decoding and image writing overlap inference (`fracturekit.infer.pipeline`). A JPEG at least twice the
    largest model imgsz on its short side is decoded at 1/2, 1/4 or 1/8 size (the short side kept >= imgsz) and
    its annotated image drawn at that size; boxes, width and height stay in the film's own pixels. `full_size`:
    every film decoded and drawn at full size, as `evaluate` decodes them.

    `source` "dicomweb://HOST:PORT/PATH" (`fracturekit.hospital.pacs`): the films of series of `modality` (default
    CR,DX) in `studies` (all when None) from `since` (YYYY-MM-DD) on, fetched and scored; their records name
    study_uid, series_uid and sop_uid instead of a path. `dicom_out` "sr", "sc" or "sr,sc": a DICOM SR and/or
    Secondary Capture per DICOM film in OUT/dicom/ (`fracturekit.hospital.dicom_out`); `push` stores them back on
    the PACS (STOW-RS).
    """
    pacs, kinds = _check_sources(source, detector, classifier, dicom_out, studies, modality, since, push)
    backend = CAM_NAME if cam and backend == "auto" else backend  # EigenCAM needs the PyTorch graph
    opts = InferenceOptions.build(
        device=device, imgsz=imgsz, conf=conf, iou=iou, batch=batch, threads=threads, backend=backend
    )
    check_max_pixels(max_pixels)
    named = output_folder(out, resume)
    out = user_path(named)
    lock = lock_folder(out, "predict")  # held until predict returns: one command per --out
    try:  # a source or model refused here leaves no folder behind: the lock made it, and goes now
        plan = _plan(source, pacs, studies, modality, since, out, (detector, classifier), opts, cam, kinds, full_size)
        plan.planned |= _planned_files(plan, out, save_images, cam)
        if resume:
            plan.ours, plan.done = _resume_state(out, plan.settings)
        else:
            plan.ours = claim(out, "predict", exist_ok, hint="pass --resume to continue it")
        check_free(out, plan.planned, plan.ours, "predict")
    except BaseException:
        lock.release()
        raise
    write_record(out, "predict", plan.ours | plan.planned if resume else plan.planned, plan.settings)  # first
    csv_path = out / "predictions.csv"
    if not resume:
        with csv_path.open("w", newline="") as f:
            csv.DictWriter(f, fieldnames=plan.columns).writeheader()
    todo = [i for i, k in enumerate(plan.keys) if k not in plan.done]
    try:
        _score_and_write(plan, todo, out, csv_path, opts, max_pixels, save_images, cam, push, progress, full_size)
        resumed_after = len(plan.paths) - len(todo) if resume else None
        records, meta = _write_summaries(plan, out, csv_path, opts, resumed_after, full_size)
    except OSError as exc:
        if not is_no_space(exc):
            raise
        lock.release()  # now, not when the traceback that holds this frame is dropped
        raise _out_of_space(plan, todo, out, csv_path, save_images) from None
    return Predictions(records, named, meta)


def _check_sources(
    source: str | Path,
    detector: Any,
    classifier: Any,
    dicom_out: str | None,
    studies: list[str] | None,
    modality: str | None,
    since: str | None,
    push: bool,
) -> tuple[Any, tuple[str, ...]]:
    """(the PACS `source` names, or None; the DICOM output kinds): the checks of what to read and write."""
    from fracturekit.hospital.pacs import Pacs, is_dicomweb

    pacs = Pacs(source) if is_dicomweb(source) else None  # type: ignore[arg-type]
    if pacs is None and (studies or modality or since or push):
        raise UserError("--study, --modality, --since and --push need --source dicomweb://HOST:PORT/PATH.")
    if push and not dicom_out:
        raise UserError("--push stores the DICOM findings: pass --dicom-out sr,sc (or one of them) with it.")
    kinds = _dicom_kinds(dicom_out)
    if detector is None and classifier is None:
        raise UserError("no model given; pass --detector and/or --classifier (a train run folder or weights file).")
    return pacs, kinds


def _plan(
    source: str | Path,
    pacs: Any,
    studies: list[str] | None,
    modality: str | None,
    since: str | None,
    out: Path,
    models: tuple[Any, Any],
    opts: InferenceOptions,
    cam: bool,
    kinds: tuple[str, ...],
    full_size: bool,
) -> _Plan:
    """The films to score (from files or a PACS), the loaded models and their scorer; refuses before writing.

    full_size: annotated films drawn at the film's own size; recorded in the settings a --resume must match."""
    from fracturekit.hospital.pacs import parse_modalities, parse_since

    films: list[Any] = []
    if pacs is not None:
        films = pacs.find(list(studies or []), parse_modalities(modality), parse_since(since))
        if not films:
            raise UserError(f"{source}: no {modality or 'CR,DX'} films match; check --study, --modality and --since.")
        root = out / FETCH_FOLDER
        paths = [root / f"{f.sop}.dcm" for f in films]
        names = [f.sop for f in films]
        keys = names
    else:
        source = source_path(source)
        paths = [p for p in list_sources(source) if not p.is_relative_to(out)]  # not our own output
        if not paths:
            raise UserError(f"{source}: the only images are inside the output folder {out}; pass another --source.")
        names = _output_names(paths, source)
        root = source_root(source, paths)
        keys = [p.relative_to(root).as_posix() for p in paths]
    det, clf = (
        m
        if isinstance(m, Model) or m is None
        else load_model(m, task, opts.imgsz, opts.threads, opts.device, opts.backend)
        for m, task in zip(models, ("detect", "classify"), strict=True)
    )
    scorer = _scorer(det, clf, opts, cam)
    writer = None
    if kinds:
        from fracturekit.hospital.dicom_out import Writer

        writer = Writer(kinds, out, det, clf)
    settings = {
        "detector": str(det.weights) if det else None,
        "classifier": str(clf.weights) if clf else None,
        "conf": opts.conf,
        "iou": opts.iou,
        "imgsz": opts.imgsz,
        "full_size": full_size,
    }
    batch = opts.batch or default_batch([det, clf])
    return _Plan(source, pacs, films, paths, names, root, keys, det, clf, scorer, batch, writer, settings,
                 planned=set(), run_notes=list(opts.notes))  # fmt: skip


def _scorer(det: Model | None, clf: Model | None, opts: InferenceOptions, cam: bool) -> Scorer:
    """The scorer of the loaded models; UserError when --cam cannot be drawn or the classifier has no positive."""
    for m in (det, clf):
        if cam and m is not None and not m.cam:
            raise UserError(
                f"{m.weights}: --cam needs PyTorch weights (.pt); pass the run folder instead of the .onnx."
            )
    scorer = Scorer.build(det, clf, cam, opts.iou, box_floor=opts.conf)  # boxes below --conf are never shown
    if clf is not None and scorer.pos_idx is None:
        raise UserError(
            f"{clf.weights}: classifier classes {sorted(clf.names.values())} have no "
            f"'{(scorer.clf_pol and scorer.clf_pol.positive) or POSITIVE_CLASS}'; "
            "pass a classifier trained by `fracturekit train --task classify`."
        )
    return scorer


def _planned_files(plan: _Plan, out: Path, save_images: bool, cam: bool) -> set[str]:
    """The files this run may write in `out`, as recorded for --exist-ok and --resume."""
    planned = {"predictions.csv", "predictions.json", "predictions_coco.json"}
    if save_images:
        planned.update(f"{n}.jpg" for n in plan.names)
    if cam:
        planned.update(f"cam/{n}{t}.png" for n in plan.names for t in ("", ".det"))
    if plan.pacs is not None:  # recorded too, so that --exist-ok clears what a killed run left
        planned.update(p.relative_to(out).as_posix() for p in plan.paths)
    if plan.writer is not None:
        planned.update(plan.writer.planned(plan.names))
    return planned


def _score_and_write(
    plan: _Plan,
    todo: list[int],
    out: Path,
    csv_path: Path,
    opts: InferenceOptions,
    max_pixels: int | None,
    save_images: bool,
    cam: bool,
    push: bool,
    progress: Progress | None,
    full_size: bool,
) -> None:
    """Score the films of `todo` and append each one's row to predictions.csv once its pictures are written."""
    if cam:
        (out / "cam").mkdir(exist_ok=True)
    n_threads = cpu_threads(opts.threads)
    # Batches whose rows wait for their image writes: a row is in the CSV only once its film is finished.
    pending: deque[tuple[list[dict[str, Any]], list[Future[None]]]] = deque()
    with (
        ThreadPoolExecutor(max_workers=max(2, n_threads)) as pool,
        Pipeline([plan.det, plan.clf], opts.threads, full_size) as pipe,
        csv_path.open("a", newline="") as fh,
        _fetching(plan.root if plan.pacs is not None else None, plan.paths),
    ):
        table = csv.DictWriter(fh, fieldnames=plan.columns, extrasaction="ignore")

        def append_finished(wait: bool) -> None:
            while pending and (wait or all(f.done() for f in pending[0][1])):
                recs, futures = pending.popleft()
                for f in futures:
                    f.result()
                table.writerows(csv_row(r) for r in recs)
                fh.flush()  # the rows survive a killed process (an fsync would also survive power loss)

        batches = _scored(
            plan.scorer, plan.paths, pool, pipe, plan.batch, todo, opts.threads, max_pixels, plan.pacs, plan.films
        )
        done = 0
        try:
            for preds in batches:
                recs, writes = _film_outputs(plan, preds, out, pool, pipe, save_images, push)
                pending.append((recs, writes))
                append_finished(wait=False)
                done += len(preds)
                if progress is not None:
                    progress("predict", done, len(todo))
        finally:  # also when a PACS stops answering: the films finished so far keep their rows
            append_finished(wait=True)


def _film_outputs(
    plan: _Plan,
    preds: list[Prediction],
    out: Path,
    pool: ThreadPoolExecutor,
    pipe: Pipeline,
    save_images: bool,
    push: bool,
) -> tuple[list[dict[str, Any]], list[Future[None]]]:
    """The records of one batch, the pool's writes of their DICOM objects and the pipeline's writer jobs that
    draw and write their annotated image and heatmaps."""
    writes: list[Future[None]] = []
    recs = []
    for pred in preds:
        rec = record(pred, plan.root, plan.det, plan.run_notes)
        if plan.pacs is not None:
            rec = _pacs_record(rec, plan.films[pred.index])
        recs.append(rec)
        if pred.gray is None:
            continue
        name = plan.names[pred.index]
        header = plan.writer.header(plan.paths[pred.index]) if plan.writer is not None else None
        if header is not None:  # read now: a PACS film's file is deleted once its chunk is scored
            to = plan.pacs if push else None
            writes.append(pool.submit(_dicom_out, plan.writer, to, header, name, rec, pred.gray))
        if save_images:
            rec["annotated"] = f"{name}.jpg"  # relative to `out`, like cam/
            writes.append(pipe.write(_drawn(out / f"{name}.jpg", _annotate, pred.gray, rec, pred.reduction)))
        maps = (("", pred.cls_map, True), (".det" if plan.clf is not None else "", pred.det_map, False))
        for tag, m, is_cls in maps:
            if m is not None:
                target = out / "cam" / f"{name}{tag}.png"
                rec["cam"].append(target.relative_to(out).as_posix())
                writes.append(pipe.write(_drawn(target, _overlay, pred.gray, m, is_cls)))
        pred.gray = pred.cls_map = pred.det_map = None  # drawn: free the pixels
    return recs, writes


def _write_summaries(
    plan: _Plan, out: Path, csv_path: Path, opts: InferenceOptions, resumed_after: int | None, full_size: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """predictions.json and predictions_coco.json from the finished CSV; (the records in film order, the meta)."""
    det, clf = plan.det, plan.clf
    order = {k: i for i, k in enumerate(plan.keys)}
    records = sorted(read_rows(csv_path), key=lambda r: order.get(film_key(r), len(order)))
    det_pol, clf_pol = plan.scorer.det_pol, plan.scorer.clf_pol
    notes = list(opts.notes) + (det_pol.notes if det_pol else []) + (clf_pol.notes if clf_pol else [])
    meta = {
        "source": plan.pacs.address if plan.pacs is not None else str(plan.source),
        "source_root": str(plan.root) if plan.pacs is None else None,
        "detector": str(det.weights) if det else None,
        "classifier": str(clf.weights) if clf else None,
        "detector_imgsz": det.imgsz if det else None,
        "classifier_imgsz": clf.imgsz if clf else None,
        "backend": {"detector": det.backend if det else None, "classifier": clf.backend if clf else None},
        "models": {k: {"used": m.label, "why": m.chosen} for k, m in (("detector", det), ("classifier", clf)) if m},
        "conf": opts.conf,
        "iou": opts.iou,
        "device": opts.device.device.spec,
        "batch": plan.batch,
        "full_size": full_size,
        "temperature": clf_pol.temperature if clf_pol else None,
        "notes": notes,
        "resumed_after": resumed_after,
        "n_images": len(records),
        "n_errors": sum(1 for r in records if r["error"]),
        "classes": [det.names[i] for i in sorted(det.names)] if det else [],
    }
    (out / "predictions.json").write_text(json.dumps({**meta, "images": records}, indent=1))
    (out / "predictions_coco.json").write_text(json.dumps(coco_predictions(records, meta["classes"])))
    return records, meta


def _out_of_space(plan: _Plan, todo: list[int], out: Path, csv_path: Path, save_images: bool) -> UserError:
    """The full-disk sentence: how much the films left need, and that the finished ones are kept for --resume."""
    finished = {film_key(r) for r in read_rows(csv_path)}  # a row cut short by the full disk is dropped
    left = [i for i in todo if plan.keys[i] not in finished]
    paths = plan.paths
    need = sum(paths[i].stat().st_size for i in left if paths[i].exists()) if save_images else 0  # ~ film size
    after = f"; the {len(paths) - len(left)} films done are kept: then run it again with --resume"
    return no_space(out, need, f"the annotated images of the {len(left)} films left", after)


callable_stage(__name__)  # `fracturekit.predict(...)` runs predict() above: see fracturekit.Stage
