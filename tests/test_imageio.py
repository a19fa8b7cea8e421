"""fracturekit.data.imageio: the type of a file comes from its content, and every listed type is read."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from fracturekit.data.imageio import (
    IMAGE_SUFFIXES,
    MIN_SIDE,
    SUFFIX_KINDS,
    HeaderError,
    ImageHeader,
    ImageReadError,
    image_header,
    read_image,
    sniff,
)

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


def _jpeg_with_orientation(path: Path, w: int, h: int, orientation: int) -> None:
    im = Image.fromarray(np.zeros((h, w), np.uint8))
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_image_header_reads_jpeg_size_and_orientation(tmp_path: Path, orientation: int) -> None:
    p = tmp_path / "a.jpg"
    _jpeg_with_orientation(p, 40, 24, orientation)
    assert image_header(p) == ImageHeader(40, 24, orientation)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_image_header_other_formats(tmp_path: Path, suffix: str) -> None:
    p = tmp_path / f"a{suffix}"
    cv2.imwrite(str(p), np.zeros((12, 30), np.uint16 if suffix != ".bmp" else np.uint8))
    assert image_header(p) == ImageHeader(30, 12, 1)


# DICOM with the 128-byte preamble + DICM (found by content), and without it (found by its .dcm suffix).
@pytest.mark.parametrize("preamble", [True, False])
def test_image_header_dicom(tmp_path: Path, preamble: bool) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.Rows, ds.Columns = 10, 20
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = np.zeros((10, 20), np.uint16).tobytes()
    p = tmp_path / "film.dcm"
    ds.save_as(p, enforce_file_format=preamble)
    assert (p.read_bytes()[128:132] == b"DICM") == preamble
    assert image_header(p) == ImageHeader(20, 10, 1)
    assert read_image(p).pixels.shape == (10, 20)


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\xff\xd8\xff\xe0\x00"])
def test_image_header_refuses_garbage(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "bad.jpg"
    p.write_bytes(content)
    with pytest.raises(HeaderError):
        image_header(p)
