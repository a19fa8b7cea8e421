"""The copy search's pair checks (`fracturekit.data.copies.verify_both_ways`) in worker processes.

A check is ~0.5 ms of small numpy and OpenCV calls, about half of it holding the GIL (a one-thread profile of
6,000 FracAtlas checks: OpenCV's RANSAC, blurs and warps and the BLAS product, which release it, were ~45% of the
time). Idle on 2 cores, FracAtlas's 36,580 checks took 19.5 s of wall (29.9 s CPU) on the audit's two threads and
9.8 s (21.6 s CPU, workers included) in two worker processes (bench/audit_cost.py, same cached items, `--checks
threads` for the first). The workers read the signatures from a store of a few .npy files in a temporary folder
inside the caller's output folder, memory-mapped read-only: written once with plain file writes (no copy in this
process's RSS), shared by the workers through the page cache, never pickled per task.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
from joblib.externals.loky import ProcessPoolExecutor, process_executor
from threadpoolctl import threadpool_limits

from fracturekit.core.allocator import retain_freed_memory
from fracturekit.data.copies import Match, Signature, verify_both_ways

# Rows per task: ~0.1 s of work each on FracAtlas, so the pickled rows and results (bytes) cost nothing beside it.
TASK_ROWS = 256
_FIELDS = ("descriptors", "points", "counts", "thumbs", "thumb_shapes", "widths")
_sigs: list[Signature] = []  # a worker's signatures, views into the memory-mapped store


def write_store(sigs: Sequence[Signature], folder: Path) -> None:
    """Pack `sigs` into .npy files in `folder` (read back by `read_store`).

    The large arrays are filled film by film into files opened as memory maps, not concatenated first: a
    concatenation held a second copy of every descriptor, point and thumbnail (the store's size: 124 MB on
    FracAtlas) at the audit's peak.
    """
    small = {
        "counts": np.array([len(s.points) for s in sigs], np.int64),
        "thumb_shapes": np.array([s.thumb.shape for s in sigs], np.int64).reshape(-1, 2),
        "widths": np.array([s.width for s in sigs], np.int64),
    }
    for name, a in small.items():
        np.save(folder / f"{name}.npy", a)
    n, n_thumb = int(small["counts"].sum()), int(small["thumb_shapes"].prod(axis=1).sum())
    for name, shape, dtype, part in (
        ("descriptors", (n, 128), np.uint8, lambda s: s.descriptors),
        ("points", (n, 2), np.float32, lambda s: s.points),
        ("thumbs", (n_thumb,), np.uint8, lambda s: s.thumb.ravel()),
    ):
        out = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)
        at = 0
        for s in sigs:
            x = part(s)
            out[at : at + len(x)] = x
            at += len(x)
        out.flush()
        del out


def read_store(folder: Path) -> list[Signature]:
    """The signatures of a `write_store` folder, as read-only views of its memory-mapped files."""
    a = {name: np.asarray(np.load(folder / f"{name}.npy", mmap_mode="r")) for name in _FIELDS}
    ends = np.cumsum(a["counts"]).tolist()
    thumb_ends = np.cumsum(a["thumb_shapes"].prod(axis=1)).tolist()
    sigs = []
    for k, (end, t_end) in enumerate(zip(ends, thumb_ends, strict=True)):
        start, t_start = end - int(a["counts"][k]), t_end - int(a["thumb_shapes"][k].prod())
        h, w = a["thumb_shapes"][k].tolist()
        thumb = a["thumbs"][t_start:t_end].reshape(h, w)
        sigs.append(Signature(a["points"][start:end], a["descriptors"][start:end], int(a["widths"][k]), thumb))
    return sigs


def _start(folder: str) -> None:
    """Worker start-up: the store, and one thread for OpenCV and BLAS (the workers are the parallelism)."""
    global _sigs
    retain_freed_memory()  # a fresh process: the checks' temporaries would be faulted in again and again
    _sigs = read_store(Path(folder))
    # loky restarts a worker whose RSS grew 300 MB past its size after the first task, as a leak; the pages of the
    # store it maps and reads count in that RSS (10,083 films: a worker restarted mid-search, with a warning), so
    # the allowance is the store's size on top
    store = sum(f.stat().st_size for f in Path(folder).glob("*.npy"))
    process_executor._MAX_MEMORY_LEAK_SIZE = int(3e8) + store
    cv2.setNumThreads(1)
    threadpool_limits(1, user_api="blas")


def _ready() -> None:
    """A task that makes the pool start a worker now (its imports overlap the caller's candidate search)."""


def _check(rows: list[tuple[int, int, int]]) -> list[tuple[int, float]]:
    return [(m.inliers, m.correlation) for m in (verify_both_ways(_sigs[a], _sigs[b], bool(f)) for a, b, f in rows)]


@contextmanager
def process_checks(
    sigs: Sequence[Signature], workers: int, scratch: Path
) -> Iterator[Callable[[list[tuple[int, int, int]]], list[Match]]]:
    """A function that checks rows (i, j, mirrored) of `sigs` in `workers` processes, results in order.

    The store is a hidden temporary folder in `scratch` (a folder of the caller's output: nothing is written
    elsewhere). The workers start here, in the background, and end on exit, with the store's folder. They are loky's
    (joblib's process pool, a dependency of scikit-learn): started fresh, not forked (a fork would inherit OpenCV's
    and OpenBLAS's thread pools in a broken state), and unlike multiprocessing's spawn they do not run the
    caller's main script again (a script that audits at top level, with no `if __name__ == "__main__"`).
    """
    with tempfile.TemporaryDirectory(prefix=".signatures-", dir=scratch) as tmp:
        write_store(sigs, Path(tmp))
        with ProcessPoolExecutor(workers, initializer=_start, initargs=(tmp,)) as pool:
            for _ in range(workers):
                pool.submit(_ready)

            def check(rows: list[tuple[int, int, int]]) -> list[Match]:
                tasks = [rows[s : s + TASK_ROWS] for s in range(0, len(rows), TASK_ROWS)]
                return [Match(n, c) for part in pool.map(_check, tasks) for n, c in part]

            yield check
