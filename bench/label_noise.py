"""How well `audit --label-issues` finds flipped labels, by flip rate and by the scoring model's AUROC.

Labels of N films are flipped on purpose (seeded); out-of-sample scores come from a simulated model of known
AUROC that scores the films' true labels (binormal: positives ~ N(d, 1), negatives ~ N(0, 1) with
d = sqrt(2) * Phi^-1(AUROC), then a logistic link to a probability). The table gives the share of flipped films
ranked within the top 1.5 x (number flipped) rows by cleanlab's confident learning (`fracturekit.data.label_issues`),
mean over seeds. The reference is chance: 1.5 x the flip rate.

    python bench/label_noise.py [--films 200] [--seeds 20]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import norm


def simulated_scores(y_true: np.ndarray, auroc: float, rng: np.random.Generator) -> np.ndarray:
    """Probabilities of class 1 from a binormal model whose AUROC on `y_true` is `auroc` in expectation."""
    d = np.sqrt(2) * norm.ppf(auroc)
    z = rng.normal(size=len(y_true)) + d * y_true - d / 2
    return 1 / (1 + np.exp(-z))


def flipped(n: int, n_flip: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the `n_flip` films (of `n`) whose label is flipped."""
    return np.sort(rng.choice(n, n_flip, replace=False))


def found_in_top(n: int, rate: float, auroc: float, seed: int) -> float:
    """Share of flipped films in the top 1.5 x n_flip rows of the ranking, for one seed."""
    from fracturekit.data.label_issues import model_issues

    rng = np.random.default_rng(seed)
    y_true = (rng.random(n) < 0.5).astype(int)
    n_flip = max(1, round(rate * n))
    flip = flipped(n, n_flip, rng)
    given = y_true.copy()
    given[flip] = 1 - given[flip]
    s = simulated_scores(y_true, auroc, rng)
    rows, scores, _ = model_issues(given, np.stack([1 - s, s], axis=1))
    top = rows[np.argsort(-scores, kind="stable")][: int(1.5 * n_flip)]
    return len(set(top.tolist()) & set(flip.tolist())) / n_flip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--films", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=20)
    args = ap.parse_args()
    rates, aurocs = (0.02, 0.05, 0.10, 0.20), (0.75, 0.85, 0.95, 0.99)
    print(f"flipped films in the top 1.5 x n_flipped rows, {args.films} films, mean of {args.seeds} seeds")
    print("| flip rate | " + " | ".join(f"AUROC {a}" for a in aurocs) + " | chance |")
    print("|---|" + "---|" * (len(aurocs) + 1))
    for rate in rates:
        cells = [np.mean([found_in_top(args.films, rate, a, s) for s in range(args.seeds)]) for a in aurocs]
        print(f"| {rate:.0%} | " + " | ".join(f"{c:.0%}" for c in cells) + f" | {min(1, 1.5 * rate):.0%} |")


if __name__ == "__main__":
    main()
