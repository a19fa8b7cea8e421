"""Speed of the AUROC cluster bootstrap (`fracturekit.evaluation.metrics.bootstrap_ci`) against a plain loop.

Both resample the same kind of data, units with replacement with all their films: `--films` films in
`--units` units (scores correlated within a unit), `--boot` resamples. Reference: the straightforward
loop, one `sklearn.metrics.roc_auc_score` per resample on the films the drawn units hold. Prints both
median wall times over `--repeats` runs, their ratio, and the CPU model and SIMD flags.
Usage: `.venv/bin/python bench/bootstrap_bench.py [--films 1505 --units 31]`.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from fracturekit.evaluation.metrics import bootstrap_ci


def loop_reference(y: np.ndarray, score: np.ndarray, unit: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """Cluster bootstrap written the obvious way: draw units, gather their films, call sklearn."""
    rng = np.random.default_rng(seed)
    ids = np.unique(unit)
    members = [np.flatnonzero(unit == u) for u in ids]
    values = []
    for _ in range(n_boot):
        idx = np.concatenate([members[k] for k in rng.integers(0, len(ids), len(ids))])
        if 0 < y[idx].sum() < len(idx):
            values.append(roc_auc_score(y[idx], score[idx]))
    lo, hi = np.quantile(values, [0.025, 0.975])
    return float(lo), float(hi)


def cpu_line() -> str:
    """CPU model and the SIMD flags that matter for numpy here (lscpu; empty where it is missing)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(info.get("Flags", "").split())
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    return f"{info.get('Model name', '?').strip()}; flags: {' '.join(wanted) or 'none of avx2/avx512/amx'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=1505)
    parser.add_argument("--units", type=int, default=31)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    rng = np.random.default_rng(0)
    unit = np.sort(rng.integers(0, opts.units, opts.films))
    y_unit = rng.integers(0, 2, opts.units)
    y = y_unit[unit] ^ (rng.random(opts.films) < 0.2)  # mostly the unit's label
    score = rng.random(opts.films) + 0.3 * y + 0.3 * rng.random(opts.units)[unit]
    times: dict[str, list[float]] = {"fracturekit": [], "loop": []}
    results = {}
    for r in range(opts.repeats):
        pair = [("fracturekit", bootstrap_ci), ("loop", loop_reference)]
        for name, fn in pair[:: 1 if r % 2 == 0 else -1]:  # alternate the order so neither always runs first
            t0 = time.perf_counter()
            results[name] = fn(y, score, unit, n_boot=opts.boot, seed=r)
            times[name].append(time.perf_counter() - t0)
    fk, ref = statistics.median(times["fracturekit"]), statistics.median(times["loop"])
    print(f"{opts.films} films in {len(np.unique(unit))} units, {opts.boot} resamples, {opts.repeats} repeats")
    print(f"CPU: {cpu_line()}")
    print(f"fracturekit bootstrap_ci: {fk:.3f} s  CI {results['fracturekit'][0]:.3f}-{results['fracturekit'][1]:.3f}")
    print(f"loop + sklearn roc_auc_score: {ref:.3f} s  CI {results['loop'][0]:.3f}-{results['loop'][1]:.3f}")
    print(f"speedup: {ref / fk:.1f}x")


if __name__ == "__main__":
    main()
