"""CPU seconds of one YOLOv8n-det training step (forward, loss, backward, SGD step), eager vs torch.compile.

A fixed synthetic batch (batch 16, --imgsz, 1 class, 2 boxes per film), the model built as Ultralytics' trainer
builds it (yolov8n.yaml, nc=1), in the precision fracturekit trains with on a bf16 CPU (bf16 autocast on the network
forward, loss in float32, channels_last) unless --float32. Prints the eager step's CPU seconds and, with --compile,
the compiled step's, the compile's own CPU seconds (its first two steps minus two steady ones, compile workers and
the C++ compiler included) and after how many epochs of --batches steps it pays back; with --ops the top ops of an
eager step. CPU seconds count all threads: use --threads 1 on a loaded machine, where waiting threads spin.

Usage: PYTHONPATH=. .venv/bin/python bench/train_step.py [--imgsz 320] [--threads 1] [--steps 5] [--compile] [--ops]
"""

from __future__ import annotations

import argparse
import os
import time
import types

os.environ.setdefault("FRACTUREKIT_OFFLINE", "1")


def cpu_seconds() -> float:
    """User+sys CPU seconds of this process and all its descendants, live or reaped: inductor compiles in a pool of
    worker processes that run the C++ compiler, whose time `time.process_time()` would miss."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
        except psutil.Error:  # exited between listing and reading
            pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batches", type=int, default=13, help="training batches per epoch (200 films / 16 = 13)")
    ap.add_argument("--float32", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--ops", action="store_true")
    a = ap.parse_args()

    from fracturekit.core.yolo_env import load_ultralytics

    load_ultralytics(a.threads)
    import torch
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import DEFAULT_CFG

    from fracturekit.training.trainers import _bf16_predict

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    model.args = DEFAULT_CFG
    model.train()
    if not a.float32:
        model.to(memory_format=torch.channels_last)
        model.predict = types.MethodType(_bf16_predict, model)
    b = 16
    img = torch.rand(b, 3, a.imgsz, a.imgsz)
    batch = {
        "img": img,
        "batch_idx": torch.arange(b).repeat_interleave(2).float(),
        "cls": torch.zeros(2 * b, 1),
        "bboxes": torch.rand(2 * b, 4) * 0.3 + torch.tensor([0.35, 0.35, 0.05, 0.05]),
    }
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step(net: torch.nn.Module) -> float:
        t = cpu_seconds()
        preds = net(batch["img"])
        loss, _ = model.loss(batch, preds)
        loss.sum().backward()
        opt.step()
        opt.zero_grad()
        return cpu_seconds() - t

    def steady(net: torch.nn.Module) -> list[float]:
        return sorted(step(net) for _ in range(a.steps))

    precision = "float32" if a.float32 else "bf16 autocast + channels_last"
    print(f"{precision}, imgsz {a.imgsz}, batch {b}, {a.threads} thread(s), {a.steps} steady steps each")
    warm = [step(model) for _ in range(2)]  # oneDNN creates its primitives on the first steps
    eager = steady(model)
    med = eager[len(eager) // 2]
    print(f"eager: first two steps {warm[0]:.2f} + {warm[1]:.2f} CPU s; steady median {med:.3f} (min {eager[0]:.3f})")
    if a.compile:
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        first = [step(compiled) for _ in range(2)]  # tracing, inductor codegen and the C++ compiler, then warm-up
        wall = time.perf_counter() - t0
        fast = steady(compiled)
        cmed = fast[len(fast) // 2]
        cost = sum(first) - 2 * cmed
        print(
            f"compiled: first two steps {first[0]:.1f} + {first[1]:.1f} CPU s ({wall:.0f} s wall); steady median "
            f"{cmed:.3f} (min {fast[0]:.3f}): {cmed / med:.2f} of eager"
        )
        gain = (med - cmed) * a.batches
        pays = f"after {cost / gain:.1f} epochs" if gain > 0 else "never"
        print(f"compile cost {cost:.1f} CPU s; saves {gain:.2f} CPU s per epoch of {a.batches} batches: pays {pays}")
    if a.ops:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step(model)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
