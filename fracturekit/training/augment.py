"""X-ray intensity augmentation with albumentations: CLAHE, brightness/contrast, gamma (and rotation for classify).

Detection passes the list to Ultralytics' `augmentations` train argument (its Albumentations step runs
custom transforms on every mosaic/affine output and stores them in the checkpoint). Classification has
no such hook in Ultralytics 8.4 (`ClassificationDataset` only uses torchvision transforms), so
`AlbumentationsStep` runs the same list inside the torchvision pipeline (after the random crop).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would otherwise check PyPI on import


def xray_transforms(settings: Mapping[str, Any], task: str) -> list[Any]:
    """The albumentations transforms a config asks for (those with probability > 0).

    `degrees` becomes a rotation here for classify only: detection rotates (and re-fits boxes) in
    Ultralytics' own affine step.
    """
    import albumentations as A

    out: list[Any] = []
    if settings.get("aug_clahe", 0) > 0:
        out.append(A.CLAHE(clip_limit=(1.0, 3.0), tile_grid_size=(8, 8), p=float(settings["aug_clahe"])))
    if settings.get("aug_brightness_contrast", 0) > 0:
        out.append(
            A.RandomBrightnessContrast(
                brightness_limit=0.2, contrast_limit=0.2, p=float(settings["aug_brightness_contrast"])
            )
        )
    if settings.get("aug_gamma", 0) > 0:
        out.append(A.RandomGamma(gamma_limit=(80, 120), p=float(settings["aug_gamma"])))
    degrees = float(settings.get("degrees") or 0)
    if task == "classify" and degrees > 0:
        out.append(A.Affine(rotate=(-degrees, degrees), border_mode=0, p=0.5))
    return out


class AlbumentationsStep:
    """A torchvision-style step: PIL image in, PIL image out, through an albumentations Compose.

    Built from `A.to_dict` dicts (what Ultralytics stores in the run args) so it pickles for
    dataloader workers and DDP.
    """

    def __init__(self, transforms: list[Any]) -> None:
        import albumentations as A

        self.specs = [t if isinstance(t, dict) else A.to_dict(t) for t in transforms]
        self.compose = A.Compose([A.from_dict(s) for s in self.specs])

    def __call__(self, image: Any) -> Any:
        import torch
        from PIL import Image

        # albumentations 2 draws from its own RNG, seeded from OS entropy unless told: seed it from this
        # process's torch seed (set from `seed` by Ultralytics, distinct per dataloader worker) as
        # Ultralytics' own Albumentations step does, so the same seed repeats the same augmentations.
        if self.compose.seed != torch.initial_seed():
            self.compose.set_random_seed(torch.initial_seed())
        return Image.fromarray(self.compose(image=np.asarray(image))["image"])

    def __repr__(self) -> str:
        return f"AlbumentationsStep({', '.join(describe(t) for t in self.compose.transforms)})"


def describe(transform: Any) -> str:
    """`CLAHE(p=0.2)`: name and probability, what a run record needs to show the step ran."""
    return f"{type(transform).__name__}(p={transform.p:g})"
