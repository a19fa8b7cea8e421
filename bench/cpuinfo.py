"""One line naming this machine's CPU and the flags that decide which kernels run: printed by every bench; and the
CPU seconds a bench spent, its ended worker processes included."""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path

FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_line() -> str:
    """'cpu: AMD EPYC | 2 cores | avx2 avx512_vnni ...' from /proc/cpuinfo (platform.processor() elsewhere)."""
    model, flags = platform.processor() or platform.machine(), set()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    have = [f for f in FLAGS if f in flags]
    return f"cpu: {model} | {cores} cores | flags: {' '.join(have) or 'none of ' + ' '.join(FLAGS)}"


def cpu_s() -> float:
    """CPU seconds of this process (all threads) and of its ended children (the copy search's worker processes)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime
