"""predict as a pipeline: films decoded ahead of inference and annotated images drawn and written behind it.

Three stages overlap: decode workers turn the next films into model inputs (`scoring.stream`'s bounded
decode-ahead: a few batches in flight, so memory stays bounded), the calling thread runs the models, and
writer workers draw and encode the annotated images and heatmaps of the films already scored (at most
`WRITE_AHEAD` films queued; a full queue makes the calling thread wait). Both worker pools get the cores the
backend leaves free (`spare_cores`), one at least. Results come back in film order; a film whose decode
fails gets the reason as its error, as before (`preprocess.load_item`).

Large JPEGs are decoded at reduced size (`imageio.read_image`'s `min_side`: libjpeg's DCT scaling to 1/2,
1/4 or 1/8, the short side kept >= the largest model imgsz, so the model input is still a downscale) unless
`full_size`; boxes and sizes are mapped back to the film's own pixels, annotated images are drawn on the
reduced film.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from fracturekit.core.yolo_env import cpu_threads
from fracturekit.data.imageio import MAX_PIXELS
from fracturekit.infer.model import Model
from fracturekit.infer.scoring import Prediction, Scorer, stream

WRITE_AHEAD = 16  # films whose images may wait for a writer: bounds the pixels held (16 reduced films, a few MB)


def spare_cores(models: Sequence[Model | None], threads: int | None) -> int:
    """Worker threads for each of decoding and writing: the cores the backend does not take, at least 1.

    A model on the CPU runs on `cpu_threads(threads)` threads (every backend is loaded with that many); one on
    a GPU takes the one core that feeds it. The models run one after the other, so the larger count is taken.
    """
    taken = max((cpu_threads(threads) if m.device == "cpu" else 1 for m in models if m is not None), default=0)
    return max(1, cpu_threads() - taken)


def min_side(models: Sequence[Model | None], full_size: bool) -> int | None:
    """The short side a reduced JPEG decode must keep: the largest model imgsz (None with `full_size`).

    The classifier resizes the short side to its imgsz and the detector the long side to its own, so a film
    whose short side stays >= the larger imgsz is still downscaled, never enlarged, into every model's input.
    """
    sizes = [m.imgsz for m in models if m is not None]
    return None if full_size or not sizes else max(sizes)


class Pipeline:
    """Decode and write workers around one predict run; use it as a context manager."""

    def __init__(self, models: Sequence[Model | None], threads: int | None, full_size: bool = False) -> None:
        self.workers = spare_cores(models, threads)
        self.min_side = min_side(models, full_size)
        self.decoders = ThreadPoolExecutor(self.workers, thread_name_prefix="fracturekit-decode")
        self.writers = ThreadPoolExecutor(self.workers, thread_name_prefix="fracturekit-write")
        self._room = threading.BoundedSemaphore(WRITE_AHEAD)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """Queued decodes are dropped (predict is over, or stopped); writes already queued finish."""
        self.decoders.shutdown(wait=True, cancel_futures=True)
        self.writers.shutdown(wait=True)

    def stream(
        self,
        scorer: Scorer,
        paths: list[Path],
        batch: int,
        todo: list[int] | None = None,
        threads: int | None = None,
        max_pixels: int | None = MAX_PIXELS,
    ) -> Iterator[list[Prediction]]:
        """`scoring.stream` on the decode workers, with reduced JPEG decode unless `full_size`."""
        return stream(scorer, paths, self.decoders, batch, todo, threads, max_pixels, self.min_side)

    def write(self, job: Callable[[], None]) -> Future[None]:
        """Run `job` (draw and write one image) on a writer; waits while WRITE_AHEAD films' images are queued."""
        self._room.acquire()
        try:
            future = self.writers.submit(job)
        except BaseException:
            self._room.release()
            raise
        future.add_done_callback(lambda _: self._room.release())
        return future
