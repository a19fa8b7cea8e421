"""The whole pipeline, offline, on synthetic X-ray phantoms: generate -> prepare -> train -> evaluate -> predict.

Everything is written inside `out` (Ultralytics' settings and matplotlib's cache included, unless the user
already pointed them elsewhere), so a newcomer can delete one folder to undo it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fracturekit.core.layout import RunDir


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of one demo run: `full` must beat chance in < 10 min on 2 CPU cores, `fast` is for tests."""

    n_images: int
    n_fresh: int
    image_size: int
    cls_imgsz: int
    cls_epochs: int
    det_imgsz: int
    det_epochs: int
    batch: int
    bootstrap: int

    @classmethod
    def full(cls) -> DemoSettings:
        return cls(
            n_images=320,
            n_fresh=12,
            image_size=192,
            cls_imgsz=192,
            cls_epochs=15,
            det_imgsz=192,
            det_epochs=25,
            batch=16,
            bootstrap=1000,
        )

    @classmethod
    def fast(cls) -> DemoSettings:
        return cls(
            n_images=40,
            n_fresh=4,
            image_size=64,
            cls_imgsz=32,
            cls_epochs=1,
            det_imgsz=64,
            det_epochs=1,
            batch=8,
            bootstrap=100,
        )


@dataclass
class DemoResult:
    """Where the demo put things and the headline numbers it measured."""

    out: Path
    dataset: Path
    classifier: Path
    detector: Path
    eval_dir: Path
    predictions: Path
    metrics: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoStep:
    """One report of `run_demo`'s progress: a stage starting (`seconds` None, `title` says what it does) or done
    after `seconds`; `metrics` (evaluate's, once it is done) for a summary table."""

    stage: str
    title: str = ""
    seconds: float | None = None
    metrics: dict | None = None


def _keep_caches_inside(out: Path) -> None:
    """Point Ultralytics' settings/fonts and matplotlib's cache into `out` unless the user chose a place."""
    os.environ.setdefault("YOLO_CONFIG_DIR", str(out / ".cache" / "ultralytics"))
    os.environ.setdefault("MPLCONFIGDIR", str(out / ".cache" / "matplotlib"))


def run_demo(
    out: str | Path = "runs/demo",
    *,
    fast: bool = False,
    seed: int = 0,
    deterministic: bool = False,
    steps: Callable[[DemoStep], None] | None = None,
) -> DemoResult:
    """Run every stage on freshly generated phantoms and return the artefacts and headline metrics.

    `deterministic` trains both models with train's `reproducible` (CLI `--deterministic`): float32, one fixed
    thread count, deterministic algorithms, so that machines of one kind train the same weights (README "The demo").

    `steps` hears each stage start and finish (the CLI prints them); the demo itself prints nothing.
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    _keep_caches_inside(out)
    say = steps or (lambda _step: None)
    settings = DemoSettings.fast() if fast else DemoSettings.full()

    # Imported here: these pull in torch/Ultralytics, which must see the environment set above.
    from fracturekit.data.phantoms import write_phantom_dataset
    from fracturekit.evaluate import evaluate
    from fracturekit.predict import predict
    from fracturekit.prepare import prepare

    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def lap(stage: str, metrics: dict | None = None) -> None:
        timings[stage] = round(time.perf_counter() - t0 - sum(timings.values()), 1)
        say(DemoStep(stage, seconds=timings[stage], metrics=metrics))

    say(DemoStep("generate", f"1/5 generate {settings.n_images} phantom X-rays ({settings.image_size} px)"))
    raw = write_phantom_dataset(out / "raw", settings.n_images, seed=seed, size=settings.image_size, fmt="coco")
    lap("generate")

    say(DemoStep("prepare", "2/5 prepare (leak-free split by patient + audit)"))
    # exist_ok here and below: a re-run of the demo replaces its own earlier outputs, nothing else.
    prepared = prepare(
        raw,
        out / "dataset",
        split=(0.6, 0.2, 0.2),
        seed=seed,
        meta=raw / "metadata.csv",
        exist_ok=True,
        runs_dir=out / "runs",
    )
    lap("prepare")

    say(DemoStep("train", "3/5 train a detector, then a classifier on its backbone (from scratch, offline)"))
    detector, classifier = _train_models(prepared.dataset.root, settings, out, seed, deterministic)
    lap("train")

    say(DemoStep("evaluate", "4/5 evaluate on the held-out test split"))
    # Default output: the runs' own eval/ folders, where `predict` finds the tuned thresholds.
    eval_dir = classifier.eval_dir
    metrics = evaluate(
        prepared.dataset.root,
        classifier=classifier.root,
        detector=detector.root,
        split="test",
        bootstrap=settings.bootstrap,
        seed=seed,
    )
    lap("evaluate", metrics)

    say(DemoStep("predict", f"5/5 predict on {settings.n_fresh} fresh phantoms"))
    fresh = write_phantom_dataset(
        out / "fresh", settings.n_fresh, seed=seed + 1, size=settings.image_size, fmt="images"
    )
    predictions = out / "predictions"
    predict(fresh, detector=detector.root, classifier=classifier.root, out=predictions, exist_ok=True)
    lap("predict")

    timings["total"] = round(time.perf_counter() - t0, 1)
    result = DemoResult(
        out=out,
        dataset=prepared.dataset.root,
        classifier=classifier.root,
        detector=detector.root,
        eval_dir=eval_dir,
        predictions=predictions,
        metrics=metrics,
        timings=timings,
    )
    (out / "demo.json").write_text(json.dumps({"settings": asdict(settings), **asdict(result)}, indent=2, default=str))
    return result


def _train_models(
    data: Path, settings: DemoSettings, out: Path, seed: int, deterministic: bool
) -> tuple[RunDir, RunDir]:
    """(detector, classifier) run folders: a detector from scratch, then a classifier on its backbone."""
    from fracturekit.train import train

    # exist_ok: a re-run of the demo replaces its own earlier runs instead of refusing the name.
    common = {
        "project": out / "runs",
        "name": "demo",
        "device": "auto",
        "seed": seed,
        "batch": settings.batch,
        "exist_ok": True,
        "plots": False,
    }
    if deterministic:
        common["reproducible"] = True
    detector = train(task="detect", data=data, imgsz=settings.det_imgsz, epochs=settings.det_epochs, **common)
    # No pretrained weights offline: the classifier starts from the backbone the detector just learned from
    # the boxes (layers 0-8 are shared by YOLOv8-det and -cls). From random weights it stays at chance
    # within a CPU budget of minutes.
    classifier = train(
        task="classify",
        data=data,
        imgsz=settings.cls_imgsz,
        epochs=settings.cls_epochs,
        weights=detector.best,
        **common,
    )
    return detector, classifier
