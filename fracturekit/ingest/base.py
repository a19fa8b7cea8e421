"""The common record every annotation-format reader produces, and the label-name synonyms.

Readers are pure functions `load_<format>(root, ...) -> IngestResult`: they parse annotations and
list images but never decode pixels (prepare does that once, through `fracturekit.imageio`).

Box frame: boxes are in the pixels of the file AS STORED, i.e. as `fracturekit.imageio.read_image`
decodes it (EXIF orientation is NOT applied). Annotation tools label the image as displayed (EXIF
applied), so readers map such boxes back to the stored frame (`display_to_stored`) and keep the
orientation in `meta["exif_orientation"]` when it is not 1. Image sizes come from file headers only
(`image_header`: PIL for rasters, pydicom without pixel data for DICOM).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fracturekit.imageio import IMAGE_SUFFIXES
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


def fold(name: str) -> str:
    """Lower-case alphanumerics only: 'Image_ID' and 'image id' compare equal."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def canonical_label(name: str, mapping: dict[str, str] | None = None) -> str:
    """Map a folder/category name to POSITIVE_CLASS, NEGATIVE_CLASS, or keep it (multi-class).

    An explicit `mapping` (from `--map`) wins over the synonym table; keys compare case-insensitively.
    """
    if mapping:
        for key, value in mapping.items():
            if fold(key) == fold(name):
                return value
    folded = fold(name)
    if folded in POSITIVE_SYNONYMS:
        return POSITIVE_CLASS
    if folded in NEGATIVE_SYNONYMS:
        return NEGATIVE_CLASS
    return name.strip()


def canonical_split(name: str) -> str | None:
    """'valid' -> 'val', 'training' -> 'train'; None when `name` is not a split name."""
    return SPLIT_SYNONYMS.get(name.strip().lower())


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


# Folders archivers and tools leave behind; never dataset content.
JUNK_DIRS = frozenset({"__MACOSX", "__pycache__", "@eaDir", "$RECYCLE.BIN", "System Volume Information"})


def iter_images(root: Path) -> Iterator[Path]:
    """Image files under `root` (recursive, sorted, hidden and junk folders skipped), by suffix only."""
    for path in FileIndex(root).images:
        yield Path(path)


class FileIndex:
    """Every file under a root, listed once (os.walk), so readers resolve names without a stat per try.

    Paths are absolute, normalized strings under the resolved root. Symlinked folders are not followed.
    """

    def __init__(self, root: Path):
        self.root = os.path.realpath(root)
        self.files: set[str] = set()
        self.images: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in JUNK_DIRS)
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                full = os.path.join(dirpath, name)
                self.files.add(full)
                if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                    self.images.append(full)
        self._by_name: dict[str, list[str]] | None = None

    def inside(self, path: str) -> bool:
        """True when the normalized absolute `path` lies under the root (no `../` escape)."""
        norm = os.path.normpath(os.path.join(self.root, path))
        return norm == self.root or norm.startswith(self.root + os.sep)

    def find(self, path: str) -> str | None:
        """The indexed file at `path` (absolute or relative to the root), else None."""
        norm = os.path.normpath(os.path.join(self.root, path))
        return norm if norm in self.files else None

    def images_named(self, name: str) -> list[str]:
        """Indexed image files with this base name."""
        if self._by_name is None:
            self._by_name = {}
            for p in self.images:
                self._by_name.setdefault(os.path.basename(p), []).append(p)
        return self._by_name.get(name, [])

    def locate(self, name: str, bases: Iterable[str], what: str = "file_name") -> tuple[str | None, str | None]:
        """Find the image an annotation names: (path, None) or (None, reason).

        `name` may hold sub-folders and Windows separators. It is tried under each of `bases` in
        order, then by unique base name anywhere under the root. A name that leaves the root (`../`,
        an absolute path elsewhere) is refused.
        """
        clean = name.replace("\\", "/").strip()
        if not clean:
            return None, f"empty {what}"
        parts = clean.split("/")
        if os.path.isabs(clean) or ".." in parts:
            bases = list(bases)
            target = os.path.normpath(os.path.join(bases[0] if bases else self.root, clean))
            if not self.inside(target):
                return None, f"{what} {name!r} escapes the dataset root; refused"
            found = self.find(target)
            return (found, None) if found else (None, f"image file not found ({name})")
        for base in bases:
            found = self.find(os.path.join(base, clean))
            if found:
                return found, None
        matches = self.images_named(parts[-1])
        if len(matches) == 1:
            return matches[0], None
        if len(matches) > 1:
            return None, f"{what} {name!r} not found as given and its base name matches {len(matches)} files"
        return None, f"image file not found ({name})"

    def rel(self, path: str) -> str:
        """`path` relative to the root, POSIX separators."""
        return os.path.relpath(path, self.root).replace(os.sep, "/")


@dataclass(frozen=True)
class ImageHeader:
    """Size of an image as stored (`width`, `height`) and its EXIF orientation (1 = none)."""

    width: int
    height: int
    orientation: int = 1

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) once the EXIF orientation is applied (swapped for 5..8)."""
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (self.width, self.height)


class HeaderError(Exception):
    """The file's header cannot be read (not an image, or corrupt beyond the header)."""


def _exif_orientation(seg: bytes) -> int:
    """Orientation tag (0x0112) of IFD0 in an APP1 'Exif' payload; 1 when absent or malformed."""
    if not seg.startswith(b"Exif\x00\x00") or len(seg) < 14:
        return 1
    tiff = seg[6:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return 1
    try:
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
        for k in range(count):
            entry = tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
            tag, typ = struct.unpack(order + "HH", entry[:4])
            if tag == 0x0112:
                fmt = "H" if typ == 3 else "I"
                value = struct.unpack(order + fmt, entry[8 : 8 + struct.calcsize(fmt)])[0]
                return value if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def _jpeg_header(f) -> ImageHeader | None:  # noqa: ANN001
    """Walk JPEG markers up to the first SOF: size and EXIF orientation, without decoding."""
    orientation = 1
    f.seek(2)
    while True:
        byte = f.read(1)
        while byte and byte != b"\xff":
            byte = f.read(1)
        while byte == b"\xff":
            byte = f.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any SOF
            return None
        raw = f.read(2)
        if len(raw) < 2:
            return None
        (length,) = struct.unpack(">H", raw)
        if length < 2:
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            sof = f.read(5)
            if len(sof) < 5:
                return None
            height, width = struct.unpack(">HH", sof[1:5])
            return ImageHeader(width, height, orientation) if width and height else None
        if marker == 0xE1 and orientation == 1:
            orientation = _exif_orientation(f.read(length - 2))
        else:
            f.seek(length - 2, 1)


def image_header(path: Path) -> ImageHeader:
    """Width, height and EXIF orientation from the header only (no pixel decoding).

    JPEG and PNG are parsed directly (fast); DICOM through pydicom without pixel data; anything
    else through PIL's lazy `Image.open`.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(132)
            if head[:3] == b"\xff\xd8\xff":
                info = _jpeg_header(f)
                if info is not None:
                    return info
            elif head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                width, height = struct.unpack(">II", head[16:24])
                if width and height:
                    return ImageHeader(width, height)
    except OSError as exc:
        raise HeaderError(f"cannot open ({exc.strerror})") from exc
    if Path(path).suffix.lower() in (".dcm", ".dicom") or head[128:132] == b"DICM":
        import pydicom

        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            return ImageHeader(int(ds.Columns), int(ds.Rows))
        except Exception as exc:  # pydicom raises many types
            raise HeaderError(f"unreadable DICOM header ({type(exc).__name__})") from exc
    if not head:
        raise HeaderError("empty file")
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = 1
            if im.format in ("JPEG", "TIFF", "MPO", "WEBP"):
                try:
                    orientation = int(im.getexif().get(0x0112, 1) or 1)
                except Exception:
                    orientation = 1
    except Exception as exc:  # PIL raises many types; Ultralytics' Image.open patch adds ImportError (pi_heif)
        kind = "" if isinstance(exc, ImportError) else f" ({type(exc).__name__})"
        raise HeaderError(f"not a readable image{kind}") from exc
    return ImageHeader(width, height, orientation if orientation in range(1, 9) else 1)


def display_to_stored(
    x1: float, y1: float, x2: float, y2: float, header: ImageHeader
) -> tuple[float, float, float, float]:
    """Map a box drawn on the displayed (EXIF-oriented) image to the stored pixels."""
    o, w, h = header.orientation, header.width, header.height  # stored size
    if o == 1:
        return x1, y1, x2, y2

    def point(x: float, y: float) -> tuple[float, float]:
        return {
            2: (w - x, y),
            3: (w - x, h - y),
            4: (x, h - y),
            5: (y, x),
            6: (y, h - x),
            7: (w - y, h - x),
            8: (w - y, x),
        }[o]

    (a, b), (c, d) = point(x1, y1), point(x2, y2)
    return min(a, c), min(b, d), max(a, c), max(b, d)


def clip_box(
    label: str, x1: float, y1: float, x2: float, y2: float, width: float, height: float
) -> tuple[Box | None, str | None]:
    """Validate a pixel box against a width x height image: (Box, None) or (None, reason).

    Overshoot up to max(2 px, 1 %) of a side is clipped silently (rounding in annotation tools);
    more is refused, as is a box with no area after clipping.
    """
    vals = (x1, y1, x2, y2)
    if not all(isinstance(v, (int, float)) and v == v and abs(v) != float("inf") for v in vals):
        return None, "non-numeric coordinates"
    if x2 <= x1 or y2 <= y1:
        return None, "zero or negative width/height"
    tx, ty = max(2.0, 0.01 * width), max(2.0, 0.01 * height)
    if x1 < -tx or y1 < -ty or x2 > width + tx or y2 > height + ty:
        return None, f"outside the {width:g}x{height:g} image"
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if cx2 - cx1 < 1 or cy2 - cy1 < 1:
        return None, "less than 1 px wide or high inside the image"
    return Box(label, float(cx1), float(cy1), float(cx2), float(cy2)), None


def resolve_frame(
    declared: tuple[float, float] | None, header: ImageHeader | None, problems: list[str]
) -> tuple[ImageHeader | None, tuple[float, float] | None]:
    """Decide the frame an annotation's pixel boxes are drawn in, from its declared size and the file.

    Declared size == displayed size (EXIF applied): boxes are on the displayed image (the usual case).
    Declared size == stored size but EXIF swaps the sides: boxes are on the stored pixels (orientation
    ignored). Any other size: boxes are scaled to the file, with a problem noted. Returns the header to
    map with and the frame (width, height); the frame is None when no size is known at all.
    """
    if declared is not None and (declared[0] <= 0 or declared[1] <= 0):
        declared = None
    if header is None:
        return None, declared
    if declared is None:
        return header, header.display_size
    dw, dh = round(declared[0]), round(declared[1])
    if (dw, dh) == header.display_size:
        return header, declared
    if (dw, dh) == (header.width, header.height):
        return ImageHeader(header.width, header.height, 1), declared
    disp = header.display_size
    problems.append(
        f"declared size {declared[0]:g}x{declared[1]:g} differs from the file's {disp[0]}x{disp[1]}; boxes scaled"
    )
    return header, declared


def frame_box(
    label: str,
    x1: float,
    y1: float,
    x2: float,
    y2: float,
    header: ImageHeader | None,
    frame: tuple[float, float] | None,
) -> tuple[Box | None, str | None]:
    """Validate a box drawn in `frame` (see `resolve_frame`) and map it to stored pixels."""
    if frame is None:  # nothing to check against: keep what is plausible
        if x2 <= x1 or y2 <= y1 or min(x1, y1) < 0:
            return None, "zero/negative size or negative coordinates"
        return Box(label, x1, y1, x2, y2), None
    box, why = clip_box(label, x1, y1, x2, y2, frame[0], frame[1])
    if box is None or header is None:
        return box, why
    dw, dh = header.display_size
    sx, sy = dw / frame[0], dh / frame[1]
    mapped = display_to_stored(box.x1 * sx, box.y1 * sy, box.x2 * sx, box.y2 * sy, header)
    return Box(label, *mapped), None


def fmt_nums(values: Iterable[object]) -> str:
    """Short rendering of coordinates for problem messages."""
    return "[" + ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values) + "]"
