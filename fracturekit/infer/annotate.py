"""Readable annotated films at any size: boxes, confidences, a caption and a legend that never hide each other.

Boxes are drawn by Ultralytics' `Annotator` (PIL mode), whose line width and font size scale with the
picture (0.3% and 3.5% of its mean side). Its font is the DejaVuSans copy `yolo_env` places where
Ultralytics looks for Arial.ttf, so nothing is downloaded. What Annotator does not do is keep labels
apart: `box_label` puts every label at its box's top-left corner, so two nearby boxes, or a box in the
film's corner, stack their labels on one another. Labels are therefore placed here: the first of eight
spots around the box that stays inside the film and off every label already drawn (the test case of
two overlapping boxes in a corner: Annotator's labels overlap, these do not; tests/test_annotate.py).
The caption and legend go on a solid band above the film, so they never cover the film itself.
Small films are enlarged for display (long side at least `MIN_SIDE` px) so a 64-px phantom still
gets legible text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

MIN_SIDE = 512  # display size floor: below it a 12-px font (Annotator's minimum) covers a film's quarter
# BGR colours (Annotator keeps PIL images in BGR order)
TRUTH = (60, 200, 60)  # ground-truth boxes: green
PREDICTED = (0, 200, 255)  # predicted boxes at or above the threshold: amber
BELOW = (170, 170, 170)  # the best predicted box when none reaches the threshold: grey
POSITIVE = (50, 50, 220)  # a positive decision: red
NEGATIVE = (80, 160, 40)  # a negative decision: green
NEUTRAL = (60, 60, 60)  # plain caption text: dark grey
BAND = (32, 32, 32)  # the caption band behind the chips


@dataclass(frozen=True)
class Box:
    """A box in film pixels (x1, y1, x2, y2), its colour and label text ('' draws no label)."""

    xyxy: tuple[float, float, float, float]
    color: tuple[int, int, int]
    label: str = ""


Rect = tuple[int, int, int, int]  # x1, y1, x2, y2


def _overlap(a: Rect, b: Rect) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def place_label(size: tuple[int, int], box: Rect, taken: Sequence[Rect], frame: tuple[int, int]) -> Rect:
    """Where a (w, h) label for `box` goes: the first spot inside `frame` (w, h) that overlaps no `taken` rect.

    Spots, in order: above the box (left-, then right-aligned), inside its top edge, below it, inside its
    bottom edge; each clamped into the frame. When every spot overlaps something, the least-overlapping one.
    """
    w, h = size
    fw, fh = frame
    x1, y1, x2, y2 = box
    spots = []
    for y in (y1 - h, y1, y2, y2 - h):
        for x in (x1, x2 - w):
            cx, cy = min(max(x, 0), max(fw - w, 0)), min(max(y, 0), max(fh - h, 0))
            spots.append((cx, cy, cx + w, cy + h))
    return min(spots, key=lambda r: (sum(_overlap(r, t) for t in taken), spots.index(r)))


def display_scale(h: int, w: int, min_side: int = MIN_SIDE, max_side: int | None = None) -> float:
    """Factor that brings the film's long side up to `min_side` (and down to `max_side` when given)."""
    s = max(1.0, min_side / max(h, w))
    return min(s, max_side / max(h, w)) if max_side else s


def _text_color(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    luma = 0.114 * bg[0] + 0.587 * bg[1] + 0.299 * bg[2]  # BGR
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def annotate(
    image: np.ndarray,
    boxes: Sequence[Box] = (),
    caption: Sequence[Sequence[tuple[str, tuple[int, int, int]]]] = (),
    *,
    max_side: int | None = None,
) -> np.ndarray:
    """Draw `boxes` on a gray or BGR film and put `caption` lines of (text, colour) chips on a band above it.

    Returns a BGR image: the film (enlarged to `MIN_SIDE` or shrunk to `max_side` for display) under its band.
    """
    from fracturekit.core.yolo_env import load_ultralytics

    load_ultralytics(apply_threads=False)  # the font check must find the local TTF, never download
    from ultralytics.utils.plotting import Annotator

    bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
    h, w = bgr.shape[:2]
    s = display_scale(h, w, max_side=max_side)
    if s != 1.0:
        bgr = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    fh, fw = bgr.shape[:2]
    ann = Annotator(np.ascontiguousarray(bgr), pil=True)
    pad = max(2, ann.lw)
    taken: list[Rect] = []
    scaled = [(tuple(round(v * s) for v in b.xyxy), b) for b in boxes]
    for xyxy, b in scaled:
        ann.box_label(list(xyxy), "", b.color)  # the box alone; labels are placed below, off each other
    for xyxy, b in scaled:
        if b.label:
            tw, th = ann.font.getsize(b.label)
            r = place_label((tw + 2 * pad, th + 2 * pad), xyxy, taken, (fw, fh))
            taken.append(r)
            ann.rectangle(r, fill=b.color)
            ann.text([r[0] + pad, r[1] + pad], b.label, txt_color=_text_color(b.color))
    film = ann.result()
    if not caption:
        return film
    return np.vstack([_band(caption, fw, ann.font, pad), film])


def _band(
    lines: Sequence[Sequence[tuple[str, tuple[int, int, int]]]], width: int, font: object, pad: int
) -> np.ndarray:
    """A dark band holding each caption line's chips left to right, wrapped at `width`."""
    from PIL import Image, ImageDraw

    lines = [[chip for t, c in line for chip in _split_chip(t, c, width - 4 * pad, font)] for line in lines]
    sizes = [[font.getsize(t) for t, _ in line] for line in lines]  # type: ignore[attr-defined]
    row_h = max((sz[1] for line in sizes for sz in line), default=0) + 2 * pad
    rows: list[list[tuple[int, str, tuple[int, int, int], int]]] = []  # (x, text, colour, chip width)
    for line, line_sizes in zip(lines, sizes, strict=True):
        x, row = pad, []
        for (text, color), (tw, _) in zip(line, line_sizes, strict=True):
            cw = tw + 2 * pad
            if row and x + cw > width - pad:  # wrap: start a new row
                rows.append(row)
                x, row = pad, []
            row.append((x, text, color, cw))
            x += cw + pad
        rows.append(row)
    img = Image.new("RGB", (width, len(rows) * (row_h + pad) + pad), BAND)
    draw = ImageDraw.Draw(img)
    for k, row in enumerate(rows):
        y = pad + k * (row_h + pad)
        for x, text, color, cw in row:
            draw.rectangle((x, y, x + cw, y + row_h), fill=color)
            draw.text((x + pad, y + pad), text, fill=_text_color(color), font=font)
    return np.asarray(img)  # drawn with BGR tuples, so the array is already BGR


NOT_SEEN = "outside the centre crop: not seen by the classifier"


def _split_chip(
    text: str, color: tuple[int, int, int], width: int, font: object
) -> list[tuple[str, tuple[int, int, int]]]:
    """One chip, or several word-wrapped ones of the same colour when its text is wider than `width`."""
    out, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and font.getsize(trial)[0] > width:  # type: ignore[attr-defined]
            out.append((line, color))
            line = word
        else:
            line = trial
    return [*out, (line, color)]


def heatmap_panel(gray: np.ndarray, heat: np.ndarray, seen: Rect | None = None) -> np.ndarray:
    """A JET heatmap blended 50/50 over the film, film-sized; outside `seen` (the classifier's centre crop)
    hatched grey and labelled `NOT_SEEN`.

    The classifier only ever sees the centre square of the film (Ultralytics' classify transform
    crops it), so its map is undefined outside; the hatching says so instead of a misleading blue.
    """
    h8 = (np.clip(heat, 0, 1) * 255).astype(np.uint8)
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    out = cv2.addWeighted(cv2.applyColorMap(h8, cv2.COLORMAP_JET), 0.5, base, 0.5, 0)
    if seen is None:
        return out
    x1, y1, x2, y2 = seen
    mask = np.ones(gray.shape, bool)
    mask[y1:y2, x1:x2] = False
    hatch = (base // 3).copy()
    step = max(6, round(max(gray.shape) / 40))
    for k in range(-gray.shape[0], gray.shape[1], step):
        cv2.line(hatch, (k, 0), (k + gray.shape[0], gray.shape[0]), (110, 110, 110), max(1, step // 4))
    out[mask] = hatch[mask]
    return _note(out, NOT_SEEN, (0, 0, x1, gray.shape[0]) if x1 > 0 else (0, 0, gray.shape[1], y1))


def _note(image: np.ndarray, text: str, area: Rect) -> np.ndarray:
    """`text` on a solid chip at the top-left of `area`, in Annotator's film-scaled font, wrapped to fit its width."""
    from fracturekit.core.yolo_env import load_ultralytics

    load_ultralytics(apply_threads=False)
    from ultralytics.utils.plotting import Annotator

    ann = Annotator(np.ascontiguousarray(image), pil=True)
    pad = max(2, ann.lw)
    lines, line = [], ""
    for word in text.split():  # greedy wrap at the area's width
        trial = f"{line} {word}".strip()
        if line and ann.font.getsize(trial)[0] + 2 * pad > area[2] - area[0]:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    y = area[1]
    for ln in lines:
        tw, th = ann.font.getsize(ln)
        ann.rectangle((area[0], y, area[0] + tw + 2 * pad, y + th + 2 * pad), fill=BELOW)
        ann.text([area[0] + pad, y + pad], ln, txt_color=_text_color(BELOW))
        y += th + 2 * pad
    return ann.result()


def centre_crop(h: int, w: int) -> Rect:
    """The centre square Ultralytics' classify transform keeps of an (h, w) film, as x1, y1, x2, y2."""
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return left, top, left + s, top + s
