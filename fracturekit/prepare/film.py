"""The record of one source film on its way through prepare: one manifest row, filled in step by step."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fracturekit.data.copies import Signature
from fracturekit.ingest.records import Box, Record


@dataclass
class _Film:
    """One source image on its way through prepare (one manifest row)."""

    source: str
    record: Record | None
    rel: str = ""  # path relative to the source root (posix): the manifest's `source`, --group-regex, --meta joins
    label: str = ""
    group: str | None = None
    group_source: str = "none"  # one of GROUP_SOURCES: where `group` came from
    stem: str = ""
    status: str = "ok"
    reason: str = ""
    staged: Path | None = None
    copied: bool = False
    width: int = 0
    height: int = 0
    sha256: str = ""
    pixel_sha256: str = ""
    phashes: np.ndarray | None = None
    copy_sig: Signature | None = None
    cluster: str = ""  # the audit's duplicate-cluster id, "" when the film has no duplicate
    boxes: list[Box] | None = None  # in the pixels of the film written (after --max-side)
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    split: str = ""
    output_cls: str = ""
    output_det: str = ""
    label_file: str = ""
