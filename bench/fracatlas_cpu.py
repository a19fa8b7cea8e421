"""CPU-budget benchmark on FracAtlas: fracturekit vs plain Ultralytics defaults, same split, same epoch budget.

Steps: `prepare` FracAtlas (group-aware, duplicate-aware split, seed 0) -> train a YOLOv8n-cls classifier and a
YOLOv8n-det detector with fracturekit for a fixed number of epochs each -> evaluate both on the test split. The
reference trains the same models with plain `YOLO(...).train()` and Ultralytics' defaults (its thread count and
augmentation) on the same prepared split with the same epochs and image size, and is scored by the same
evaluator, so the ratios isolate what fracturekit's defaults buy. The budget is in epochs, not minutes, so the
metrics do not depend on what else the machine is doing; the times are printed beside them. Prints AUROC
(classifier and detector-derived), mAP@0.5:0.95 and mAP@0.5, and the ratios fracturekit / reference.

Usage: python bench/fracatlas_cpu.py [--data ../shared/data/fracatlas] [--out /tmp/fk-bench-fracatlas]
       [--cls-epochs 3] [--det-epochs 1] [--cls-imgsz 160] [--det-imgsz 256] [--skip-reference]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _reference_train(task: str, data: Path, out: Path, imgsz: int, epochs: int, seed: int) -> Path:
    """Plain Ultralytics with its defaults (threads, augmentation), only the budget, size and seed set."""
    from ultralytics import YOLO, utils
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = utils.NUM_THREADS  # Ultralytics' own default (fracturekit changed torch_utils' copy)
    model = YOLO("yolov8n-cls.yaml" if task == "classify" else "yolov8n.yaml")
    source = data / "cls" if task == "classify" else data / "det" / "data.yaml"
    model.train(
        data=str(source),
        imgsz=imgsz,
        epochs=epochs,
        seed=seed,
        device="cpu",
        project=str(out / "reference"),
        name=task,
        exist_ok=True,
        plots=False,
    )
    return out / "reference" / task


def _headline(metrics: dict) -> dict[str, float | None]:
    cls, det = metrics.get("classification") or {}, metrics.get("detection") or {}
    return {
        "cls_auroc": cls.get("auroc"),
        "det_image_auroc": det.get("image_auroc"),
        "map50_95": det.get("map50_95"),
        "map50": det.get("map50"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "fracatlas")
    parser.add_argument("--out", type=Path, default=Path("/tmp/fk-bench-fracatlas"))
    parser.add_argument("--cls-epochs", type=int, default=3)
    parser.add_argument("--det-epochs", type=int, default=1)
    parser.add_argument("--cls-imgsz", type=int, default=160)
    parser.add_argument("--det-imgsz", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-reference", action="store_true", help="Only the fracturekit side.")
    args = parser.parse_args()
    if not args.data.exists():
        raise SystemExit(f"{args.data}: FracAtlas not found; pass --data PATH (see ../shared/data/README.md).")

    from fracturekit.core.yolo_env import load_ultralytics
    from fracturekit.evaluate import evaluate
    from fracturekit.prepare import prepare
    from fracturekit.train import train

    load_ultralytics()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    prepared = prepare(args.data, args.out / "dataset", fmt="fracatlas", split=(0.7, 0.15, 0.15), seed=args.seed)
    timings["prepare_s"] = time.perf_counter() - t
    data = prepared.dataset.root

    runs: dict[str, dict[str, Path]] = {"fracturekit": {}, "reference": {}}
    budgets = {"classify": (args.cls_imgsz, args.cls_epochs), "detect": (args.det_imgsz, args.det_epochs)}
    for task, (imgsz, epochs) in budgets.items():
        t = time.perf_counter()
        run = train(
            task=task,
            data=data,
            project=args.out / "runs",
            name="fk",
            exist_ok=True,
            imgsz=imgsz,
            epochs=epochs,
            seed=args.seed,
            device="cpu",
        )
        timings[f"fracturekit_{task}_s"] = time.perf_counter() - t
        runs["fracturekit"][task] = run.root
        if not args.skip_reference:
            t = time.perf_counter()
            runs["reference"][task] = _reference_train(task, data, args.out, imgsz, epochs, args.seed)
            timings[f"reference_{task}_s"] = time.perf_counter() - t

    scores: dict[str, dict[str, float | None]] = {}
    for side, side_runs in runs.items():
        if not side_runs:
            continue
        t = time.perf_counter()
        metrics = evaluate(
            data,
            classifier=side_runs["classify"],
            detector=side_runs["detect"],
            split="test",
            out=args.out / f"eval-{side}",
            seed=args.seed,
        )
        timings[f"evaluate_{side}_s"] = time.perf_counter() - t
        scores[side] = _headline(metrics)

    print(
        f"budget: classifier {args.cls_epochs} epochs at imgsz {args.cls_imgsz}, "
        f"detector {args.det_epochs} epochs at imgsz {args.det_imgsz}, YOLOv8n from scratch, CPU"
    )
    print("time: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    keys = ("cls_auroc", "det_image_auroc", "map50_95", "map50")
    print(f"{'metric':<18}{'fracturekit':>12}{'reference':>12}{'ratio':>8}")
    for key in keys:
        fk = scores["fracturekit"][key]
        ref = scores.get("reference", {}).get(key)
        ratio = f"{fk / ref:.2f}" if fk is not None and ref else "n/a"
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"{key:<18}{fmt(fk):>12}{fmt(ref):>12}{ratio:>8}")
    (args.out / "bench.json").write_text(
        json.dumps({"timings": timings, "scores": scores, "args": vars(args)}, indent=2, default=str)
    )


if __name__ == "__main__":
    main()
