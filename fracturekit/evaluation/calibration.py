"""Probability calibration: temperature scaling (Guo et al. 2017) and expected calibration error.

A network trained with cross-entropy is usually over-confident: a 0.95 score is right less than 95% of
the time. Temperature scaling divides the log-probabilities by one scalar T (> 1 softens, < 1 sharpens)
fitted on the validation split; it never changes the ranking of images, so AUROC is unchanged, only
the meaning of the score.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

_EPS = 1e-12
# Search range for T: wide enough for any real model; bounded so a degenerate set cannot send it to 0 or inf.
# A fitted T at either end means one scalar could not calibrate the scores (evaluate warns).
TEMPERATURE_BOUNDS = (0.05, 20.0)
_LOG_T_BOUNDS = (np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1]))


def _as_2d(probs: np.ndarray) -> np.ndarray:
    """(N,) positive-class probabilities become (N, 2) [negative, positive]; (N, C) passes through."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2:
        raise ValueError(f"expected (N, C) probabilities, got shape {p.shape}")
    return p


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rescale (N, C) class probabilities by temperature T: softmax(log(probs) / T), same shape back.

    A (N,) array is read as binary positive-class probabilities and a (N,) array is returned.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    flat = np.asarray(probs).ndim == 1
    out = softmax(np.log(np.clip(_as_2d(probs), _EPS, 1.0)) / temperature, axis=1)
    return out[:, 1] if flat else out


def _nll(scores: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    logp = log_softmax(scores / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits_or_logprobs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of `labels` on these (validation) scores.

    Input: (N, C) logits or log-probabilities (softmax is invariant to a per-row shift, so both give the
    same T), or (N,) positive-class probabilities for a binary model. Optimizer: scipy's bounded Brent
    search (`minimize_scalar(method="bounded")`) over log T in [log 0.05, log 20]; the NLL is a smooth
    one-dimensional function of T, so a scalar search is exact enough and needs no gradients.
    Returns 1.0 (no change) when there are fewer than two labelled images or only one class.
    """
    scores = np.asarray(logits_or_logprobs, dtype=np.float64)
    if scores.ndim == 1:
        scores = np.log(np.clip(_as_2d(scores), _EPS, 1.0))
    y = np.asarray(labels, dtype=int)
    if len(y) < 2 or len(np.unique(y)) < 2:
        return 1.0
    res = minimize_scalar(lambda log_t: _nll(scores, y, float(np.exp(log_t))), bounds=_LOG_T_BOUNDS, method="bounded")
    return float(np.exp(res.x))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Top-label confidence vs accuracy in `n_bins` equal-width bins: arrays confidence, accuracy, count.

    Bins with no image hold NaN confidence/accuracy and count 0 (for the reliability diagram).
    """
    p = _as_2d(probs)
    y = np.asarray(labels, dtype=int)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # Bin i holds confidences in (edge_i, edge_{i+1}]; the first bin also takes 0.
    idx = np.clip(np.digitize(conf, np.linspace(0.0, 1.0, n_bins + 1), right=True) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return {"confidence": mean_conf, "accuracy": accuracy, "count": count}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over equal-width top-label confidence bins.

    Hand-written because neither sklearn nor torch ships ECE (sklearn's calibration_curve gives the
    per-bin values for one class only, without the weighting). NaN for an empty set.
    """
    b = reliability_bins(probs, labels, n_bins)
    n = b["count"].sum()
    if n == 0:
        return float("nan")
    used = b["count"] > 0
    return float(np.sum(b["count"][used] * np.abs(b["accuracy"][used] - b["confidence"][used])) / n)
