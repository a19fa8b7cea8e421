"""Hostile image files: what libpng/OpenCV say becomes the film's note (nothing on the terminal), and a
decompression bomb or an absurd DICOM frame count is refused from its header, before decoding."""

from __future__ import annotations

import csv
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from fracturekit.core.errors import UserError
from fracturekit.data.imageio import ImageReadError, read_image
from fracturekit.data.phantoms import generate_phantom
from fracturekit.infer.preprocess import load_item
from fracturekit.prepare import prepare


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(side: int, extra: bytes = b"") -> bytes:
    """An 8-bit gray PNG of mid-gray pixels, with `extra` chunks before its image data."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    raw = (b"\x00" + b"\x80" * side) * side
    body = _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def write_iccp_short(path: Path) -> None:
    """A PNG whose colour profile chunk is cut short: libpng warns `iCCP: too short` and decodes it."""
    path.write_bytes(_png(32, _chunk(b"iCCP", b"x\x00\x00" + zlib.compress(b"garbage" * 10))))


def write_crc_broken(path: Path) -> None:
    """A PNG with 60 bytes of its image data overwritten: libpng prints `libpng error: ...` and gives up."""
    data = bytearray(cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8))[1])
    data[200:260] = b"\x07" * 60
    path.write_bytes(bytes(data))


def write_bomb(path: Path, side: int = 60_000, rows: int = 100) -> None:
    """A valid `side` x `side` all-black PNG of about 3.5 MB: 3.6 gigapixels once decoded.

    After a full flush zlib compresses every equal block to the same bytes, so one block is compressed
    and repeated; the Adler-32 of n zero bytes is (n mod 65521) << 16 | 1. Checked once with zlib: it inflates to
    exactly 60,000 x 60,001 bytes, the stream complete (3.5 MB written in well under a second).
    """
    block = bytes((side + 1) * rows)  # filter byte 0 and `side` zero pixels, `rows` times
    co = zlib.compressobj(9)
    first = co.compress(block) + co.flush(zlib.Z_FULL_FLUSH)
    again = co.compress(block) + co.flush(zlib.Z_FULL_FLUSH)
    adler = ((len(block) * (side // rows)) % 65521) << 16 | 1
    idat = first + again * (side // rows - 1) + b"\x03\x00" + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


def write_many_frames(path: Path, frames: int = 100_000) -> None:
    """A DICOM declaring 64 x 64 x `frames` pixels (26 GB at 16 bits) with one frame of data."""
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.NumberOfFrames = 64, 64, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = bytes(64 * 64 * 2)
    ds.save_as(str(path), enforce_file_format=True)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    write_bomb(path)
    return path


@pytest.mark.parametrize(
    ("writer", "expected"),
    [
        (write_iccp_short, "decoder: libpng warning: iCCP: too short"),  # decoded, with libpng's word as a note
        (write_crc_broken, "(corrupt or unsupported format: libpng error: "),  # refused, libpng's reason in it
        (write_many_frames, "64 x 64 px x 100,000 frames (410 megapixels) is over the --max-pixels limit"),
    ],
)
def test_native_messages_become_the_reason(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], writer, expected: str
) -> None:
    path = tmp_path / ("film.dcm" if writer is write_many_frames else "film.png")
    writer(path)
    capfd.readouterr()
    try:
        said = "; ".join(read_image(path).warnings)
    except ImageReadError as exc:
        said = str(exc)
    assert expected in said
    assert capfd.readouterr().err == ""  # nothing reached the terminal


def test_bomb_refused_before_decoding(bomb: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ImageReadError, match=r"^60,000 x 60,000 px \(3,600 megapixels\) is over the --max-pixels"):
        read_image(bomb)
    # no limit of ours: OpenCV's own limit (2^30 px) refuses it, in one sentence instead of its assertion dump
    with pytest.raises(ImageReadError, match=r"^OpenCV refused to decode it \(pixels <= CV_IO_MAX_IMAGE_PIXELS\)$"):
        read_image(bomb, max_pixels=None)
    item = load_item(0, bomb, None, None, max_pixels=10**8)  # predict's reader
    assert item.error.startswith("60,000 x 60,000 px") and "100,000,000" in item.error
    assert capfd.readouterr().err == ""


def test_prepare_reasons_and_silence(tmp_path: Path, bomb: Path, capfd: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    for cls, offset in (("fractured", 0), ("normal", 100)):
        (src / cls).mkdir(parents=True)
        for i in range(6):
            cv2.imwrite(str(src / cls / f"{cls}{i}.png"), generate_phantom(seed=3, index=offset + i, size=64).image)
    write_iccp_short(src / "fractured" / "profile.png")
    write_crc_broken(src / "normal" / "crc.png")
    (src / "normal" / "bomb.png").symlink_to(bomb)
    capfd.readouterr()
    prepare(src, tmp_path / "ds", split=(0.5, 0.25, 0.25), film_split=True, audit=False, runs_dir=None)
    with (tmp_path / "ds" / "manifest.csv").open(newline="") as f:
        rows = {Path(r["source"]).name: r for r in csv.DictReader(f)}
    assert rows["profile.png"]["status"] == "ok" and "iCCP: too short" in rows["profile.png"]["warnings"]
    assert rows["crc.png"]["status"] == "skipped" and "libpng error: " in rows["crc.png"]["reason"]
    assert rows["bomb.png"]["reason"].startswith("unreadable image: 60,000 x 60,000 px (3,600 megapixels)")
    assert "libpng" not in capfd.readouterr().err


def test_max_pixels_is_an_option(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for cls in ("fractured", "normal"):
        (src / cls).mkdir(parents=True)
        cv2.imwrite(str(src / cls / "a.png"), generate_phantom(seed=3, index=len(cls), size=64).image)
    with pytest.raises(UserError, match="--max-pixels 0: must be a positive number"):
        prepare(src, tmp_path / "ds", max_pixels=0)
    # 64 x 64 = 4,096 px: over a limit of 4,000, so no film is usable, and the sentence says why
    with pytest.raises(UserError, match=r"none of the 2 images is usable \(2 x unreadable image: 64 x 64 px"):
        prepare(src, tmp_path / "ds", max_pixels=4_000, film_split=True, runs_dir=None)
