"""CPU training speed: `fracturekit train` vs plain Ultralytics on a FracAtlas subset (detect, imgsz 320), one run.

Data: FracAtlas prepared by `fracturekit prepare` (seed 0), then a stated subset: --train-films films of its train
split and --val-films of its val split, evenly spaced over the sorted file lists (so fractured and normal films
both appear), linked into a prepared-dataset folder that both sides read. Each side trains YOLOv8n-det from
scratch for --epochs epochs, seed 0, batch 16, in its own Python process, one after the other:

- plain Ultralytics: `YOLO("yolov8n.yaml").train(**args)` with exactly the arguments fracturekit hands Ultralytics
  for the same settings (its augmentation recipe included, so only speed levers differ), at Ultralytics' default
  thread count (cores - 1) and at all cores;
- fracturekit: `fracturekit.train.train(...)` with its CPU defaults (all cores; bf16 autocast and channels_last on
  a CPU with native bf16, and bf16 autocast in the per-epoch validation with them; cache='ram' where Ultralytics'
  memory check passes);
- with --levers, fracturekit again with one lever changed at a time: everything float32 (amp off: no bf16 in
  training or validation, no channels_last), no channels_last, float32 per-epoch validation (val_bf16 off),
  no cache (cache=false: films read and decoded again each epoch), prefetch (prefetch=true: the next batch made in
  a background thread, fracturekit.training.prefetch, instead of serially between two steps as Ultralytics does
  with its CPU workers=0), and torch.compile (Ultralytics'
  `compile`, inductor; off by default: its compile time is counted in s/epoch; bench/train_step.py measured no
  steady gain here). No "dataloader workers" lever: Ultralytics sets workers=0 on CPU whatever is asked.
The prefetch line under the table counts, for the prefetch row, how long the training thread waited for
its next batch (each epoch's first batch, which nothing precedes, apart) and the loading thread's CPU seconds.

s/epoch = the last `time` of results.csv (training + validation, cumulative) / epochs. Ultralytics starts that clock
after its set-up, so the one-time filling of cache='ram' (every film decoded once) is outside it: the `whole s`
column is each side's whole process (imports, set-up, cache, training, final validation), and the line above the
last gives their ratio. Final metrics: mAP50,
mAP50-95 and the summed box/cls/dfl loss of the last epoch's validation (on the val subset, EMA weights on every
side: float32 on plain Ultralytics' side, under bf16 autocast where fracturekit's val_bf16 is on; the "val float32"
lever row is the same training validated in float32). The last line is `ratio_vs_ultralytics: X.XX` = fracturekit
s/epoch / plain Ultralytics s/epoch at the SAME thread count (the stricter reference; the ratio against Ultralytics'
default thread count is printed above it).
From scratch, a few epochs learn little on FracAtlas: equal metrics here mean "no lever broke training", not
"equally good models".

Usage: .venv/bin/python bench/train_speed.py [--train-films 300] [--val-films 100] [--epochs 3] [--imgsz 320]
       [--levers] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRACATLAS = REPO.parent / "shared" / "data" / "fracatlas"

_PLAIN = """
import json, sys
from pathlib import Path
from fracturekit.core.yolo_env import load_ultralytics
load_ultralytics()  # the same offline-safe import fracturekit uses; threads are set below
import torch
from ultralytics import YOLO
from ultralytics.utils import torch_utils
sys.path.insert(0, "bench")
from train_overhead import _plain_args
settings, data, save_dir, threads = json.loads(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
args = _plain_args("detect", data, settings, save_dir)  # what fracturekit would hand Ultralytics
args["channels_last"] = False  # Ultralytics' CPU behaviour: ignored off CUDA
torch_utils.NUM_THREADS = threads  # what the trainer applies at start
torch.set_num_threads(threads)
YOLO("yolov8n.yaml").train(**args)
"""

_FK = """
import json, sys
from fracturekit.train import train
kw = json.loads(sys.argv[1])
train("detect", kw.pop("data"), **kw)
"""


def subset(prepared: Path, out: Path, n_train: int, n_val: int) -> Path:
    """A prepared-dataset folder holding links to n_train train and n_val val films (and their labels)."""
    import numpy as np
    import yaml

    if (out / "manifest.csv").is_file():
        return out
    for split, n in (("train", n_train), ("val", n_val)):
        films = sorted((prepared / "det" / "images" / split).iterdir())
        for k in np.linspace(0, len(films) - 1, min(n, len(films))).round().astype(int):
            img = films[k]
            label = prepared / "det" / "labels" / split / f"{img.stem}.txt"
            for src, dst in ((img, out / "det" / "images" / split / img.name), (label, out / "det" / "labels" / split)):
                if src.suffix == ".txt":
                    if not src.is_file():
                        continue
                    dst = dst / src.name
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.symlink_to(src.resolve())
    (out / "det" / "images" / "test").mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load((prepared / "det" / "data.yaml").read_text())
    data["path"] = str((out / "det").resolve())
    (out / "det" / "data.yaml").write_text(yaml.safe_dump(data))
    (out / "manifest.csv").symlink_to((prepared / "manifest.csv").resolve())
    if (prepared / "signatures.npz").is_file():  # as a cv fold does: train takes its seen films' signatures
        (out / "signatures.npz").symlink_to((prepared / "signatures.npz").resolve())
    return out


def read_results(run: Path, epochs: int) -> dict[str, float]:
    """s/epoch and the last epoch's validation metrics from Ultralytics' results.csv."""
    with (run / "results.csv").open() as f:
        rows = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)]
    last = rows[-1]
    return {
        "epochs": len(rows),
        "s_per_epoch": float(last["time"]) / len(rows),
        "map50": float(last["metrics/mAP50(B)"]),
        "map50_95": float(last["metrics/mAP50-95(B)"]),
        # From scratch, a few epochs leave mAP near 0 on every side; the validation loss still shows whether a
        # lever changed what the network learned.
        "val_loss": sum(float(last[f"val/{k}_loss"]) for k in ("box", "cls", "dfl")),
    }


def run(snippet: str, args: list[str], env: dict[str, str]) -> float:
    """Run one side in its own process; its whole wall time (imports, set-up, training, final validation)."""
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", snippet, *args], env=env, cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"training failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-films", type=int, default=300)
    ap.add_argument("--val-films", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--levers", action="store_true", help="also fracturekit with each CPU lever changed alone")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder, reusable (default: a new temp folder)")
    a = ap.parse_args()
    if not FRACATLAS.is_dir():
        raise SystemExit(f"{FRACATLAS}: absent; this bench needs FracAtlas (see ../shared/data/README.md).")
    work = a.work or Path(tempfile.mkdtemp(prefix="fk-train-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg_dir = work / "ultralytics-config"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env |= {"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(cfg_dir), "FRACTUREKIT_OFFLINE": "1"}
    os.environ.update(YOLO_CONFIG_DIR=str(cfg_dir))

    from fracturekit.core.device import cpu_info
    from fracturekit.core.yolo_env import cpu_threads, load_ultralytics
    from fracturekit.prepare import prepare
    from fracturekit.train import _cpu_speed, _resolve, _val_bf16

    load_ultralytics()
    import ultralytics.utils as uu

    full = work / "fracatlas"
    if not (full / "manifest.csv").is_file():
        prepare(FRACATLAS, full, fmt="fracatlas", split=(0.7, 0.15, 0.15), seed=0)
    data = subset(full, work / f"subset-{a.train_films}-{a.val_films}", a.train_films, a.val_films)
    runs = work / "runs" / time.strftime("%Y%m%d-%H%M%S")  # a --work folder is reused: its prepared set, not its runs
    cores, default_threads = cpu_threads(), uu.NUM_THREADS
    settings = dict(epochs=a.epochs, imgsz=a.imgsz, batch=16, device="cpu", plots=False, seed=0, verbose=False)

    from fracturekit.core.device import resolve_device

    cfg, cpu = _resolve("detect", None, dict(settings)), resolve_device("cpu")
    bf16, channels_last = _cpu_speed(cfg, cpu)
    val_bf16 = _val_bf16(cfg, cpu, bf16)
    rows: list[tuple[str, dict[str, float]]] = []

    def plain(label: str, threads: int) -> None:
        target = runs / label.replace(" ", "_")
        whole = run(_PLAIN, [json.dumps(settings), str(data), str(target), str(threads)], env)
        rows.append((label, read_results(target, a.epochs) | {"whole_s": whole}))

    failed: list[tuple[str, str]] = []

    def fk(label: str, lever: bool = False, **extra: object) -> None:
        kw = dict(settings, data=str(data), project=str(runs), name=label.replace(" ", "_"), **extra)
        try:
            whole = run(_FK, [json.dumps(kw)], env)
        except SystemExit as exc:
            if not lever:
                raise
            failed.append((label, str(exc).strip().splitlines()[-1]))  # one lever failing keeps the others' rows
            return
        rows.append((label, read_results(runs / "detect" / label.replace(" ", "_"), a.epochs) | {"whole_s": whole}))

    plain(f"plain Ultralytics ({default_threads} thread)", default_threads)
    plain(f"plain Ultralytics ({cores} threads)", cores)
    on = (("bf16", bf16), ("channels_last", channels_last), ("val bf16", val_bf16))
    levers = "+".join(n for n, v in on if v) or "float32"
    fk(f"fracturekit ({levers}, cache)")
    pipeline = json.loads((runs / "detect" / rows[-1][0].replace(" ", "_") / "run.json").read_text())["pipeline"]
    if a.levers:
        fk("fracturekit float32", lever=True, amp=False, channels_last=False)
        fk("fracturekit no channels_last", lever=True, channels_last=False)
        fk("fracturekit val float32", lever=True, val_bf16=False)
        fk("fracturekit no cache", lever=True, cache=False)
        fk("fracturekit prefetch", lever=True, prefetch=True)
        fk("fracturekit compile", lever=True, compile=True)

    print(cpu_info().line)
    print(
        f"FracAtlas subset: {a.train_films} train + {a.val_films} val films (evenly spaced over the prepared "
        f"splits, seed 0); YOLOv8n-det from scratch, imgsz {a.imgsz}, batch 16, {a.epochs} epochs, seed 0"
    )
    print(
        f"fracturekit's CPU choice here: bf16 autocast {bf16}, channels_last {channels_last}, "
        f"bf16 per-epoch validation {val_bf16}, cache {pipeline.get('cache')}, {cores} threads"
    )
    print(f"{'side':58s} {'s/epoch':>8s} {'mAP50':>7s} {'mAP50-95':>9s} {'val loss':>9s} {'ratio':>6s} {'whole s':>8s}")
    strict = rows[1][1]["s_per_epoch"]
    for label, r in rows:
        ratio = r["s_per_epoch"] / strict
        print(
            f"{label:58s} {r['s_per_epoch']:8.1f} {r['map50']:7.4f} {r['map50_95']:9.4f} "
            f"{r['val_loss']:9.3f} {ratio:6.2f} {r['whole_s']:8.1f}"
        )
    for label, why in failed:
        print(f"{label:58s} failed: {why}")
    pf_label = next((label for label, _ in rows if label == "fracturekit prefetch"), None)
    pf_run = runs / "detect" / str(pf_label).replace(" ", "_") / "run.json"
    pf = json.loads(pf_run.read_text())["pipeline"]["cpu_prefetch"] if pf_label else None
    if pf:
        print(
            f"prefetch ({pf_label}): {pf['batches']} batches; the training thread waited {pf['first_wait_s']:.2f} s "
            f"for each epoch's first batch and {pf['wait_s']:.2f} s for all the others; loading thread "
            f"{pf['load_cpu_s']:.2f} CPU s"
        )
    fk_s = rows[2][1]["s_per_epoch"]
    print(f"ratio vs plain Ultralytics at its default {default_threads} thread: {fk_s / rows[0][1]['s_per_epoch']:.2f}")
    whole = rows[2][1]["whole_s"] / rows[1][1]["whole_s"]
    print(f"ratio of the whole runs (set-up and cache filling included), same threads: {whole:.2f}")
    print(f"ratio_vs_ultralytics: {fk_s / strict:.2f}")


if __name__ == "__main__":
    main()
