"""Hostile image files: what libpng/OpenCV say becomes the film's note (nothing on the terminal)."""

from __future__ import annotations

import csv
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from fracturekit.imageio import ImageReadError, read_image
from fracturekit.phantoms import generate_phantom
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


@pytest.mark.parametrize(
    ("writer", "expected"),
    [
        (write_iccp_short, "decoder: libpng warning: iCCP: too short"),  # decoded, with libpng's word as a note
        (write_crc_broken, "(corrupt or unsupported format: libpng error: "),  # refused, libpng's reason in it
    ],
)
def test_native_messages_become_the_reason(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], writer, expected: str
) -> None:
    path = tmp_path / "film.png"
    writer(path)
    capfd.readouterr()
    try:
        said = "; ".join(read_image(path).warnings)
    except ImageReadError as exc:
        said = str(exc)
    assert expected in said
    assert capfd.readouterr().err == ""  # nothing reached the terminal


def test_prepare_reasons_and_silence(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    for cls, offset in (("fractured", 0), ("normal", 100)):
        (src / cls).mkdir(parents=True)
        for i in range(6):
            cv2.imwrite(str(src / cls / f"{cls}{i}.png"), generate_phantom(seed=3, index=offset + i, size=64).image)
    write_iccp_short(src / "fractured" / "profile.png")
    write_crc_broken(src / "normal" / "crc.png")
    capfd.readouterr()
    prepare(src, tmp_path / "ds", split=(0.5, 0.25, 0.25), film_split=True, audit=False, runs_dir=None)
    with (tmp_path / "ds" / "manifest.csv").open(newline="") as f:
        rows = {Path(r["source"]).name: r for r in csv.DictReader(f)}
    assert rows["profile.png"]["status"] == "ok" and "iCCP: too short" in rows["profile.png"]["warnings"]
    assert rows["crc.png"]["status"] == "skipped" and "libpng error: " in rows["crc.png"]["reason"]
    assert "libpng" not in capfd.readouterr().err
