"""CPU seconds of one YOLOv8n-det training step (forward, loss, backward, SGD step), eager vs torch.compile.

A fixed synthetic batch (batch 16, --imgsz, 1 class, 2 boxes per film), the model built as Ultralytics' trainer
builds it (yolov8n.yaml, nc=1), in the precision fracturekit trains with on a bf16 CPU (bf16 autocast on the network
forward, loss in float32, channels_last) unless --float32. Prints the eager step's CPU seconds and, with --compile,
the compiled step's, the compile's own CPU seconds (its first two steps minus two steady ones, compile workers and
the C++ compiler included) and after how many epochs of --batches steps it pays back; with --ops the top ops of an
eager step. CPU seconds count all threads: use --threads 1 on a loaded machine, where waiting threads spin.

--roofline asks how far the step is from this CPU's limit: it measures the reference, a 2048^3 matrix product in the
step's precision (bf16 or float32; MKL/oneDNN's best case, so near the CPU's peak), then times every convolution of
one eager step (forward, and backward: input and weight gradients) and counts its FLOPs from the shapes. It prints
the convolutions' GFLOP/s as a ratio of the reference, and the rest of the step (batch norm, SiLU, cat, casts, the
loss, the optimizer) by op. Wall seconds, not CPU seconds: run it idle.

Usage: PYTHONPATH=. .venv/bin/python bench/train_step.py [--imgsz 320] [--threads 1] [--steps 5] [--compile] [--ops]
       [--roofline]
"""

from __future__ import annotations

import argparse
import os
import time
import types
from collections.abc import Callable

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
    ap.add_argument("--roofline", action="store_true", help="the convolutions' GFLOP/s against a matrix product's")
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
    if a.roofline:
        roofline(lambda: step(model), torch.float32 if a.float32 else torch.bfloat16, a.steps, a.batches)


def conv_flops(func_name: str, args: tuple, out: object) -> float:
    """FLOPs (2 per multiply-add) of one aten convolution or convolution_backward call: 2 x output elements x the
    weight's elements per output channel (input channels per group x kernel area). A backward counts that once per
    gradient its output_mask asks for (input, weight; the bias gradient is a sum, left out)."""
    weight = args[1] if func_name.startswith("convolution.") else args[2]
    per = 2 * weight[0].numel()
    if func_name.startswith("convolution_backward"):
        mask = args[10]
        return per * args[0].numel() * (int(mask[0]) + int(mask[1]))
    return per * out.numel()


def roofline(step: Callable[[], object], dtype: object, steps: int, batches: int) -> None:
    """Print the convolutions of one `step` (main's training step) against a matrix product's GFLOP/s, and where the
    rest of the step goes. The step's wall time includes its two CPU-time reads (`cpu_seconds`, ~1.5 ms each here)."""
    import statistics
    from collections import defaultdict

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from fracturekit.core.device import cpu_info

    n = 2048
    x, y = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        x @ y
    times = []
    for _ in range(5):
        t = time.perf_counter()
        x @ y
        times.append(time.perf_counter() - t)
    peak = 2 * n**3 / min(times) / 1e9

    walls = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        walls.append(time.perf_counter() - t)
    wall = statistics.median(walls)

    spent: dict[str, float] = defaultdict(float)
    flops = 0.0

    class Timed(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            nonlocal flops
            t = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            spent[func.__name__.split(".")[0]] += time.perf_counter() - t
            if func.__name__.startswith("convolution"):
                flops += conv_flops(func.__name__, args, out)
            return out

    with Timed():  # the step's autograd runs its backward ops through the mode too
        step()
    conv_s = spent["convolution"] + spent["convolution_backward"]
    rate = flops / conv_s / 1e9
    print(cpu_info().line)
    print(f"reference: {n}^3 matrix product in {str(dtype).removeprefix('torch.')}: {peak:.0f} GFLOP/s")
    print(
        f"convolutions of one step: {flops / 1e9:.1f} GFLOP in {conv_s * 1e3:.0f} ms: {rate:.0f} GFLOP/s, "
        f"{rate / peak:.2f} of the reference"
    )
    rest = max(wall - conv_s, 0.0)
    print(f"whole step (median of {steps}, ops untimed): {wall * 1e3:.0f} ms; all but convolutions {rest * 1e3:.0f} ms")
    others = sorted(((s, k) for k, s in spent.items() if not k.startswith("convolution")), reverse=True)[:8]
    print("largest other ops (timed one by one): " + ", ".join(f"{k} {s * 1e3:.1f} ms" for s, k in others))
    print(
        f"an epoch of {batches} such steps: convolutions {conv_s * batches:.2f} s, the rest {rest * batches:.2f} s; "
        f"at the reference's rate the convolutions alone would take {flops / peak / 1e9 * batches:.2f} s"
    )


if __name__ == "__main__":
    main()
