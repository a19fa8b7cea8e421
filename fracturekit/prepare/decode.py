"""Decode, hash and stage each film once: unique output names, optional CLAHE / --max-side, a byte-for-byte
copy of a clean 8-bit film or a PNG otherwise, and its boxes in the pixels of the film written."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import cv2

from fracturekit.audit import film_hashes
from fracturekit.core.diskspace import is_no_space
from fracturekit.data.imageio import (
    MAX_PIXELS,
    SUFFIX_KINDS,
    HeaderError,
    ImageReadError,
    apply_clahe,
    image_header,
    limit_side,
    read_image,
)
from fracturekit.ingest.records import Box
from fracturekit.prepare.film import _Film

_COPY_SUFFIXES = {"jpeg": ".jpg", "png": ".png"}  # content types copied byte for byte, and their output suffix


def _unique_stems(films: list[_Film]) -> None:
    """Output stems unique case-insensitively: the file stem, or its relative path when names collide."""
    counts = Counter(Path(f.source).stem.lower() for f in films)
    used: set[str] = set()
    for film in films:
        src = Path(film.source)
        stem = src.stem
        if counts[stem.lower()] > 1:
            stem = "__".join(Path(film.rel).with_suffix("").parts) + "_" + src.suffix.lstrip(".").lower()
        stem = re.sub(r"[^\w.\- ]", "_", stem)
        base, k = stem, 1
        while stem.lower() in used:
            k += 1
            stem = f"{base}_{k}"
        used.add(stem.lower())
        film.stem = stem


def _exif_rotated(path: Path) -> bool:
    """True when the file carries an EXIF orientation other than 1: Ultralytics would apply it, we do not."""
    try:
        return image_header(path).orientation != 1
    except HeaderError:
        return True


def _process(
    film: _Film,
    stage: Path,
    clahe: bool,
    max_side: int | None,
    max_pixels: int | None = MAX_PIXELS,
    signed: set[str] | None = None,
) -> None:
    """Decode, hash, transform and stage one film; on failure mark it skipped with the reason.

    signed: the pixel hashes of films signed so far (`film_hashes`): a pixel twin is not signed again."""
    src = Path(film.source)
    try:
        img = read_image(src, max_pixels)  # before reading the bytes: a film over --max-pixels is never loaded
        data = src.read_bytes()
    except (ImageReadError, OSError) as exc:
        film.status, film.reason = "skipped", f"unreadable image: {exc}"
        return
    film.sha256 = hashlib.sha256(data).hexdigest()
    film.pixel_sha256, film.phashes, film.copy_sig = film_hashes(img.pixels, signed)
    film.warnings.extend(img.warnings)
    film.meta.update(img.meta)
    pixels, scale = limit_side(img.pixels, max_side)
    if clahe:
        pixels = apply_clahe(pixels)
    film.height, film.width = pixels.shape[:2]
    suffix = _COPY_SUFFIXES.get(img.kind or "")
    named = SUFFIX_KINDS.get(src.suffix.lower())
    if img.kind is not None and named is not None and named != img.kind:
        how = f"kept as {suffix}" if suffix else "re-encoded as PNG"
        film.warnings.append(f"content is {img.kind.upper()} although named {src.suffix}: {how}")
    # Ultralytics re-saves a JPEG whose last two bytes are not the end marker, inside the dataset: re-encode.
    jpeg_ends = img.kind != "jpeg" or data[-2:] == b"\xff\xd9"
    clean = (
        suffix is not None
        and jpeg_ends
        and img.source_bit_depth == 8
        and not img.warnings
        and scale == 1.0
        and not clahe
        and not _exif_rotated(src)
    )
    if clean:
        film.staged, film.copied = stage / f"{film.stem}{suffix}", True
        film.staged.write_bytes(data)  # byte-for-byte copy of a clean 8-bit film: lossless and fast
    else:
        film.staged = stage / f"{film.stem}.png"
        ok, png = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            film.status, film.reason = "skipped", "could not encode the output PNG"
            return
        film.staged.write_bytes(png.tobytes())  # not cv2.imwrite: a full disk must raise (ENOSPC), not return False
    if film.record is not None and film.record.boxes is not None:
        film.boxes = []
        for b in film.record.boxes:
            x1, y1 = max(0.0, b.x1 * scale), max(0.0, b.y1 * scale)
            x2, y2 = min(float(film.width), b.x2 * scale), min(float(film.height), b.y2 * scale)
            if x2 - x1 < 1 or y2 - y1 < 1:
                film.warnings.append(f"box {b.label} dropped: under 1 px inside the output image")
                continue
            film.boxes.append(Box(b.label, round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)))


def _process_safely(
    film: _Film,
    stage: Path,
    clahe: bool,
    max_side: int | None,
    max_pixels: int | None = MAX_PIXELS,
    signed: set[str] | None = None,
) -> None:
    """`_process`, but any unexpected error on one file marks that file skipped instead of stopping the run."""
    try:
        _process(film, stage, clahe, max_side, max_pixels, signed)
    except OSError as exc:
        if is_no_space(exc):
            raise  # a full disk stops the whole run (prepare says so), it is not this film's fault
        film.status, film.reason, film.boxes = "skipped", f"failed: {type(exc).__name__}: {exc}", None
    except Exception as exc:  # a decoder/library bug on one odd file must not lose the other thousands
        film.status, film.reason, film.boxes = "skipped", f"failed: {type(exc).__name__}: {exc}", None
