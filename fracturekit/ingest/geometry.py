"""Box geometry of the readers: boxes drawn on the displayed film mapped to, and checked against, the stored one.

Box frame: boxes are in the pixels of the file AS STORED, i.e. as `fracturekit.data.imageio.read_image`
decodes it (EXIF orientation is NOT applied). Annotation tools label the image as displayed (EXIF
applied), so readers map such boxes back to the stored frame (`display_to_stored`) and keep the
orientation in `meta["exif_orientation"]` when it is not 1. Image sizes come from file headers only
(`fracturekit.data.imageio.image_header`).
"""

from __future__ import annotations

from collections.abc import Iterable

from fracturekit.data.imageio import ImageHeader
from fracturekit.ingest.records import Box


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
