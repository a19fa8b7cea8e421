"""Temperature scaling and ECE on synthetic scores with a known calibration."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from fracturekit.evaluation.calibration import apply_temperature, expected_calibration_error, fit_temperature


def _calibrated_logits(n: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is exactly calibrated: labels are drawn from the softmax itself."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, n_classes))
    p = softmax(logits, axis=1)
    labels = np.array([rng.choice(n_classes, p=row) for row in p])
    return logits, labels


@pytest.mark.parametrize(
    ("n_classes", "scale"),
    [
        (2, 4.0),  # binary, logits 4x too sharp (over-confident)
        (3, 3.0),  # three classes, 3x too sharp
        (2, 0.4),  # binary, under-confident: T < 1 should sharpen
    ],
)
def test_temperature_recovers_scale_and_lowers_ece(n_classes: int, scale: float) -> None:
    logits, labels = _calibrated_logits(4000, n_classes, seed=n_classes)
    distorted = logits * scale
    t = fit_temperature(distorted, labels)
    assert t == pytest.approx(scale, rel=0.15)
    p = softmax(distorted, axis=1)
    before = expected_calibration_error(p, labels)
    after = expected_calibration_error(apply_temperature(p, t), labels)
    assert after < before / 2
    assert after < 0.03


def test_temperature_keeps_ranking_and_accepts_binary_vector() -> None:
    # T changes confidence, never the order of images (AUROC must not move).
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, 200)
    scaled = apply_temperature(p, 2.5)
    assert scaled.shape == p.shape
    assert np.array_equal(np.argsort(p), np.argsort(scaled))
    assert np.allclose(apply_temperature(p, 1.0), p)


@pytest.mark.parametrize(
    ("probs", "labels", "expected"),
    [
        ([[0.0, 1.0], [1.0, 0.0]], [1, 0], 0.0),  # confident and right: no gap
        ([[0.0, 1.0], [1.0, 0.0]], [0, 1], 1.0),  # confident and wrong: gap 1
        ([[0.2, 0.8], [0.2, 0.8], [0.2, 0.8], [0.2, 0.8], [0.2, 0.8]], [1, 1, 1, 1, 0], 0.0),  # 80% at 0.8
        ([[0.4, 0.6], [0.4, 0.6]], [0, 0], 0.6),  # top-label 0.6, accuracy 0
    ],
)
def test_ece_known_values(probs: list[list[float]], labels: list[int], expected: float) -> None:
    assert expected_calibration_error(np.array(probs), np.array(labels)) == pytest.approx(expected, abs=1e-9)


def test_fit_temperature_degenerate_is_identity() -> None:
    # One class only: nothing to fit, keep the model's scores.
    assert fit_temperature(np.zeros((5, 2)), np.ones(5, int)) == 1.0
