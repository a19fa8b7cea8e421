"""CPU seconds of one YOLOv8n-det training step (forward, loss, backward), eager vs torch.compile, and its op profile.

A fixed synthetic batch (batch 16, --imgsz, 1 class, 2 boxes per film), the model built as Ultralytics' trainer
builds it (yolov8n.yaml, nc=1), in the precision fracturekit trains with on a bf16 CPU (bf16 autocast on the network
forward, loss in float32, channels_last) unless --float32. Prints: CPU seconds per step (process_time, all threads:
use --threads 1 on a loaded machine, where spinning threads inflate it), the compile's own CPU seconds (first compiled
steps minus a steady step), the epochs it takes to pay back at --batches per epoch, and with --ops the top ops.

Usage: PYTHONPATH=. .venv/bin/python bench/train_step.py [--imgsz 320] [--threads 1] [--steps 5] [--compile] [--ops]
"""

from __future__ import annotations

import argparse
import os
import time
import types

os.environ.setdefault("FRACTUREKIT_OFFLINE", "1")


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
    net = torch.compile(model) if a.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step() -> float:
        t = time.process_time()
        preds = net(batch["img"])
        loss, _ = model.loss(batch, preds)
        loss.sum().backward()
        opt.step()
        opt.zero_grad()
        return time.process_time() - t

    first = [step() for _ in range(2)]  # eager warm-up (oneDNN primitive creation) or compile + warm-up
    steady = sorted(step() for _ in range(a.steps))
    med = steady[len(steady) // 2]
    mode = ("compiled" if a.compile else "eager") + (" float32" if a.float32 else " bf16+channels_last")
    print(f"{mode}, imgsz {a.imgsz}, batch {b}, {a.threads} thread(s)")
    print(
        f"first two steps: {first[0]:.2f} + {first[1]:.2f} CPU s; steady step: median {med:.3f} CPU s "
        f"(min {steady[0]:.3f}, max {steady[-1]:.3f}, {a.steps} steps)"
    )
    if a.compile:
        extra = sum(first) - 2 * med
        print(f"compile cost: {extra:.1f} CPU s (first two steps minus two steady steps)")
    if a.ops:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
