"""Label and split names: the synonyms users give the two binary classes and the dataset splits."""

from __future__ import annotations

import re
from collections.abc import Iterable

from fracturekit.core.layout import NEGATIVE_CLASS, POSITIVE_CLASS
from fracturekit.ingest.records import IngestResult

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
# Numbers read as the binary classes only in a two-class dataset: `0 1 2 3 4` is a 5-grade scale, not fracture.
NUMERIC_SYNONYMS = frozenset({"0", "1"})
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


def fold(name: str) -> str:
    """Lower-case alphanumerics only: 'Image_ID' and 'image id' compare equal."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


class LabelMap(dict[str, str]):
    """A `--map` as typed, which remembers the keys that named something in the source (`canonical_label` marks
    them): a key that named nothing is a typo that would otherwise change nothing in silence."""

    def __init__(self, mapping: dict[str, str]) -> None:
        super().__init__(mapping)
        self.used: set[str] = set()

    def unused(self) -> list[str]:
        """The keys no class, folder or category name of the source matched."""
        return [k for k in self if k not in self.used]


def canonical_label(name: str, mapping: dict[str, str] | None = None, numeric: bool = True) -> str:
    """Map a folder/category name to POSITIVE_CLASS, NEGATIVE_CLASS, or keep it (multi-class).

    An explicit `mapping` (from `--map`) wins over the synonym table; keys compare case-insensitively.
    `numeric` False keeps `0` and `1` as they are (a dataset with more than two classes).
    """
    if mapping:
        for key, value in mapping.items():
            if fold(key) == fold(name):
                if isinstance(mapping, LabelMap):
                    mapping.used.add(key)
                return value
    folded = fold(name)
    if not numeric and folded in NUMERIC_SYNONYMS:
        return name.strip()
    if folded in POSITIVE_SYNONYMS:
        return POSITIVE_CLASS
    if folded in NEGATIVE_SYNONYMS:
        return NEGATIVE_CLASS
    return name.strip()


def canonical_split(name: str) -> str | None:
    """'valid' -> 'val', 'training' -> 'train'; None when `name` is not a split name."""
    return SPLIT_SYNONYMS.get(name.strip().lower())


def split_from_parts(parts: Iterable[str]) -> str | None:
    """The canonical split named by the LAST path component that is (or starts with) a split name.

    'train', 'valid', 'images/val', 'train_aug', 'instances_train2017' all name a split; 'trainer' does not.
    """
    found = None
    for part in parts:
        for token in [part, *re.split(r"[_\-.\s]+", part)]:
            split = canonical_split(token) or canonical_split(token.rstrip("0123456789"))
            if split:
                found = split
                break
    return found


def assign_image_labels(result: IngestResult) -> None:
    """Image labels for multi-class box datasets that have a `fracture` class among others.

    GRAZPEDWRI-DX boxes `text`, `metal`, `periostealreaction`... beside `fracture`: there an image is
    fractured when it has a `fracture` box, not any box. Records keep `label=None` (any box ->
    fracture) when `fracture` is the only class or is absent (wrist-coco: Radius/Ulna/Scaphoid).
    """
    names = set(result.class_names)
    if POSITIVE_CLASS not in names or not (names - {POSITIVE_CLASS, NEGATIVE_CLASS}):
        return
    for rec in result.records:
        if rec.label is None and rec.boxes is not None:
            rec.label = POSITIVE_CLASS if any(b.label == POSITIVE_CLASS for b in rec.boxes) else NEGATIVE_CLASS
    others = sorted(names - {POSITIVE_CLASS})
    result.notes.append(
        f"image label = {POSITIVE_CLASS} when a {POSITIVE_CLASS!r} box is present; other classes {others} do not count"
    )
