"""The decision policy: how a model's score becomes a decision (threshold, temperature, positive class).

Threshold and temperature are those `evaluate` chose on the validation split (its metrics.json); without
them the decision is taken at DEFAULT_THRESHOLD and a note says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fracturekit.core.layout import NEGATIVE_CLASS, POSITIVE_CLASS

if TYPE_CHECKING:
    from fracturekit.infer.model import Model

DEFAULT_THRESHOLD = 0.5


def positive_index(names: list[str], positive: str | None = None) -> int | None:
    """Index of the positive class in `names` (ordered like the model's class ids).

    `positive` (the class evaluate recorded) when given; else 'fracture' when present, else the second
    class of a binary model (Ultralytics sorts class folders: ['negative', 'positive']); None when there
    is no such class (a multi-class model without 'fracture', or a recorded class the model lacks).
    """
    if positive is not None:
        return names.index(positive) if positive in names else None
    if POSITIVE_CLASS in names:
        return names.index(POSITIVE_CLASS)
    return 1 if len(names) == 2 else None


def negative_label(names: list[str] | None, positive: str) -> str:
    """The decision label below threshold: the classifier's other class when binary, else no_fracture."""
    if names is not None and len(names) == 2:
        return next(v for v in names if v != positive)
    return NEGATIVE_CLASS


@dataclass
class Policy:
    """How a score becomes a decision: tuned threshold, temperature, positive class, notes."""

    threshold: float = DEFAULT_THRESHOLD
    temperature: float = 1.0
    positive: str | None = None  # the class evaluate recorded; None: decided by positive_index's rule
    notes: list[str] = field(default_factory=list)


def _section(model: Model, section: str, sources: list[dict[str, Any]]) -> dict[str, Any]:
    """This model's `section` of a metrics.json: its own run's latest evaluation, else the other model's
    (`sources`), where `evaluate` wrote both sections when it scored the two together; each section names
    the run it belongs to, and only that run's model takes it."""
    own = model.run.root.resolve() if model.run is not None else None
    for metrics in [model.metrics, *sources]:
        m = metrics.get(section)
        if not isinstance(m, dict):
            continue
        run = m.get("run")
        if (run is None and metrics is model.metrics) or (run is not None and own == Path(run).resolve()):
            return m
    return {}


def policy(model: Model, sources: list[dict[str, Any]]) -> Policy:
    """`model`'s policy from its evaluate metrics (its run's, or those in `sources`: the other model's run)."""
    section = "detection" if model.task == "detect" else "classification"
    m = _section(model, section, sources)
    pol = Policy(positive=str(m["positive_class"]) if m.get("positive_class") else None)
    if m.get("threshold") is not None:
        pol.threshold = float(m["threshold"])
    else:
        where = model.run.metrics if model.run is not None else f"{model.weights} (not inside a run folder)"
        pol.notes.append(
            f"{model.task}: no evaluate threshold in {where}, so the decision is at {DEFAULT_THRESHOLD}"
            + ("" if section == "detection" else " and the probability is not calibrated")
        )
    if section == "classification" and m.get("temperature") is not None:
        pol.temperature = float(m["temperature"])
    return pol
