"""fracturekit.infer.cam: EigenCAM maps peak where the dominant feature pattern is, scaled to 0..1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fracturekit.infer.cam import eigen_map


@pytest.mark.parametrize(
    ("spot", "low"),
    [
        ((2, 3), 1.0),  # a blob strong in every channel
        ((5, 1), -1.0),  # some channels negative there: the sign must follow the mean activation, not the SVD
        ((0, 7), 1.0),  # a blob in the corner
    ],
)
def test_eigen_map_peaks_at_pattern(spot: tuple[int, int], low: float) -> None:
    g = torch.Generator().manual_seed(0)
    acts = 0.05 * torch.randn(2, 16, 8, 8, generator=g)
    acts[:, :, spot[0], spot[1]] += 3 * torch.linspace(low, 2, 16)
    cam = eigen_map(acts)
    assert cam.shape == (2, 8, 8)
    assert float(cam.min()) >= 0.0 and float(cam.amax()) == pytest.approx(1.0)
    for b in range(2):
        assert np.unravel_index(int(cam[b].argmax()), (8, 8)) == spot


def test_eigen_map_constant_input_is_finite() -> None:
    cam = eigen_map(torch.ones(1, 4, 5, 5))  # no variance at all: no NaN, all zeros
    assert torch.isfinite(cam).all() and float(cam.abs().max()) == 0.0
