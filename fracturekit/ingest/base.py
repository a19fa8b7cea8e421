"""The common record every annotation-format reader produces, and the label-name synonyms.

Readers are pure functions `load_<format>(root, ...) -> IngestResult`: they parse annotations and
list images but never decode pixels (prepare does that once, through `fracturekit.imageio`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fracturekit.layout import NEGATIVE_CLASS, POSITIVE_CLASS


@dataclass
class Box:
    """One object box in SOURCE-image pixels (x1, y1) top-left, (x2, y2) bottom-right."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class Record:
    """One source image and what its annotations say about it.

    label: image-level class (canonical POSITIVE_CLASS / NEGATIVE_CLASS, or a custom class name);
      None means "derive from boxes" (any box -> POSITIVE_CLASS, none -> NEGATIVE_CLASS).
    boxes: None when the format has no boxes (class folders); [] for a background image.
    split: the dataset's own split ("train", "val", "test") when it has one, else None.
    group: patient/study key when the format knows one (DICOM tags, CSV), else None.
    problems: annotation defects found and dropped (bad rows, out-of-range boxes), for the report.
    """

    source: Path
    label: str | None = None
    boxes: list[Box] | None = None
    split: str | None = None
    group: str | None = None
    meta: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass
class Skipped:
    """A file or annotation entry that could not be used, with the reason shown to the user."""

    source: str
    reason: str


@dataclass
class IngestResult:
    """What a reader found: usable records, skipped entries, the detection class names in id order."""

    format: str
    records: list[Record] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)


# Folder / category names users give the two binary classes, lower-cased with separators folded.
POSITIVE_SYNONYMS = frozenset(
    {"fractured", "fracture", "fractures", "positive", "pos", "1", "yes", "abnormal", "broken", "true"}
)
NEGATIVE_SYNONYMS = frozenset(
    {
        "notfractured",
        "nonfractured",
        "nofracture",
        "unfractured",
        "notfracture",
        "nonfracture",
        "normal",
        "negative",
        "neg",
        "0",
        "no",
        "healthy",
        "false",
        "intact",
    }
)
SPLIT_SYNONYMS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


def _fold(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def canonical_label(name: str, mapping: dict[str, str] | None = None) -> str:
    """Map a folder/category name to POSITIVE_CLASS, NEGATIVE_CLASS, or keep it (multi-class).

    An explicit `mapping` (from `--map`) wins over the synonym table; keys compare case-insensitively.
    """
    if mapping:
        for key, value in mapping.items():
            if _fold(key) == _fold(name):
                return value
    folded = _fold(name)
    if folded in POSITIVE_SYNONYMS:
        return POSITIVE_CLASS
    if folded in NEGATIVE_SYNONYMS:
        return NEGATIVE_CLASS
    return name.strip()


def canonical_split(name: str) -> str | None:
    """'valid' -> 'val', 'training' -> 'train'; None when `name` is not a split name."""
    return SPLIT_SYNONYMS.get(name.strip().lower())


def is_inside(path: Path, root: Path) -> bool:
    """True when `path` resolves inside `root`: refuses `../` escapes in file_name or label paths."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True
