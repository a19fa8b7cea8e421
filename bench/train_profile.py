"""Where a CPU training epoch goes: CPU seconds (and wall seconds) per phase of `fracturekit train`, per epoch.

Phases, attributed between Ultralytics' own trainer events (no kernel-level tracing, so the numbers are cheap to
take and valid under load as CPU time): data (the train loader's next batch: decode, mosaic/affine, albumentations,
collate), forward (preprocess + network + loss), backward, optimizer (step, zero_grad, EMA update, every
`accumulate` batches), val (the epoch's validation: its loader, EMA forward, NMS, metrics), other (epoch start and
end, checkpoint save, logging). CPU = this process's user+sys (all its threads) plus its live dataloader workers'.
With fracturekit's CPU prefetch (the default for detection), "data" is the time the training thread still waits
for its next batch; the loading thread's CPU falls into the phases it runs beside, and the `pipeline` line gives
its own count (run.json `pipeline.cpu_prefetch`). `--set prefetch=false` profiles the serial loader.

Usage: PYTHONPATH=. .venv/bin/python bench/train_profile.py DATA [--epochs 2] [--imgsz 320] [--set key=value ...]
DATA is a prepared dataset (e.g. the subset folder bench/train_speed.py writes: WORK/subset). `--set` passes
fracturekit train overrides (YAML values), e.g. `--set cache=ram --set amp=false`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

PHASES = ("data", "forward", "backward", "optimizer", "val", "other")


class Clock:
    """Attributes elapsed (CPU, wall) seconds to the current phase at each `switch`."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.phase = "other"
        self.at = self.now()
        self.cpu: dict[str, float] = defaultdict(float)
        self.wall: dict[str, float] = defaultdict(float)
        self.epochs: list[tuple[dict[str, float], dict[str, float]]] = []

    def now(self) -> tuple[float, float]:
        cpu = time.process_time()
        for child in self.proc.children(recursive=True):  # dataloader workers, when there are any
            try:
                t = child.cpu_times()
                cpu += t.user + t.system
            except Exception:  # a worker that just exited
                pass
        return cpu, time.perf_counter()

    def switch(self, phase: str) -> None:
        cpu, wall = self.now()
        self.cpu[self.phase] += cpu - self.at[0]
        self.wall[self.phase] += wall - self.at[1]
        self.phase, self.at = phase, (cpu, wall)

    def close_epoch(self) -> None:
        self.switch("other")
        self.epochs.append((dict(self.cpu), dict(self.wall)))
        self.cpu.clear()
        self.wall.clear()


def instrument(clock: Clock) -> None:
    """Hook the clock into every trainer Ultralytics builds in this process (its default callbacks)."""
    from ultralytics.utils.callbacks import base

    def on_pretrain_routine_end(trainer: Any) -> None:
        scale, step, validate = trainer.scaler.scale, trainer.optimizer_step, trainer.validate

        def timed_scale(loss: Any) -> Any:  # called right after the forward, before .backward()
            clock.switch("backward")
            return scale(loss)

        def timed_step() -> None:
            clock.switch("optimizer")
            step()
            clock.switch("other")

        def timed_validate() -> Any:
            clock.switch("val")
            out = validate()
            clock.switch("other")
            return out

        trainer.scaler.scale, trainer.optimizer_step, trainer.validate = timed_scale, timed_step, timed_validate
        clock.switch("other")
        clock.cpu.clear()
        clock.wall.clear()

    hooks = {
        "on_pretrain_routine_end": on_pretrain_routine_end,
        "on_train_epoch_start": lambda tr: clock.switch("data"),
        "on_train_batch_start": lambda tr: clock.switch("forward"),
        "on_train_batch_end": lambda tr: clock.switch("data"),
        "on_train_epoch_end": lambda tr: clock.switch("other"),
        "on_fit_epoch_end": lambda tr: clock.close_epoch(),
    }
    for event, fn in hooks.items():
        base.default_callbacks[event].append(fn)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    a = ap.parse_args()
    os.environ.setdefault("FRACTUREKIT_OFFLINE", "1")
    from fracturekit.core.yolo_env import load_ultralytics

    load_ultralytics()
    from fracturekit.train import train_recorded

    extra = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in a.set)}
    clock = Clock()
    instrument(clock)
    with tempfile.TemporaryDirectory(prefix="fk-train-profile-") as tmp:
        done = train_recorded(
            "detect",
            a.data,
            **dict(epochs=a.epochs, imgsz=a.imgsz, batch=16, device="cpu", plots=False, seed=0, verbose=False),
            project=tmp,
            name="run",
            **extra,
        )
    print(f"settings: epochs {a.epochs}, imgsz {a.imgsz}, batch 16, {' '.join(a.set) or 'defaults'}")
    print(f"pipeline: {done.record['pipeline']}")
    print(f"{'epoch':>5s} {'what':5s} " + " ".join(f"{p:>9s}" for p in PHASES) + f" {'total':>9s}")
    for i, (cpu, wall) in enumerate(clock.epochs, 1):
        epoch = str(i) if i <= a.epochs else "final"  # Ultralytics' last on_fit_epoch_end: best.pt's validation
        for what, d in (("cpu", cpu), ("wall", wall)):
            cells = " ".join(f"{d.get(p, 0.0):9.2f}" for p in PHASES)
            print(f"{epoch:>5s} {what:5s} {cells} {sum(d.values()):9.2f}")
    print(f"final metrics: {done.record['metrics']}")


if __name__ == "__main__":
    main()
