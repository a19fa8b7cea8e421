"""`parallel_map`: the one thread-pool map of the package (audit, prepare, the copy search, seen films)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

from fracturekit.core.progress import Progress
from fracturekit.core.yolo_env import cpu_threads

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(
    fn: Callable[[T], R], items: Sequence[T], progress: Progress | None = None, label: str = ""
) -> list[R]:
    """`[fn(x) for x in items]` on a thread pool, in order; `progress(label, done, total)` after each item.

    One thread per CPU this process may use (`cpu_threads`): OpenCV, zlib, scipy's sparse products and numpy's
    large array operations release the GIL.
    """
    results: list[R | None] = [None] * len(items)
    with ThreadPoolExecutor(cpu_threads()) as pool:
        futures = {pool.submit(fn, item): k for k, item in enumerate(items)}
        for n, fut in enumerate(as_completed(futures), 1):
            results[futures[fut]] = fut.result()
            if progress is not None:
                progress(label, n, len(items))
    return results  # type: ignore[return-value]
