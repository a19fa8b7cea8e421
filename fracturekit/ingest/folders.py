"""Class-folder reader (Kaggle style): the folder an image sits in names its class.

Layouts: `<class>/img`, `<split>/<class>/img`, `<name>/<split>/<class>/img` (any nesting), and
`<class>/<split>/img`. The class is the innermost folder that is not a split name; the split is the
last split-named folder on the path relative to the root (`train`, `val`, `valid`, `test`, ...).
Class names go through `canonical_label` (+ `mapping`), so "not fractured", "Non_fractured", "0",
"normal" all become `no_fracture`. When a folder name is not a known synonym as a whole, its words
are tried: MURA's `study1_negative` -> `no_fracture`. Folders `0` and `1` are the binary classes only
when they are the only two classes; `0 1 2 3 4` (a grade scale) keep their names, with a note. Images
directly in the root or directly in a split folder have no class and are Skipped. Format has no boxes: `boxes=None`.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from fracturekit.core.errors import UserError
from fracturekit.core.layout import NEGATIVE_CLASS, POSITIVE_CLASS
from fracturekit.core.paths import user_path
from fracturekit.ingest.files import iter_images
from fracturekit.ingest.labels import NUMERIC_SYNONYMS, canonical_label, canonical_split, fold, split_from_parts
from fracturekit.ingest.records import IngestResult, Record, Skipped


def folder_label(name: str, mapping: dict[str, str] | None = None, numeric: bool = True) -> str:
    """Class of a folder name: mapping, synonym table, then a single synonym word inside the name."""
    label = canonical_label(name, mapping, numeric)
    if label in (POSITIVE_CLASS, NEGATIVE_CLASS) or (mapping and any(fold(k) == fold(name) for k in mapping)):
        return label
    words = {canonical_label(w) for w in re.split(r"[_\-\s.]+", name) if w and not w.isdigit()}
    binary = words & {POSITIVE_CLASS, NEGATIVE_CLASS}
    return binary.pop() if len(binary) == 1 else label


def load_folders(root: Path, mapping: dict[str, str] | None = None) -> IngestResult:
    """One record per image file under `root`, labelled by its class folder."""
    root = user_path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    result = IngestResult(format="folders")
    classes: Counter[str] = Counter()
    folders_per_class: dict[str, set[str]] = {}
    found: list[tuple[Path, tuple[str, ...], str]] = []
    for path in iter_images(root):
        parts = path.relative_to(root).parts[:-1]
        class_dir = next((p for p in reversed(parts) if canonical_split(p) is None), None)
        if class_dir is None:
            where = "the dataset root" if not parts else f"split folder {'/'.join(parts)}/"
            result.skipped.append(Skipped(str(path), f"image directly in {where}: no class folder"))
            continue
        found.append((path, parts, class_dir))
    # `0`/`1` are no_fracture/fracture when that leaves exactly two classes (`0 1`, `1 0 normal`), not in `0 1 2 3 4`
    numeric = len({folder_label(d, mapping) for _, _, d in found}) == 2
    literal = {folder_label(d, mapping, numeric=False) for _, _, d in found}
    numbered = sorted(n for n in literal if fold(n) in NUMERIC_SYNONYMS)
    if numbered and not numeric:
        result.notes.append(
            f"class folders {', '.join(sorted(literal)[:8])}: {len(literal)} classes, so {' and '.join(numbered)} "
            f"stay class names ({NEGATIVE_CLASS}/{POSITIVE_CLASS} only when 0 and 1 are the only two classes; "
            f"--map 1={POSITIVE_CLASS} to choose)"
        )
    for path, parts, class_dir in found:
        label = folder_label(class_dir, mapping, numeric)
        classes[label] += 1
        folders_per_class.setdefault(label, set()).add(class_dir)
        result.records.append(
            Record(
                source=path,
                label=label,
                boxes=None,
                split=split_from_parts(parts),
                meta={"class_folder": class_dir, "folder": "/".join(parts)},
            )
        )
    if not result.records and not result.skipped:
        raise UserError(f"{root}: no image files found")
    for label, n in sorted(classes.items()):
        names = ", ".join(sorted(folders_per_class[label])[:6])
        more = "" if len(folders_per_class[label]) <= 6 else f" (+{len(folders_per_class[label]) - 6} more)"
        result.notes.append(f"class {label}: {n} images from folders {names}{more}")
    return result
