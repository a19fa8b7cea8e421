"""What every annotation-format reader produces: records of source films, their boxes, and what was skipped.

Readers are pure functions `load_<format>(root, ...) -> IngestResult`: they parse annotations and list
images but never decode pixels (prepare does that once, through `fracturekit.data.imageio`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fracturekit.core.layout import NEGATIVE_CLASS, POSITIVE_CLASS


@dataclass
class Box:
    """One object box in pixels of the film AS STORED: (x1, y1) top-left, (x2, y2) bottom-right, class name.

    The one box type of the pipeline: readers produce it (`fracturekit.ingest.geometry` maps boxes drawn on
    the EXIF-oriented image back to the stored pixels), prepare scales it to the film it writes, the format
    writers (`ingest.yolo.yolo_lines`, `ingest.coco.coco_dict`) and the phantoms take it. The manifest's
    `boxes` column holds `[label, x1, y1, x2, y2]` rows (`as_row`).
    """

    label: str
    x1: float
    y1: float
    x2: float
    y2: float

    def as_row(self) -> list[str | float]:
        """`[label, x1, y1, x2, y2]`: the manifest's JSON form."""
        return [self.label, self.x1, self.y1, self.x2, self.y2]


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

    @property
    def image_label(self) -> str | None:
        """Image-level class: the reader's label, else fracture iff any box (None without boxes either)."""
        if self.label is not None:
            return self.label
        if self.boxes is None:
            return None
        return POSITIVE_CLASS if self.boxes else NEGATIVE_CLASS


@dataclass
class Skipped:
    """A file or annotation entry that could not be used, with the reason shown to the user.

    source: the absolute path of the file when there is one (image, XML, label, JSON), else
    "<annotation file relative to the root>: <entry>" for an entry naming no usable file.
    """

    source: str
    reason: str


@dataclass
class IngestResult:
    """What a reader found: usable records, skipped entries, the detection class names in id order.

    notes: dataset-level findings for the report (dropped supercategory, files not listed, ...).
    """

    format: str
    records: list[Record] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
