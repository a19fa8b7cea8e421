"""Overhead of `fracturekit.train.train` over plain Ultralytics, and the gain from its CPU thread setting.

Trains the same tiny detector (phantoms, imgsz 64, 2 epochs, CPU, from scratch) three ways in one
process, after one untimed warm-up run, `--repeats` times in rotating order (so none always goes first):
  fk        fracturekit.train.train(...)                       (all allowed cores)
  plain-fk  YOLO(...).train(...) with identical arguments and fracturekit's thread count
  plain-1   YOLO(...).train(...) with Ultralytics' default thread count (cores - 1)
and prints the median wall times, the ratio fk / plain-fk (goal <= 1.05) and plain-1 / plain-fk
(speedup from the thread setting alone). Usage: `.venv/bin/python bench/train_overhead.py [--task detect]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("FRACTUREKIT_OFFLINE", "1")


def _dataset(root: Path, n: int) -> Path:
    from fracturekit.data.phantoms import write_phantom_dataset
    from fracturekit.prepare import prepare

    raw = write_phantom_dataset(root / "raw", n=n, seed=5, size=64, fmt="coco")
    prepare(raw, root / "prepared", split=(0.6, 0.2, 0.2), seed=0)
    return root / "prepared"


def _plain_args(task: str, data: Path, settings: dict[str, Any], save_dir: Path) -> dict[str, Any]:
    """The arguments fracturekit hands to Ultralytics for the same settings (so only the wrapper differs)."""
    from fracturekit.core.layout import PreparedDataset
    from fracturekit.train import _OWN_KEYS, _data_argument
    from fracturekit.training.augment import xray_transforms
    from fracturekit.training.config import resolve_config

    cfg = resolve_config(task, None, settings)
    args = {k: v for k, v in cfg.values.items() if k not in _OWN_KEYS}
    args.update(
        data=_data_argument(PreparedDataset.open(data), task),
        save_dir=str(save_dir),
        device="cpu",
        amp=False,
        augmentations=xray_transforms(cfg.values, task) or None,
    )
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["classify", "detect"], default="detect")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()

    from fracturekit.core.yolo_env import cpu_threads, load_ultralytics

    load_ultralytics()
    import torch
    import ultralytics.utils as uu
    from ultralytics import YOLO
    from ultralytics.utils import torch_utils

    from fracturekit.train import train

    all_cores, default_threads = cpu_threads(None), uu.NUM_THREADS  # uu keeps Ultralytics' own value
    work = Path(tempfile.mkdtemp(prefix="fk-bench-"))
    data = _dataset(work, opts.images)
    arch = "yolov8n-cls.yaml" if opts.task == "classify" else "yolov8n.yaml"
    settings = dict(epochs=opts.epochs, imgsz=opts.imgsz, batch=8, device="cpu", plots=False, seed=0, verbose=False)

    def set_threads(n: int) -> None:
        torch_utils.NUM_THREADS = n  # what select_device() applies at trainer start
        torch.set_num_threads(n)

    def fk(i: int) -> None:
        set_threads(all_cores)
        train(opts.task, data, project=work / "runs", name=f"fk{i}", threads=all_cores, **settings)

    def plain(threads: int, tag: str) -> Any:
        def run(i: int) -> None:
            set_threads(threads)
            YOLO(arch).train(**_plain_args(opts.task, data, settings, work / "runs" / f"{tag}{i}"))

        return run

    runs = {"fk": fk, "plain-fk": plain(all_cores, "pfk"), "plain-1": plain(default_threads, "p1")}
    plain(all_cores, "warmup")(0)  # dataset label caches, first-call allocations: not part of any timing
    times: dict[str, list[float]] = {k: [] for k in runs}
    names = list(runs)
    for i in range(opts.repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter()
            runs[name](i)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"\ntask={opts.task} images={opts.images} imgsz={opts.imgsz} epochs={opts.epochs} repeats={opts.repeats} "
        f"cores={all_cores} ultralytics_default_threads={default_threads}"
    )
    for k, v in times.items():
        print(f"{k:9s} median {med[k]:7.2f} s  runs {', '.join(f'{x:.2f}' for x in v)}")
    print(f"ratio fracturekit / plain Ultralytics (same threads): {med['fk'] / med['plain-fk']:.3f} (goal <= 1.05)")
    print(
        f"speedup from threads alone ({default_threads} -> {all_cores}): {med['plain-1'] / med['plain-fk']:.2f}x "
        f"(plain Ultralytics)"
    )


if __name__ == "__main__":
    main()
