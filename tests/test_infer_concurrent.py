"""Scorer calls at once (OpenVINO: one film per stream, each from its own thread): the request pool, how many
calls run at once, and `scoring.stream` keeping film order and surfacing a call's error."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import cv2
import pytest

from fracturekit.data.phantoms import generate_phantom
from fracturekit.infer.backends import BACKEND_MAP
from fracturekit.infer.backends.openvino_cpu import Requests
from fracturekit.infer.model import Model
from fracturekit.infer.preprocess import Item
from fracturekit.infer.scoring import Prediction, calls_at_once, stream


def _model(backend: str, streams: int = 1) -> SimpleNamespace:
    """A loaded model as `calls_at_once` and `load_item` read it: its backend's `calls`, a fixed 64x64 input."""
    m = SimpleNamespace(net=Requests(list(range(streams))), fixed_batch=None, fixed_shape=(64, 64), imgsz=64, stride=32)
    m.threads = streams  # ONNX Runtime on CPU: the cores it was loaded with
    m.calls = lambda batch: BACKEND_MAP[backend].calls(m, batch)
    return m


@pytest.mark.parametrize(
    ("models", "batch", "want"),
    [
        ((("openvino", 2),), 1, 2),  # OpenVINO, 2 streams, its default batch 1: a call per stream
        ((("openvino", 2),), 2, 1),  # --batch 2: one call fills both streams
        ((("openvino", 4),), 3, 1),  # a batch that does not divide the streams: never more films than streams
        ((("onnx", 2),), 1, 2),  # ONNX Runtime on 2 cores: two single-thread calls
        ((("onnx", 2),), 8, 2),  # the same with --batch 8: each call on one core
        ((("onnx", 1),), 1, 1),  # ONNX Runtime with --threads 1: one call at a time
        ((("onnx-gpu", 8),), 1, 1),  # ONNX Runtime on a GPU: one thread feeds it
        ((("torch", 1),), 8, 1),  # PyTorch: one call at a time, as before
        ((("openvino", 2), ("torch", 1)), 1, 2),  # with a PyTorch model: two calls, its own forward one at a time
        ((), 1, 1),  # no model (never called so, but not zero)
    ],
)
def test_calls_at_once(models: tuple[tuple[str, int], ...], batch: int, want: int) -> None:
    assert calls_at_once([_model(*m) for m in models] + [None], batch) == want  # type: ignore[list-item]


def test_request_pool_lends_all_at_once() -> None:
    """Two threads each get one of two requests at the same time; a call wanting both waits for both."""
    pool = Requests(["a", "b"])
    both_in = threading.Barrier(2, timeout=5)  # breaks (an error) unless both threads hold a request at once

    def one() -> list[str]:
        with pool.take(1) as got:
            both_in.wait()
            return got

    with ThreadPoolExecutor(2) as ex:
        lent = [f.result() for f in [ex.submit(one), ex.submit(one)]]
    assert sorted(r for got in lent for r in got) == ["a", "b"]
    with pool.take(5) as got:  # more than there are: all of them
        assert sorted(got) == ["a", "b"]
        waiter = threading.Thread(target=lambda: pool.take(1).__enter__())
        waiter.start()
        waiter.join(0.2)
        assert waiter.is_alive()  # none free while this call holds both
    waiter.join(5)
    assert not waiter.is_alive()  # given back: the waiting thread got one


class _SlowScorer:
    """A scorer whose calls take random times, counting how many run at once."""

    def __init__(self, streams: int, fail_at: int | None = None) -> None:
        self.det, self.clf = _model("openvino", streams), None
        self.running = self.most = 0
        self.lock = threading.Lock()
        self.rng = random.Random(0)
        self.fail_at = fail_at

    def __call__(self, items: list[Item]) -> list[Prediction]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            pause = self.rng.uniform(0, 0.03)
        time.sleep(pause)
        with self.lock:
            self.running -= 1
        if items[0].index == self.fail_at:
            raise RuntimeError("model call failed")
        return [Prediction(it.index, it.path) for it in items]


def _films(folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"f{i:02d}.png"), generate_phantom(5, i, size=64).image)
    return sorted(folder.iterdir())


def test_stream_runs_calls_at_once_in_film_order(tmp_path: Path) -> None:
    paths = _films(tmp_path / "films", 16)
    scorer = _SlowScorer(streams=2)
    with ThreadPoolExecutor(2) as pool:
        got = [p.index for preds in stream(scorer, paths, pool, 1) for p in preds]  # type: ignore[arg-type]
    assert got == list(range(16))  # every film once, in order, whichever call ended first
    assert 2 <= scorer.most <= 3  # calls at once: two running, at most one more ready with its input


def test_stream_call_error_surfaces(tmp_path: Path) -> None:
    """A failed model call raises from the stream, as a serial call did (it is not a film's decode error)."""
    paths = _films(tmp_path / "films", 8)
    with ThreadPoolExecutor(2) as pool, pytest.raises(RuntimeError, match="model call failed"):
        for _ in stream(_SlowScorer(streams=2, fail_at=5), paths, pool, 1):  # type: ignore[arg-type]
            pass


@pytest.mark.parametrize(
    ("backend", "threads", "most"),
    [
        ("torch", 2, 1),  # PyTorch uses every thread in one call: its calls wait for each other
        ("onnx", 2, 2),  # ONNX Runtime on CPU: one single-thread call per core at once
        ("onnx", 1, 1),  # --threads 1: one
    ],
)
def test_model_forward_lets_its_backends_calls_at_once(
    monkeypatch: pytest.MonkeyPatch, backend: str, threads: int, most: int
) -> None:
    """Four threads call one model's forward: no more run at once than its backend allows."""
    runner = BACKEND_MAP[backend]
    running, seen, lock = [0], [0], threading.Lock()

    def forward(cls: type, model: object, x: object) -> object:
        with lock:
            running[0] += 1
            seen[0] = max(seen[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return x

    monkeypatch.setattr(runner, "forward", classmethod(forward))
    model = Model("detect", backend, Path("w"), {0: "fracture"}, 64, 32, None, None, None, None, threads=threads)
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(model.forward, range(4)))
    assert seen[0] == most
