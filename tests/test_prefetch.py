"""fracturekit.training.prefetch: the next batch made in a background thread is exactly the serial loader's batch."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from fracturekit.core.yolo_env import load_ultralytics

load_ultralytics()


def _augmenting_loader(prepared: Path) -> Any:
    """Ultralytics' training loader (mosaic, affine, flips, HSV) on the phantoms' det train split, seed 0, workers 0."""
    import yaml
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_dataloader, build_yolo_dataset
    from ultralytics.utils.torch_utils import init_seeds

    data = yaml.safe_load((prepared / "det" / "data.yaml").read_text())
    data["nc"] = len(data["names"])
    cfg = get_cfg(overrides={"imgsz": 64, "degrees": 5.0, "scale": 0.3, "fliplr": 0.5, "mosaic": 1.0, "cache": False})
    init_seeds(0)
    dataset = build_yolo_dataset(cfg, str(prepared / "det" / data["train"]), batch=8, data=data, mode="train")
    return build_dataloader(dataset, batch=8, workers=0, shuffle=True, device="cpu")


def _epochs(loader: Any, n: int = 2) -> list[dict[str, torch.Tensor]]:
    batches = []
    for _ in range(n):
        for batch in loader:
            batches.append({k: batch[k].clone() for k in ("img", "bboxes", "cls", "batch_idx")})
            torch.randn(64, 64) @ torch.randn(64, 64)  # the training thread's own work meanwhile
    return batches


def test_prefetched_batches_are_the_serial_ones(prepared_phantoms: Path) -> None:
    from fracturekit.training.prefetch import Prefetched

    serial = _epochs(_augmenting_loader(prepared_phantoms))
    fetched = Prefetched(_augmenting_loader(prepared_phantoms))
    ahead = _epochs(fetched)
    assert len(ahead) == len(serial) == 2 * len(fetched) > 2
    for a, b in zip(serial, ahead, strict=True):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    assert not torch.equal(serial[0]["img"], serial[len(fetched)]["img"])  # epochs differ: the check can fail
    assert fetched.batches == len(ahead) and fetched.load_cpu_s > 0
    assert fetched.dataset is fetched.loader.dataset  # the loader's own attributes show through


class _Loader:
    """A stand-in loader of `n` batches that raises at batch `fail` (None: never)."""

    def __init__(self, n: int, fail: int | None = None) -> None:
        self.n, self.fail, self.made = n, fail, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Any:
        for i in range(self.n):
            if i == self.fail:
                raise OSError(f"cannot read film {i}")
            self.made += 1
            yield i


def test_a_loading_error_reaches_the_training_thread_and_an_early_stop_ends_the_thread() -> None:
    import threading

    from fracturekit.training.prefetch import Prefetched

    with pytest.raises(OSError, match="cannot read film 2"):
        list(Prefetched(_Loader(5, fail=2)))
    fetched = Prefetched(_Loader(50))
    it = iter(fetched)
    assert [next(it), next(it)] == [0, 1]
    it.close()  # what a `break` (Ultralytics' OOM retry, a stop) does to the epoch's iterator
    assert fetched.loader.made <= 2 + fetched.depth + 1  # one ahead, not the rest of the epoch
    assert not any(t.name == "fracturekit-prefetch" for t in threading.enumerate())


@pytest.mark.slow  # two trainings: ~30 s on the shared 2-core machine
def test_training_losses_equal_with_and_without_prefetch(prepared_phantoms: Path, tmp_path: Path) -> None:
    """A detect training's losses, the same seed, prefetch on and off: the batches were the same, and the training
    thread drew no random numbers between them (two epochs of batches: test_prefetched_batches_are_the_serial_ones).
    Both with the CPU default cache='ram', so this also shows that the cache repeats a seed's batches (Ultralytics
    warns that it may not, with `deterministic`: its worker processes; on CPU it has none)."""
    from fracturekit.train import train

    losses, pipelines = [], []
    for prefetch in (False, True):
        run = train(
            task="detect",
            data=prepared_phantoms,
            project=str(tmp_path),
            name=f"prefetch-{prefetch}",
            epochs=1,
            imgsz=64,
            batch=8,
            device="cpu",
            plots=False,
            prefetch=prefetch,
        ).root
        with (run / "results.csv").open() as f:
            losses.append([[row[k] for k in row if k.strip().startswith("train/")] for row in csv.DictReader(f)])
        pipelines.append(json.loads((run / "run.json").read_text())["pipeline"])
    assert losses[0] == losses[1]
    assert pipelines[0]["cpu_prefetch"] is False
    assert pipelines[0]["cache"] == pipelines[1]["cache"] == "ram" and pipelines[1]["cpu_cache_ram_default"] is True
    counts = pipelines[1]["cpu_prefetch"]
    assert counts["batches"] == 5 and counts["load_cpu_s"] > 0  # 36 train films / batch 8 = 5 batches


@pytest.mark.parametrize(
    ("task", "kind", "overrides", "cache_ram", "prefetch"),
    [
        ("detect", "cpu", {}, True, False),  # the CPU defaults: cache='ram' (if it fits), no prefetch thread
        ("detect", "cpu", {"cache": False}, False, False),  # cache switched off alone
        ("detect", "cpu", {"cache": "disk"}, False, False),  # the user's own cache choice stands
        ("detect", "cpu", {"prefetch": True}, True, True),  # prefetch asked for (slower on 2 cores: README)
        ("detect", "cpu", {"prefetch": False}, True, False),  # prefetch refused explicitly: as the default
        ("detect", "cpu", {"reproducible": True}, False, False),  # --deterministic: no cache (a seed's mosaic partners)
        ("detect", "cpu", {"reproducible": True, "prefetch": True}, False, True),  # prefetch keeps the serial batches
        ("detect", "cuda", {}, False, False),  # on a GPU Ultralytics' workers load: nothing changes
        ("classify", "cpu", {}, False, False),  # classification: neither (Ultralytics refuses its RAM cache)
    ],
)
def test_cpu_loading_choices(task: str, kind: str, overrides: dict[str, Any], cache_ram: bool, prefetch: bool) -> None:
    from types import SimpleNamespace

    from fracturekit.train import _cpu_cache_ram, _cpu_prefetch
    from fracturekit.training.config import resolve_config

    cfg = resolve_config(task, None, overrides)
    device = SimpleNamespace(kind=kind)
    assert (_cpu_cache_ram(cfg, device, task), _cpu_prefetch(cfg, device, task)) == (cache_ram, prefetch)


def test_prefetch_must_be_a_boolean() -> None:
    from fracturekit.core.errors import UserError
    from fracturekit.training.config import resolve_config

    with pytest.raises(UserError, match="prefetch='yes' must be true, false or null"):
        resolve_config("detect", None, {"prefetch": "yes"})
