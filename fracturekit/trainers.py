"""Ultralytics trainer pieces with fracturekit's X-ray additions (imported by `train` only).

- `XrayClassificationDataset`: Ultralytics' folder dataset plus the albumentations step (CLAHE,
  brightness/contrast, gamma, rotation) on training films, after the random resized crop; Ultralytics
  8.4 applies its `augmentations` argument to detection only.
- `XrayClassificationTrainer`: class-balanced sampling of the training split (`balance`), for any
  number of class folders. Ultralytics' `cls_pw` class weighting exists for detection losses only.
- `release_frozen_layers`: the second phase of `--freeze` (a callback that unfreezes mid-run).

This module imports Ultralytics at its top, after `load_ultralytics()` has set the environment; the
classes live at module level so that dataloader workers and DDP can pickle them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from fracturekit.augment import AlbumentationsStep
from fracturekit.yolo_env import load_ultralytics

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
