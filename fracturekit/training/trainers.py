"""Ultralytics trainer pieces with fracturekit's X-ray additions (imported by `train` only).

- `XrayClassificationDataset`: Ultralytics' folder dataset plus the albumentations step (CLAHE,
  brightness/contrast, gamma, rotation) on training films, after the random resized crop; Ultralytics
  8.4 applies its `augmentations` argument to detection only.
- `XrayClassificationTrainer`: class-balanced sampling of the training split (`balance`), for any
  number of class folders. Ultralytics' `cls_pw` class weighting exists for detection losses only.
- `release_frozen_layers`: the second phase of `--freeze` (a callback that unfreezes mid-run).
- `cpu_fast`: bf16 autocast and channels_last for CPU training, bf16 autocast in its per-epoch validation
  (Ultralytics applies them on CUDA only).
- `atomic_checkpoints`: last.pt and best.pt replaced whole or not at all (a kill or a full disk mid-write).

This module imports Ultralytics at its top, after `load_ultralytics()` has set the environment; the
classes live at module level so that dataloader workers and DDP can pickle them.
"""

from __future__ import annotations

import contextlib
import math
import os
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from fracturekit.core.yolo_env import load_ultralytics
from fracturekit.training.augment import AlbumentationsStep

load_ultralytics(apply_threads=False)  # train() has applied --threads already

from ultralytics.data import ClassificationDataset  # noqa: E402
from ultralytics.data.build import InfiniteDataLoader, seed_worker  # noqa: E402
from ultralytics.engine.trainer import BaseTrainer  # noqa: E402
from ultralytics.models.yolo.classify import ClassificationTrainer  # noqa: E402
from ultralytics.utils import LOGGER, RANK  # noqa: E402
from ultralytics.utils.torch_utils import unwrap_model  # noqa: E402


class XrayClassificationDataset(ClassificationDataset):
    """Ultralytics' ClassificationDataset with the run's albumentations list run first on training films."""

    def __init__(
        self, root: str, args: Any, augment: bool = False, prefix: str = "", names: dict[int, str] | None = None
    ) -> None:
        super().__init__(root, args, augment=augment, prefix=prefix, names=names)
        specs = getattr(args, "augmentations", None)
        if augment and specs:
            # after the random crop/flips, before ToTensor: runs on imgsz-sized films, not full 1-4k px originals
            steps = self.torch_transforms.transforms
            at = next(i for i, t in enumerate(steps) if type(t).__name__ == "ToTensor")
            steps.insert(at, AlbumentationsStep(specs))


def balanced_sample_weights(labels: Sequence[int]) -> np.ndarray:
    """Per-sample weights 1 / (images of its class): every class is drawn equally often in expectation."""
    labels = np.asarray(labels, dtype=int)
    counts = np.bincount(labels)
    return 1.0 / counts[labels]


class XrayClassificationTrainer(ClassificationTrainer):
    """ClassificationTrainer with X-ray augmentation and, when `balance` is set, a class-balanced sampler."""

    balance: bool = True

    def build_dataset(self, img_path: str, mode: str = "train", batch: Any = None) -> XrayClassificationDataset:
        return XrayClassificationDataset(
            img_path,
            self.args,
            augment=mode == "train",
            prefix="train" if mode == "train" else self.args.split,
            names=self.data["names"],
        )

    def get_dataloader(
        self, dataset_path: str, batch_size: int = 16, rank: int = 0, mode: str = "train"
    ) -> InfiniteDataLoader:
        loader = super().get_dataloader(dataset_path, batch_size, rank, mode)
        if mode != "train" or not self.balance:
            return loader
        dataset = loader.dataset
        weights = balanced_sample_weights([s[1] for s in dataset.samples])
        world = max(self.world_size, 1)
        generator = torch.Generator()
        generator.manual_seed(int(self.args.seed) + max(rank, 0))  # each DDP rank draws its own share
        sampler = torch.utils.data.WeightedRandomSampler(
            torch.as_tensor(weights, dtype=torch.double),
            num_samples=math.ceil(len(weights) / world),
            replacement=True,
            generator=generator,
        )
        return InfiniteDataLoader(
            dataset=dataset,
            batch_size=loader.batch_size,
            sampler=sampler,
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory,
            collate_fn=getattr(dataset, "collate_fn", None),
            worker_init_fn=seed_worker,
            drop_last=loader.drop_last,
            generator=loader.generator,  # Ultralytics' seeded one: worker seeds, hence augmentations, repeat
        )


def release_frozen_layers(after_epochs: int) -> Callable[[BaseTrainer], None]:
    """An `on_train_epoch_start` callback: from epoch `after_epochs` (0-based) on, every layer trains.

    Ultralytics' optimizer holds all parameters (frozen ones just get no gradient), so releasing them
    mid-run needs no new optimizer; batch-norm layers leave eval mode through `freeze_layer_names`.
    """

    def on_train_epoch_start(trainer: BaseTrainer) -> None:
        if trainer.epoch < after_epochs or getattr(trainer, "fk_released", None):
            return
        released = 0
        for name, param in unwrap_model(trainer.model).named_parameters():
            if not param.requires_grad and ".dfl" not in name and param.dtype.is_floating_point:
                param.requires_grad = True
                released += 1
        trainer.freeze_layer_names = [".dfl"]  # Ultralytics' always-frozen layer
        trainer.fk_released = trainer.epoch + 1  # 1-based epoch where phase 2 starts (recorded in run.json)
        if RANK in {-1, 0}:
            LOGGER.info(f"freeze: phase 2 from epoch {trainer.epoch + 1}: {released} tensors released for fine-tuning")

    return on_train_epoch_start


def _to_float(x: Any) -> Any:
    """bf16 tensors (in tuples, lists, dicts) back to float32, so the loss is computed in float32."""
    if isinstance(x, torch.Tensor):
        return x.float() if x.dtype == torch.bfloat16 else x
    if isinstance(x, (list, tuple)):
        return type(x)(_to_float(v) for v in x)
    if isinstance(x, dict):
        return {k: _to_float(v) for k, v in x.items()}
    return x


def _bf16_predict(self: Any, *args: Any, **kwargs: Any) -> Any:
    """The model's own `predict` (its network forward) under CPU bf16 autocast, outputs back in float32."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = type(self).predict(self, *args, **kwargs)
    return _to_float(out)


@contextlib.contextmanager
def _channels_last_while(model: torch.nn.Module) -> Iterator[None]:
    """`model` channels_last inside the block; afterwards its parameters and buffers are the very tensors they were.

    Not `model.to(memory_format=torch.contiguous_format)` afterwards: that makes new tensors, and Ultralytics'
    ModelEMA keeps the EMA model's tensors from its first update (`_pairs`) and updates those in place, so the EMA
    model would stop following the training (its val loss on FracAtlas went 36.2 -> 46.2 after 3 epochs). The block
    must not change the weights (a validation does not)."""
    params = [(p, p.data) for p in model.parameters()]
    buffers = [(m, name, b) for m in model.modules() for name, b in m.named_buffers(recurse=False)]
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for p, data in params:
            p.data = data
        for m, name, b in buffers:
            setattr(m, name, b)


def cpu_fast(trainer_cls: type, bf16: bool, channels_last: bool, val_bf16: bool = False) -> type:
    """`trainer_cls` with bf16 autocast and/or channels_last on the CPU training model, and `val_bf16`: the
    per-epoch validation's forward under the same bf16 autocast.

    Ultralytics runs both on CUDA only (its `autocast` refuses bf16 off CUDA, and it ignores
    `channels_last` on CPU). Hooked after `_setup_train`, on the live training model only: the EMA copy,
    which validation uses and the checkpoints save, was made before, so its weights, the saved checkpoints
    and the final validation of best.pt stay float32 and contiguous. Only the network forward runs in bf16 (an
    instance `predict`, like `export.onnx_friendly`); the loss sees float32 outputs. With `val_bf16` the EMA
    model gets that `predict` for the length of each per-epoch validation only (never while a checkpoint is
    written; Ultralytics on CUDA validates under fp16 autocast in the same way). With `channels_last` the EMA
    model validates channels_last too (`_channels_last_while`), and its own contiguous tensors are back before a
    checkpoint pickles it: a bf16 forward of a batch of 32 images of 320 x 320 random pixels took 8.2 ms an image
    channels_last against 10.5 contiguous (2 cores, 2026-12-04). Numbers: bench/train_speed.py.
    """
    if not (bf16 or channels_last or val_bf16):
        return trainer_cls

    def _setup_train(self: Any) -> None:
        trainer_cls._setup_train(self)
        if self.device.type != "cpu":
            return
        model = unwrap_model(self.model)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        if bf16:
            model.predict = types.MethodType(_bf16_predict, model)
        if RANK in {-1, 0}:
            on = [n for n, v in (("bf16 autocast", bf16), ("channels_last", channels_last)) if v]
            on += ["bf16 autocast in per-epoch validation"] if val_bf16 else []
            LOGGER.info(f"CPU training: {' + '.join(on)} (EMA weights, checkpoints, final validation: float32)")

    def validate(self: Any) -> Any:
        target = unwrap_model(self.ema.ema if self.ema else self.model)
        cpu = self.device.type == "cpu"
        patch = val_bf16 and cpu and "predict" not in vars(target)  # the training model has its own already
        layout = channels_last and cpu and self.ema is not None  # the training model is channels_last already
        if patch:
            target.predict = types.MethodType(_bf16_predict, target)
        try:
            with _channels_last_while(target) if layout else contextlib.nullcontext():
                return trainer_cls.validate(self)
        finally:  # the EMA model is what last.pt/best.pt pickle: no patched method in them
            if patch:
                del target.predict

    return type(trainer_cls.__name__, (trainer_cls,), {"_setup_train": _setup_train, "validate": validate})


def atomic_checkpoints(trainer_cls: type) -> type:
    """`trainer_cls` whose weights/last.pt and best.pt are each replaced whole, or not at all.

    Ultralytics writes them in place (`Path.write_bytes`): a kill or a full disk during the write would leave
    a cut last.pt, which no `--resume` can read, in place of the last good epoch. Here they are written as
    `<name>.partial` and renamed over the old ones (atomic on POSIX); a failed write removes its partial
    file and leaves the previous epoch's checkpoints as they were (a killed one's is removed at the next save).
    """

    def save_model(self: Any) -> Any:
        final = (self.last, self.best)
        partial = tuple(p.with_name(p.name + ".partial") for p in final)
        self.last, self.best = partial
        try:
            saved = trainer_cls.save_model(self)
            # best.pt first: killed between the two renames, last.pt is the older epoch, which --resume redoes
            for tmp, dest in reversed(list(zip(partial, final, strict=True))):
                if tmp.exists():  # best.pt is written only when this epoch is the best so far
                    os.replace(tmp, dest)
        finally:
            self.last, self.best = final
            for tmp in partial:
                tmp.unlink(missing_ok=True)
        return saved

    return type(trainer_cls.__name__, (trainer_cls,), {"save_model": save_model})
