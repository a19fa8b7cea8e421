"""Each inference option is checked and resolved once per command, where the command enters.

`predict` and `evaluate` build one `options.InferenceOptions` at their top and pass it down; nothing below
resolves the device again, re-checks --imgsz or re-parses --threshold. Counted here by wrapping the three
functions in every fracturekit module that holds them (a module that imported the name has its own binding).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import fracturekit.core.device
import fracturekit.core.options
import fracturekit.evaluation.metrics

COUNTED = {
    "resolve_device": fracturekit.core.device.resolve_device,  # --device -> a Device
    "check_imgsz": fracturekit.core.options.check_imgsz,  # --imgsz checked and rounded
    "parse_threshold": fracturekit.evaluation.metrics.parse_threshold,  # --threshold parsed
}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often each of COUNTED runs, in whichever module it is called through."""
    import fracturekit.evaluate
    import fracturekit.predict  # noqa: F401 - imported first, so that their bindings are wrapped too

    counts: Counter[str] = Counter()

    def counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    for module in [m for n, m in sys.modules.items() if n.startswith("fracturekit") and m is not None]:
        for name, fn in COUNTED.items():
            if getattr(module, name, None) is fn:
                monkeypatch.setattr(module, name, counting(name, fn))
    return counts


def test_predict_resolves_each_option_once(tiny_runs: dict[str, Path], tmp_path: Path, calls: Counter[str]) -> None:
    from fracturekit.data.phantoms import write_phantom_dataset
    from fracturekit.predict import predict

    films = write_phantom_dataset(tmp_path / "films", n=3, seed=5, size=64, fmt="images")
    records = predict(
        films, detector=tiny_runs["detect"], classifier=tiny_runs["classify"], out=tmp_path / "out", imgsz=40
    )
    assert len(records) == 3 and records.out == tmp_path / "out"
    # both models loaded on the one device; imgsz rounded once (40 -> 64); predict chooses no threshold
    assert calls == {"resolve_device": 1, "check_imgsz": 1}, calls


def test_evaluate_resolves_each_option_once(
    prepared_phantoms: Path, tiny_runs: dict[str, Path], tmp_path: Path, calls: Counter[str]
) -> None:
    from fracturekit.evaluate import evaluate

    metrics = evaluate(
        prepared_phantoms,
        classifier=tiny_runs["classify"],
        detector=tiny_runs["detect"],
        out=tmp_path / "eval",
        threshold="sens:0.9",
        bootstrap=10,
        cases=2,
    )
    assert metrics["classification"]["threshold_method"] == "sens:0.9"
    assert metrics["detection"]["threshold_method"] == "sens:0.9"
    assert (tmp_path / "eval" / "cases.csv").is_file()
    # two models, the case pictures' EigenCAM and both thresholds: one device, one imgsz check, one parse
    assert calls == {"resolve_device": 1, "check_imgsz": 1, "parse_threshold": 1}, calls
