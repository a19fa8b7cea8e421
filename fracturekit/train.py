"""Train a YOLOv8 classifier or detector on a prepared dataset: offline-safe, X-ray-aware, recorded.

`train(task, data, config=..., **overrides)` resolves the config (defaults <- file <- overrides),
picks the device and CPU threads, finds pretrained weights without ever waiting on a download, runs
Ultralytics so that it writes straight into `<project>/<task>/<name>/`, and leaves beside the
weights `config.yaml` (the resolved config), `run.json` (seed, versions, device, data hash,
timings, final metrics, and what the training pipeline actually used) and `seen.csv` (the train and val
films the model saw, for `evaluate`'s seen-film check, with `seen_copies.npz`, their copy signatures; see
fracturekit.training.provenance).

Run names: with no name the first free of `train`, `train2`, ... is used (Ultralytics' increment);
an existing name is refused unless `resume` (continue it) or `exist_ok` (replace it) is set, so a
second run never silently overwrites the first and a named run is always where the name says.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import logging
import math
import os
import platform
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fracturekit import __version__, callable_stage
from fracturekit.core.device import Device, resolve_device
from fracturekit.core.diskspace import is_no_space
from fracturekit.core.errors import UserError
from fracturekit.core.folderlock import LOCK, check_unlocked, lock_folder
from fracturekit.core.layout import PreparedDataset, RunDir
from fracturekit.core.options import check_imgsz
from fracturekit.core.yolo_env import cpu_threads, load_ultralytics, network_available
from fracturekit.training import interrupted
from fracturekit.training.augment import describe, xray_transforms
from fracturekit.training.config import (
    MODEL_SIZES,
    TrainConfig,
    check_known_task,
    default_config_path,
    load_mapping,
    resolve_config,
)
from fracturekit.training.prefetch import prefetch_counts, prefetching
from fracturekit.training.provenance import SEEN_FILE, write_seen
from fracturekit.training.seen_copies import SEEN_COPIES_FILE

log = logging.getLogger("fracturekit")

# fracturekit keys that are not Ultralytics train arguments.
_OWN_KEYS = frozenset(
    {"model", "weights", "device", "threads", "balance", "freeze_epochs", "project", "name", "resume", "logger"}
    | {"reproducible", "val_bf16", "prefetch"}
    | {"aug_clahe", "aug_brightness_contrast", "aug_gamma"}
)
# Ultralytics' final metric names -> the short names printed and recorded.
KEY_METRICS = {
    "classify": {"top1": "metrics/accuracy_top1", "top5": "metrics/accuracy_top5"},
    "detect": {
        "mAP50-95": "metrics/mAP50-95(B)",
        "mAP50": "metrics/mAP50(B)",
        "precision": "metrics/precision(B)",
        "recall": "metrics/recall(B)",
    },
}


@dataclass(frozen=True)
class Trained:
    """What `train_recorded` returns: the run folder, run.json's record, and the device it trained on."""

    run: RunDir
    record: dict[str, Any]
    device: Device


def train(
    task: str, data: str | Path, *, config: str | Path | None = None, folder: str | Path | None = None, **overrides: Any
) -> RunDir:
    """Train `task` (classify|detect) on the prepared dataset `data`; return the run folder.

    `folder` is the run folder itself instead of `<project>/<task>/<name>` (`fracturekit cv` keeps its
    fold runs under its own folder); the same exist/replace rules apply.

    `overrides` are config keys (model, weights, epochs, imgsz, batch, patience, resume, seed, name,
    project, device, threads, freeze, freeze_epochs, lr0, ... any Ultralytics train argument); None
    values are ignored so CLI defaults do not mask the config file.
    """
    return train_recorded(task, data, config=config, folder=folder, **overrides).run


def train_recorded(
    task: str, data: str | Path, *, config: str | Path | None = None, folder: str | Path | None = None, **overrides: Any
) -> Trained:
    """Train as `train` does; also return run.json's record and the resolved device (the CLI prints them, a cv
    fold evaluates on that device), so nobody reads back what was just written."""
    check_known_task(task)
    ds = PreparedDataset.open(data)
    data_arg = _data_argument(ds, task)
    cfg = _resolve(task, config, overrides)
    cfg.values["imgsz"], size_note = check_imgsz(cfg["imgsz"])
    if size_note:  # rounded here, not by Ultralytics, so config.yaml and run.json hold the size trained at
        log.warning(size_note)
    device = resolve_device(cfg["device"])
    reproducible = bool(cfg.values.get("reproducible"))
    fixed = REPRODUCIBLE_THREADS if reproducible and device.kind == "cpu" else None
    threads = cpu_threads(cfg["threads"] or fixed)
    check_logger(cfg.values.get("logger") or "none")
    load_ultralytics(threads)
    run_dir = _run_folder(task, cfg, folder)
    lock = lock_folder(run_dir, "train")  # held until train returns: one training per run folder
    model: Any = None
    try:
        model, pretrained = _build_model(task, cfg, run_dir)
        resumes = interrupted.note_resume(run_dir) if cfg["resume"] else []
        release_after = _freeze_plan(cfg, device, pretrained)

        from fracturekit.training import trainers

        trainer_cls: type = trainers.XrayClassificationTrainer if task == "classify" else _detection_trainer()
        if task == "classify":
            trainer_cls = type(trainer_cls.__name__, (trainer_cls,), {"balance": bool(cfg["balance"])})
        bf16, channels_last = _cpu_speed(cfg, device)
        val_bf16 = _val_bf16(cfg, device, bf16)
        trainer_cls = trainers.cpu_fast(trainer_cls, bf16=bf16, channels_last=channels_last, val_bf16=val_bf16)
        prefetch = _cpu_prefetch(cfg, device, task)
        if prefetch:
            trainer_cls = prefetching(trainer_cls)
        trainer_cls = trainers.atomic_checkpoints(trainer_cls)  # a kill or full disk keeps the last whole epoch
        pipeline: dict[str, Any] = {"cpu_bf16_autocast": bf16, "cpu_channels_last": channels_last}
        pipeline["cpu_val_bf16"] = val_bf16
        cache_ram = _cpu_cache_ram(cfg, device, task)
        pipeline["cpu_cache_ram_default"] = cache_ram
        pipeline["cpu_prefetch"] = prefetch  # replaced by its counts at the end of a prefetching run
        model.add_callback("on_pretrain_routine_end", lambda tr: pipeline.update(_observe_pipeline(tr, task)))
        if prefetch:
            model.add_callback("on_train_end", lambda tr: pipeline.update(cpu_prefetch=prefetch_counts(tr)))
        if release_after is not None:
            model.add_callback("on_train_epoch_start", trainers.release_frozen_layers(release_after))
            model.add_callback(
                "on_train_end", lambda tr: pipeline.update(freeze_released_at_epoch=getattr(tr, "fk_released", None))
            )

        augmentations = xray_transforms(cfg.values, task)
        args = {k: v for k, v in cfg.values.items() if k not in _OWN_KEYS}
        args.update(
            data=data_arg,
            save_dir=str(run_dir),
            device=device.spec,
            amp=bool(cfg["amp"]) and device.amp,
            augmentations=augmentations or None,
        )
        if reproducible:
            args["deterministic"] = True  # Ultralytics: seeds + torch.use_deterministic_algorithms(warn_only=True)
        if cache_ram:
            args["cache"] = "ram"  # Ultralytics checks the memory first and keeps none where they do not fit
        if device.kind == "cpu":
            args["channels_last"] = False  # applied by trainers.cpu_fast; Ultralytics would only warn and ignore it
        if cfg["resume"]:
            args["resume"] = str(run_dir / "weights" / "last.pt")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
        seen = write_seen(run_dir, ds, task)  # before training: an interrupted run's films are known too
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        try:
            with experiment_logger(cfg.values.get("logger") or "none", run_dir, task):
                result = model.train(trainer=trainer_cls, **args)
        except (FileNotFoundError, SyntaxError) as exc:  # Ultralytics' way of saying the dataset/args are wrong
            raise UserError(f"{data_arg}: Ultralytics refused the training set-up ({exc}); check the dataset.") from exc
        total = time.perf_counter() - t0
        run = RunDir(run_dir)
        record = _record(task, cfg, ds, device, threads, pretrained, run, result, pipeline, started, total, resumes)
        record["seen"] = {"file": SEEN_FILE, "copies": SEEN_COPIES_FILE, "films": seen}
        record["deterministic"] = _determinism(reproducible, bool(args.get("deterministic")), threads, bf16)
        run.record.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
        (run_dir / interrupted.RESUMES).unlink(missing_ok=True)  # now in run.json
    except BaseException as exc:
        interrupted.stopped(run_dir, fresh=not cfg["resume"])  # a new run with no saved epoch leaves nothing
        lock.release()  # now: the traceback holds this frame, and a folder the lock made goes when empty
        if is_no_space(exc):
            params = sum(p.numel() for p in model.model.parameters()) if model is not None else 0
            raise interrupted.full_disk(run_dir, params) from None
        raise
    return Trained(run, json.loads(json.dumps(record, default=str)), device)  # as run.json holds it


# Ultralytics' logger integrations (settings keys); each trainer adds the callbacks of those set to True.
_INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")
_LOGGER_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


def check_logger(logger: str) -> None:
    """UserError when the package behind `logger` is missing (checked before the run folder is made)."""
    module = _LOGGER_MODULES.get(logger)
    if module is not None and importlib.util.find_spec(module) is None:
        raise UserError(
            f"--logger {logger}: the {module} package is not installed; pip install 'fracturekit[{logger}]'."
        )


@contextlib.contextmanager
def experiment_logger(logger: str, run_dir: Path, task: str) -> Iterator[None]:
    """Switch on Ultralytics' own callback for `logger` (none | tensorboard | mlflow) and every other one off.

    Ultralytics reads its settings per trainer, so the integrations are set there for this training (and
    restored after); all others go off so that an installed wandb or comet never starts uploading.
    TensorBoard writes its events into the run folder itself; MLflow gets a file store in `<run>/mlflow`
    (its environment variables are set for this training only and restored after).
    """
    check_logger(logger)
    from ultralytics.utils import SETTINGS

    wanted = {k: k == logger for k in _INTEGRATIONS if k in SETTINGS}
    before = {k: SETTINGS[k] for k, v in wanted.items() if SETTINGS[k] != v}
    if before:
        SETTINGS.update({k: wanted[k] for k in before})
    env = {}
    if logger == "mlflow":
        env = {
            "MLFLOW_TRACKING_URI": (run_dir / "mlflow").resolve().as_uri(),
            "MLFLOW_ALLOW_FILE_STORE": "true",  # MLflow 3 refuses a file store unless told so; offline it is the one
            "MLFLOW_EXPERIMENT_NAME": f"fracturekit-{task}",
            "MLFLOW_RUN": run_dir.name,
        }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        if before:
            SETTINGS.update(before)  # plain Ultralytics sharing this settings folder keeps its own choice
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --deterministic without --threads: one torch thread, a count every machine can run. Weights depend on the thread
# count even in float32 (a tiny detect training: 1 vs 2 threads, other digests; README "The demo").
REPRODUCIBLE_THREADS = 1


def _determinism(reproducible: bool, algorithms: bool, threads: int, bf16: bool) -> dict[str, Any]:
    """run.json `deterministic`: the switch and what decides whether another machine gets the same weights."""
    return {
        "switch": reproducible,  # --deterministic (config key `reproducible`)
        "torch_deterministic_algorithms": algorithms,
        "threads": threads,
        "cpu_bf16_autocast": bf16,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),  # None: the CPU's own (AVX-512 here)
    }


def _cpu_speed(cfg: TrainConfig, device: Device) -> tuple[bool, bool]:
    """(bf16 autocast, channels_last) for CPU training: bf16 when `amp` is on and the CPU has native bf16;
    channels_last when asked, or by default (null) together with bf16, where bench/train_speed.py measured it.
    Neither with `reproducible` (--deterministic): bf16 kernels differ between CPUs far more than float32 ones."""
    if device.kind != "cpu" or cfg.values.get("reproducible"):
        return False, False
    from fracturekit.core.device import cpu_info

    bf16 = bool(cfg["amp"]) and cpu_info().bf16
    wanted = cfg.values.get("channels_last")
    return bf16, bool(wanted) if wanted is not None else bf16


def _val_bf16(cfg: TrainConfig, device: Device, bf16: bool) -> bool:
    """bf16 autocast in the per-epoch validation: by default (null) with bf16 training; `val_bf16: true|false` sets it
    alone, on a CPU with native bf16 only and never with `reproducible`. Numbers: bench/train_profile.py."""
    wanted = cfg.values.get("val_bf16")
    if wanted is None:
        return bf16
    if not wanted or device.kind != "cpu" or cfg.values.get("reproducible"):
        return False
    from fracturekit.core.device import cpu_info

    return cpu_info().bf16


def _cpu_cache_ram(cfg: TrainConfig, device: Device, task: str) -> bool:
    """cache='ram' by default (`cache: null`) for CPU detection training: decoded, resized films stay in memory instead
    of being read and decoded again each epoch. On the idle 2-core machine its gain is within run-to-run noise
    (bench/train_speed.py, 200 FracAtlas films at 320 px: 9.1 vs 9.9 s/epoch without it in one run, 10.6 vs 9.1 in
    another; alternating runs A B B A: 9.76, 8.37 with it, 9.74, 8.96 without). It stays on because it removes one
    decode per film per epoch, which costs more on films larger than FracAtlas's; that case was not measured.
    Ultralytics' own memory check (twice the estimated size must be available) still refuses it where they do not
    fit, and run.json `pipeline.cache` says what was used. Not with `reproducible`: with the cache, mosaic draws its
    partner films from the whole set instead of the recently loaded ones, which changes a seed's augmentations. Not
    for classification: Ultralytics turns `cache_ram` off there (a known memory leak)."""
    unset = cfg.values.get("cache") is None
    return task == "detect" and device.kind == "cpu" and unset and not cfg.values.get("reproducible")


def _cpu_prefetch(cfg: TrainConfig, device: Device, task: str) -> bool:
    """Background prefetch of the next training batch (fracturekit.training.prefetch) for CPU detection training,
    only when asked (`prefetch: true`): on the idle 2-core machine it made an epoch slower, 15.6 against 9.0 s
    (bench/train_speed.py, 2026-12-03): the loading thread takes a core from torch's two threads, whose
    synchronised steps then wait for it; it can only pay where a core is left to it (`threads` below the cores),
    which was not measured. Detection only: its training step draws no random
    numbers, so the prefetched batches are the serial ones (tests/test_prefetch.py); classification's torchvision
    augmentations draw from torch's global RNG, which its step would have to be checked for as well."""
    wanted = cfg.values.get("prefetch")
    return task == "detect" and device.kind == "cpu" and bool(wanted)


def _detection_trainer() -> type:
    from ultralytics.models.yolo.detect import DetectionTrainer

    return DetectionTrainer


def _resolve(task: str, config: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Resolve the config; a resumed run starts from its own config.yaml unless --config is given."""
    if overrides.get("resume") and config is None:
        name = overrides.get("name")
        project = overrides.get("project") or load_mapping(default_config_path(task)).get("project", "runs")
        saved = _resume_folder(Path(project).expanduser().resolve() / task, name) / "config.yaml"
        if saved.is_file():
            config = saved
    return resolve_config(task, config, overrides)


def _data_argument(ds: PreparedDataset, task: str) -> str:
    """What Ultralytics gets: the cls/ folder or det/data.yaml (UserError naming `prepare` when absent)."""
    target = ds.cls_dir if task == "classify" else ds.data_yaml
    ok = (target / "train").is_dir() if task == "classify" else target.is_file()
    if not ok:
        what = "cls/train/ folder" if task == "classify" else "det/data.yaml"
        raise UserError(
            f"{ds.root}: no {what}, so it was not prepared for {task}; "
            f"run `fracturekit prepare SOURCE --out {ds.root}` first."
        )
    if task == "detect":
        # data.yaml is written for every dataset; Ultralytics fails with a traceback on a split without images
        empty = [s for s in ("train", "val") if not ds.det_images(s)]
        if empty:
            raise UserError(
                f"{ds.root}: det/images/{' and '.join(empty)} hold no film, so there is nothing to train a detector on "
                "(its source had no boxes, as class folders have none); train --task classify, or prepare a source "
                "with boxes (COCO, VOC, YOLO, FracAtlas) whose split gives train and val films."
            )
    return str(target.resolve())


def _resume_folder(base: Path, name: str | None) -> Path:
    """The run to resume: `base/name`, or the most recently written run under `base`."""
    if name:
        folder = base / name
    else:
        candidates = sorted(base.glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise UserError(f"{base}: no run to resume (no */weights/last.pt); start one without --resume.")
        folder = candidates[-1].parent.parent
    if not (folder / "weights" / "last.pt").is_file():
        raise UserError(f"{folder}: nothing to resume (no weights/last.pt); check --name and --project.")
    return folder


def _run_folder(task: str, cfg: TrainConfig, given: str | Path | None = None) -> Path:
    """`given` or `<project>/<task>/<name>` (absolute, so Ultralytics never re-roots it under its runs_dir)."""
    base = Path(cfg["project"]).expanduser().resolve() / task
    if cfg["resume"]:
        folder = _resume_folder(base, cfg["name"]) if given is None else Path(given).expanduser().resolve()
        _check_resumable(folder / "weights" / "last.pt")
        return folder
    name = cfg["name"]
    if given is None and name is None:
        from ultralytics.utils.files import increment_path

        return Path(increment_path(base / "train", exist_ok=False, sep=""))
    folder = Path(given).expanduser().resolve() if given is not None else base / name
    if folder.exists() and any(p.name != LOCK for p in folder.iterdir()):
        looks_like_run = (folder / "weights").is_dir() or (folder / "run.json").is_file()
        if not (cfg.values.get("exist_ok") and looks_like_run):
            raise UserError(
                f"{folder} already exists; pass another --name, --resume to continue it, "
                "or --set exist_ok=true to replace it."
            )
        check_unlocked(folder)  # a training still running there is refused, not deleted under it
        for p in folder.iterdir():  # exist_ok: replace the old run entirely (no stale eval/ or weights)
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.name != LOCK:
                p.unlink()
    return folder


def _check_resumable(last: Path) -> None:
    """Refuse a finished run: Ultralytics would silently start a new training over it."""
    import torch

    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    if ckpt.get("optimizer") is None or ckpt.get("epoch", -1) < 0:
        raise UserError(
            f"{last}: this run finished, nothing to resume; start a new run with --weights {last} to train it further."
        )


def _build_model(task: str, cfg: TrainConfig, run_dir: Path) -> tuple[Any, str]:
    """The Ultralytics YOLO model to train and where its starting weights come from (for run.json)."""
    from ultralytics import YOLO
    from ultralytics.utils import WEIGHTS_DIR

    from fracturekit.infer.model import load_checkpoint

    if cfg["resume"]:
        last = run_dir / "weights" / "last.pt"
        return load_checkpoint(last), f"resumed from {last}"
    spec, weights = cfg["model"], cfg["weights"]
    suffix = "-cls" if task == "classify" else ""
    if spec in MODEL_SIZES:
        arch, standard = f"yolov8{spec}{suffix}.yaml", f"yolov8{spec}{suffix}.pt"
    elif spec.lower().endswith(".pt"):
        arch, standard = spec, None
        weights = weights or spec  # a .pt model is its own pretrained checkpoint
    else:
        arch, standard = spec, None
    if weights is None and standard is not None:
        for folder in (Path.cwd(), Path(WEIGHTS_DIR)):
            if (folder / standard).is_file():
                weights = str(folder / standard)
                break
        else:
            if network_available():
                weights = standard  # Ultralytics downloads it into its weights dir
    if weights is None:
        log.warning(
            f"no pretrained weights offline: training {Path(arch).stem} from scratch (pass --weights FILE to fine-tune)"
        )
        return YOLO(arch, task=task), "from scratch (offline)"
    if arch.lower().endswith(".pt"):  # a file: checked; a standard name: Ultralytics downloads it when online
        model = load_checkpoint(arch) if Path(arch).is_file() else YOLO(arch)
    else:
        model = YOLO(arch, task=task)
    if model.task != task:
        raise UserError(f"{arch}: a {model.task} model, not a {task} one; pass a {task} model or --model n.")
    if weights != arch:
        if Path(weights).is_file():
            load_checkpoint(weights)  # a damaged or foreign file: one sentence, before Ultralytics' loader sees it
        model.load(weights)  # transfer every layer whose name and shape match (a detector's backbone too)
    return model, f"{weights}"


def _freeze_plan(cfg: TrainConfig, device: Device, pretrained: str) -> int | None:
    """Epoch (0-based) at which frozen layers are released, or None (no freeze, or frozen throughout)."""
    if not cfg.values.get("freeze"):
        return None
    epochs = int(cfg["epochs"])
    after = cfg.values.get("freeze_epochs") or math.ceil(epochs / 2)
    if pretrained.startswith("from scratch"):
        log.warning("freeze: the held layers are randomly initialised (no pretrained weights); pass --weights FILE")
    if after >= epochs:
        return None
    if device.ddp:
        raise UserError(
            "--freeze with a phase 2 is not supported on several GPUs (DDP fixes the trained layers at start); "
            "use one GPU or set freeze_epochs equal to epochs."
        )
    return after


def _observe_pipeline(trainer: Any, task: str) -> dict[str, Any]:
    """What the training loader really does: sampler, class counts, backgrounds, albumentations steps."""
    loader = trainer.train_loader
    dataset = loader.dataset
    out: dict[str, Any] = {"train_images": len(dataset)}
    if task == "classify":
        names = trainer.data["names"]
        counts = [0] * len(names)
        for sample in dataset.samples:
            counts[sample[1]] += 1
        out["class_counts"] = {names[i]: c for i, c in enumerate(counts)}
        out["sampler"] = type(loader.sampler).__name__
        steps = [t for t in dataset.torch_transforms.transforms if type(t).__name__ == "AlbumentationsStep"]
        out["albumentations"] = [describe(t) for s in steps for t in s.compose.transforms]
    else:
        labels = dataset.labels
        out["cache"] = dataset.cache  # "ram" | "disk" | None: what Ultralytics kept, after its memory/disk check
        out["background_images"] = sum(1 for lb in labels if len(lb["cls"]) == 0)
        out["boxes"] = int(sum(len(lb["cls"]) for lb in labels))
        albu = [t for t in getattr(dataset.transforms, "transforms", []) if type(t).__name__ == "Albumentations"]
        out["albumentations"] = [
            describe(t) for a in albu if a.transform is not None for t in a.transform.transforms if t.p > 0
        ]
    return out


def _epoch_times(results_csv: Path, restarts: set[int] = frozenset()) -> list[float]:
    """Seconds per epoch from Ultralytics' cumulative `time` column (train + validation of that epoch).

    The clock restarts at each epoch in `restarts` (1-based: where a resumed session began).
    """
    if not results_csv.is_file():
        return []
    with results_csv.open(newline="") as f:
        rows = [(int(row["epoch"]), float(row["time"])) for row in csv.DictReader(f) if row.get("time")]
    return [round(t - (0.0 if e in restarts or i == 0 else rows[i - 1][1]), 3) for i, (e, t) in enumerate(rows)]


def _final_metrics(task: str, result: Any) -> dict[str, float]:
    """Ultralytics' final validation of best.pt (a metrics object, or a dict under DDP)."""
    raw = getattr(result, "results_dict", result) or {}
    return {short: round(float(raw[key]), 5) for short, key in KEY_METRICS[task].items() if key in raw}


def _versions() -> dict[str, str]:
    import albumentations
    import torch
    import ultralytics

    return {
        "fracturekit": __version__,
        "ultralytics": ultralytics.__version__,
        "torch": torch.__version__,
        "albumentations": albumentations.__version__,
        "python": platform.python_version(),
    }


def _record(
    task: str,
    cfg: TrainConfig,
    ds: PreparedDataset,
    device: Device,
    threads: int,
    pretrained: str,
    run: RunDir,
    result: Any,
    pipeline: dict[str, Any],
    started: datetime,
    total: float,
    resumes: list[dict[str, Any]],
) -> dict[str, Any]:
    """The run.json content."""
    epochs = _epoch_times(run.results_csv, interrupted.session_starts(resumes))
    return {
        "task": task,
        "run_dir": str(run.root),
        "started": started.isoformat(timespec="seconds"),
        "seed": cfg["seed"],
        "versions": _versions(),
        "device": {
            "requested": str(cfg["device"]),
            "used": device.spec,
            "kind": device.kind,
            "name": device.name,
            "amp": bool(cfg["amp"]) and device.amp,
            "ddp": device.ddp,
        },
        "threads": threads,
        "data": str(ds.root.resolve()),
        "data_hash": ds.recorded_data_hash(),
        "model": cfg["model"],
        "pretrained": pretrained,
        "resumed": bool(cfg["resume"]),
        "interruptions": resumes,  # each kill this run was resumed from: the epoch that was cut, and when
        "config_overrides": cfg.overridden(),
        "timings": {
            "total_s": round(total, 3),
            "per_epoch_s": epochs,
            "mean_epoch_s": round(sum(epochs) / len(epochs), 3) if epochs else None,
        },
        "epochs_completed": len(epochs),
        "metrics": _final_metrics(task, result),
        "pipeline": pipeline,
    }


callable_stage(__name__)  # `fracturekit.train(...)` runs train() above: see fracturekit.Stage
