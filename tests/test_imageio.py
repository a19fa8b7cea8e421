"""fracturekit.imageio: the type of a file comes from its content, and every listed type is read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fracturekit.imageio import IMAGE_SUFFIXES, MIN_SIDE, SUFFIX_KINDS, ImageReadError, read_image, sniff

FILM = (np.arange(40 * 50).reshape(40, 50) % 251).astype(np.uint8)


@pytest.mark.parametrize(
    ("fmt", "suffix", "kind"),
    [
        ("JPEG", ".jpg", "jpeg"),  # the usual film
        ("PNG", ".png", "png"),  # lossless
        ("WEBP", ".webp", "webp"),  # was ignored without a word before
        ("GIF", ".gif", "gif"),  # Ultralytics refuses GIF: prepare re-encodes it
        ("BMP", ".bmp", "bmp"),
        ("TIFF", ".tif", "tiff"),
        ("PPM", ".ppm", "pnm"),
        ("GIF", ".jpg", "gif"),  # a GIF named .jpg (found in a real Kaggle set) is a GIF
        ("PNG", ".jpeg", "png"),  # a PNG named .jpeg is a PNG
    ],
)
def test_type_from_content_and_read(tmp_path: Path, fmt: str, suffix: str, kind: str) -> None:
    path = tmp_path / f"film{suffix}"
    Image.fromarray(FILM).save(path, format=fmt)
    assert sniff(path.read_bytes()[:132]) == kind
    img = read_image(path)
    assert img.kind == kind and img.pixels.shape == FILM.shape
    assert suffix in IMAGE_SUFFIXES and kind in SUFFIX_KINDS.values()


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x00" * 128 + b"DICM", "dicom"),  # DICOM preamble
        (b"%PDF-1.4", None),  # not an image
        (b"", None),  # empty
        (b"P5\n", "pnm"),  # binary PGM
        (b"P9\n", None),  # not a PNM variant
    ],
)
def test_sniff_magic(head: bytes, kind: str | None) -> None:
    assert sniff(head) == kind


def test_under_ten_pixels_is_refused_as_ultralytics_would(tmp_path: Path) -> None:
    Image.fromarray(FILM[: MIN_SIDE - 1, :]).save(tmp_path / "thin.png")
    with pytest.raises(ImageReadError, match="under 10 px"):
        read_image(tmp_path / "thin.png")
