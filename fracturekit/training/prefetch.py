"""Make the next training batch in a background thread while the model trains on this one (CPU detect training).

Ultralytics sets dataloader workers to 0 on CPU, so each batch's decode, mosaic, affine warp and albumentations run
in the training thread, between two steps (about 1 s of CPU per epoch of 200 FracAtlas films at imgsz 320,
bench/train_profile.py). `Prefetched` runs the same loader, unchanged, one batch ahead in one thread: the same code
draws from the same global RNGs (`random`, `numpy.random`, torch's sampler generator) in the same order, so a seed
gives exactly the batches of the serial loader, provided the training thread draws from none of them itself (an
Ultralytics detection step does not; tests/test_prefetch.py compares the batches and a training's losses). cv2,
numpy and torch release the GIL in their kernels, so the loading overlaps the forward and backward passes.

Why a thread and not one more dataloader worker process: a worker seeds its own RNGs (`seed_worker`), so the batches
would differ from Ultralytics' serial ones, and it would pickle each batch across a pipe and hold a second copy of
the dataset's image buffer.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("fracturekit")

_END = object()  # the producer's last item: the epoch's batches are all made


class Prefetched:
    """`loader` (an Ultralytics InfiniteDataLoader) iterated `depth` batches ahead in a background thread.

    Every other attribute (dataset, sampler, reset, close, num_workers, ...) is the loader's own. Counts, summed
    over the epochs: `batches` handed out; `first_wait_s`, wall seconds the training thread waited for each epoch's
    first batch (nothing runs beside it); `wait_s`, wall seconds it waited for every later batch (near 0 when the
    loading is hidden behind the step); `load_cpu_s`, CPU seconds of the loading thread.
    """

    def __init__(self, loader: Any, depth: int = 1) -> None:
        self.loader = loader
        self.depth = depth
        self.batches = 0
        self.first_wait_s = 0.0
        self.wait_s = 0.0
        self.load_cpu_s = 0.0

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (unpickling, copy): no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        items: queue.Queue[Any] = queue.Queue(maxsize=self.depth)
        stop = threading.Event()

        def put(item: Any) -> bool:
            while not stop.is_set():  # a consumer that left early (OOM retry, stop) never takes it: give up then
                try:
                    items.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            start = time.thread_time()
            try:
                for batch in self.loader:
                    if not put(batch):
                        return
                put(_END)
            except BaseException as exc:  # raised in the training thread, where a serial loader would raise it
                put(exc)
            finally:
                self.load_cpu_s += time.thread_time() - start

        thread = threading.Thread(target=produce, name="fracturekit-prefetch", daemon=True)
        thread.start()
        try:
            first = True
            while True:
                t0 = time.perf_counter()
                item = items.get()
                waited = time.perf_counter() - t0
                if first:
                    self.first_wait_s += waited
                    first = False
                else:
                    self.wait_s += waited
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                self.batches += 1
                yield item
        finally:
            stop.set()
            thread.join()

    def counts(self) -> dict[str, Any]:
        """run.json's record of the prefetch: batches, training-thread wait and loading CPU seconds."""
        return {
            "depth": self.depth,
            "batches": self.batches,
            "first_wait_s": round(self.first_wait_s, 3),
            "wait_s": round(self.wait_s, 3),
            "load_cpu_s": round(self.load_cpu_s, 3),
        }


def prefetching(trainer_cls: type, depth: int = 1) -> type:
    """`trainer_cls` whose training loader, on a CPU, makes its next `depth` batch(es) in a background thread.

    Only the training loader: validation draws no random numbers but its films are few (4 batches of the
    bench's 60 films), and it runs once an epoch. On other devices Ultralytics' worker processes do the loading.
    """

    def get_dataloader(self: Any, dataset_path: str, batch_size: int = 16, rank: int = 0, mode: str = "train") -> Any:
        loader = trainer_cls.get_dataloader(self, dataset_path, batch_size, rank, mode)
        if mode != "train" or self.device.type != "cpu" or loader.num_workers:
            return loader
        return Prefetched(loader, depth)

    return type(trainer_cls.__name__, (trainer_cls,), {"get_dataloader": get_dataloader})


def prefetch_counts(trainer: Any) -> dict[str, Any] | None:
    """The counts of `trainer`'s prefetching training loader, or None where it has none."""
    loader = getattr(trainer, "train_loader", None)
    return loader.counts() if isinstance(loader, Prefetched) else None
