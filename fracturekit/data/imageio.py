"""Read any X-ray file the toolkit accepts into a normalized 8-bit image.

One reader for `prepare` and `predict`, so a film looks the same to the model at training and at
inference time. Rasters (JPEG, PNG, BMP, TIFF 8- or 16-bit, WebP, GIF, JPEG 2000, PNM; gray or color)
go through OpenCV, with PIL as a fallback; DICOM through pydicom (modality + VOI LUT, MONOCHROME1
inverted). Truncated JPEGs are recovered when decodable. The type of a file is read from its first
bytes (`sniff`), never from its suffix: a GIF named `.jpg` is a GIF (DICOM files written without the
128-byte preamble are the one exception, see `is_dicom`). `image_header` reads a film's size and EXIF
orientation without decoding pixels, for the annotation readers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from fracturekit.data.native import native_messages

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

# The one list of file types the product reads (prepare, audit, predict, evaluate): what OpenCV 5 decodes
# here (checked: GIF, WebP and JPEG 2000 included) plus DICOM. Prepare writes every film as JPEG or PNG,
# so Ultralytics, which refuses GIF, only ever trains on those two.
SUFFIX_KINDS = {
    **dict.fromkeys((".jpg", ".jpeg", ".jpe", ".jfif"), "jpeg"),
    **dict.fromkeys((".tif", ".tiff"), "tiff"),
    **dict.fromkeys((".bmp", ".dib"), "bmp"),
    **dict.fromkeys((".pgm", ".ppm", ".pbm", ".pnm"), "pnm"),
    **dict.fromkeys((".dcm", ".dicom"), "dicom"),
    ".png": "png",
    ".webp": "webp",
    ".gif": "gif",
    ".jp2": "jp2",
}
IMAGE_SUFFIXES = frozenset(SUFFIX_KINDS)
MIN_SIDE = 10  # Ultralytics' verify_image refuses images under 10 px a side ("image size <10 pixels")
# Films larger than this are refused before decoding (`--max-pixels`). The largest X-rays are stitched long-leg and
# spine films and mammograms, about 23-30 megapixels; decoding 100 megapixels at 16 bits takes 200 MB, and its
# float32 windowing 400 MB more. A 3.5 MB PNG can declare 60,000 x 60,000 (3.6 gigapixels, 3.6 GB to decode).
MAX_PIXELS = 100_000_000
# libjpeg's DCT scaling: a JPEG decoded straight to 1/2, 1/4 or 1/8 of its size in one pass (each output pixel
# is one film pixel block's average), by OpenCV's reduced flags; EXIF orientation ignored as IMREAD_UNCHANGED does.
_REDUCED_FLAGS = {
    (s, mode): flag | cv2.IMREAD_IGNORE_ORIENTATION
    for s, gray, color in (
        (2, cv2.IMREAD_REDUCED_GRAYSCALE_2, cv2.IMREAD_REDUCED_COLOR_2),
        (4, cv2.IMREAD_REDUCED_GRAYSCALE_4, cv2.IMREAD_REDUCED_COLOR_4),
        (8, cv2.IMREAD_REDUCED_GRAYSCALE_8, cv2.IMREAD_REDUCED_COLOR_8),
    )
    for mode, flag in (("L", gray), ("RGB", color))
}
# PIL's truncated-image switch and its decompression-bomb limit are process-wide globals: hold this while one is
# flipped (prepare decodes in threads).
_PIL_SWITCH_LOCK = threading.Lock()


class ImageReadError(Exception):
    """A file that cannot be turned into an image; the message is the reason shown to the user."""


def sniff(head: bytes) -> str | None:
    """The image type named by a file's first bytes (at least 132 for DICOM), or None when not an image.

    jpeg, png, gif, bmp, tiff, webp, jp2, pnm or dicom: the magic numbers of each format's specification.
    """
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or head[:4] == b"\xff\x4f\xff\x51":
        return "jp2"
    if len(head) > 2 and head[:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
        return "pnm"
    if head[128:132] == b"DICM":
        return "dicom"
    return None


def is_dicom(head: bytes, path: str | Path) -> bool:
    """DICOM by content (`DICM` after the 128-byte preamble), or by suffix for files written without that preamble."""
    kind = sniff(head)
    return kind == "dicom" or (kind is None and Path(path).suffix.lower() in (".dcm", ".dicom"))


def sniff_file(path: str | Path) -> str | None:
    """`sniff` on the first 132 bytes of a file (None when unreadable)."""
    try:
        with open(path, "rb") as f:
            return sniff(f.read(132))
    except OSError:
        return None


@dataclass
class LoadedImage:
    """A decoded film: `pixels` is uint8 gray (H, W); `meta` holds DICOM grouping tags; `kind` its `sniff` type."""

    pixels: np.ndarray
    source_bit_depth: int
    kind: str | None = None
    meta: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    reduction: int = 1  # film pixels per decoded pixel a side: 2, 4 or 8 for a JPEG decoded at reduced size
    stored_shape: tuple[int, int] | None = None  # (h, w) of the film as stored, when decoded reduced

    @property
    def film_shape(self) -> tuple[int, int]:
        """(h, w) of the film as stored: what coordinates in outputs refer to, whatever size it was decoded at."""
        return self.stored_shape or (self.height, self.width)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def is_image_file(path: Path) -> bool:
    """True for the suffixes the toolkit reads (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def to_uint8(arr: np.ndarray, low_pct: float = 0.0, high_pct: float = 100.0) -> np.ndarray:
    """Window a high-bit-depth array linearly to 0..255 between two percentiles of its values."""
    a = arr.astype(np.float32)
    lo, hi = np.percentile(a, [low_pct, high_pct]) if (low_pct, high_pct) != (0, 100) else (a.min(), a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip((a - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def _to_gray(img: np.ndarray) -> np.ndarray:
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]
        img = img[:, :, 0] if img.shape[2] == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img


def check_pixels(width: int, height: int, frames: int, max_pixels: int | None) -> None:
    """Refuse, before decoding, a film whose pixels (all frames) exceed `max_pixels` (None: no limit)."""
    total = width * height * max(1, frames)
    if max_pixels is not None and total > max_pixels:
        size = f"{width:,} x {height:,} px" + (f" x {frames:,} frames" if frames > 1 else "")
        raise ImageReadError(
            f"{size} ({total / 1e6:,.0f} megapixels) is over the --max-pixels limit of {max_pixels:,} px: not decoded"
        )


_FULL = (1, cv2.IMREAD_UNCHANGED, None)  # (reduction, imdecode flags, stored shape) of a full-size decode


def jpeg_reduction(width: int, height: int, min_side: int) -> int:
    """The largest DCT scale denominator (8, 4, 2) that keeps the film's short side at least `min_side`; else 1."""
    return next((s for s in (8, 4, 2) if min(width, height) // s >= min_side), 1)


def _reduced_flags(path: Path, min_side: int) -> tuple[int, int, tuple[int, int] | None]:
    """(reduction, imdecode flags, stored (h, w)) for an 8-bit gray or RGB JPEG far larger than `min_side`;
    (1, IMREAD_UNCHANGED, None) for anything else (12-bit, CMYK, unreadable header), which decodes as before."""
    try:
        with native_messages(), _open_unlimited(path) as im:
            fmt, mode, (width, height) = im.format, im.mode, im.size
    except Exception:  # PIL raises many types; the full decode below says what is wrong with the file
        return _FULL
    s = jpeg_reduction(width, height, min_side) if fmt == "JPEG" else 1
    if s == 1 or (s, mode) not in _REDUCED_FLAGS:
        return _FULL
    return s, _REDUCED_FLAGS[(s, mode)], (height, width)


def _read_raster(path: Path, max_pixels: int | None, min_side: int | None = None) -> LoadedImage:
    if max_pixels is not None:
        try:
            with native_messages():  # PIL's DecompressionBombWarning: this limit replaces PIL's
                header = image_header(path)
        except HeaderError:
            header = None  # not readable by PIL: OpenCV's own limit still applies, its refusal becomes a sentence
        if header is not None:
            check_pixels(header.width, header.height, 1, max_pixels)
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise ImageReadError("empty file")
    notes: list[str] = []
    is_jpeg = data[:2].tobytes() == b"\xff\xd8"
    # A complete JPEG ends with the EOI marker FFD9 (trailing padding bytes tolerated): look in the bytes
    # already read rather than opening the file again.
    truncated = is_jpeg and b"\xff\xd9" not in data[-64:].tobytes()
    if truncated:
        notes.append("truncated JPEG: decoded what was present")
    reduction, flags, stored = _reduced_flags(path, min_side) if min_side and is_jpeg and not truncated else _FULL
    with native_messages() as said:  # libpng/libjpeg/OpenCV messages become the film's note, not terminal noise
        try:
            img = cv2.imdecode(data, flags)
        except cv2.error as exc:  # an OpenCV assertion (e.g. its own pixel limit): its condition, not its dump
            raise ImageReadError(f"OpenCV refused to decode it ({exc.err})") from None
        if img is None:  # PIL knows a few variants OpenCV refuses, truncated JPEGs among them
            img, reduction, stored = _decode_with_pil(path, truncated=is_jpeg), 1, None
    if img is None:
        why = f": {'; '.join(said)}" if said else ""
        raise ImageReadError(f"not a decodable image (corrupt or unsupported format{why})")
    notes += [f"decoder: {m}" for m in said]
    if img.ndim == 3 and img.shape[2] >= 3 and img.dtype == np.uint8:
        b, g, r = img[:, :, 0], img[:, :, 1], img[:, :, 2]
        if not (np.array_equal(b, g) and np.array_equal(g, r)):
            notes.append("color image converted to grayscale")
    gray = _to_gray(img)
    depth = 8 * gray.dtype.itemsize
    if gray.dtype == np.uint8:
        pixels = gray
    elif np.issubdtype(gray.dtype, np.integer) or np.issubdtype(gray.dtype, np.floating):
        # 16-bit films rarely use the full range: window between robust percentiles.
        pixels = to_uint8(gray, 0.5, 99.5)
    else:
        raise ImageReadError(f"unsupported pixel type {gray.dtype}")
    if min(pixels.shape[:2]) < MIN_SIDE:
        raise ImageReadError(f"image too small ({pixels.shape[1]}x{pixels.shape[0]} px, under {MIN_SIDE} px a side)")
    kind = sniff(data[:132].tobytes())
    pixels = np.ascontiguousarray(pixels)
    return LoadedImage(pixels, depth, kind, warnings=notes, reduction=reduction, stored_shape=stored)


def _decode_with_pil(path: Path, truncated: bool) -> np.ndarray | None:
    """PIL as a fallback decoder; with `truncated`, it also decodes what a cut-off JPEG holds."""
    from PIL import Image, ImageFile

    if not truncated:
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("L"))
        except Exception:  # PIL raises many types for files it cannot read
            return None
    with _PIL_SWITCH_LOCK:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("L"))
        except Exception:
            return None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _read_dicom(path: Path, max_pixels: int | None) -> LoadedImage:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        with native_messages():  # pydicom's warnings on malformed values: the decode below says what matters
            ds = pydicom.dcmread(str(path), force=True)  # force: files without the 128-byte preamble (see is_dicom)
        size = [int(getattr(ds, key, 1) or 1) for key in ("Columns", "Rows", "NumberOfFrames", "SamplesPerPixel")]
    except Exception as exc:  # pydicom raises many types for bad files
        raise ImageReadError(f"unreadable DICOM ({type(exc).__name__}: {exc})") from exc
    check_pixels(size[0], size[1], size[2] * size[3], max_pixels)  # all frames are decoded at once
    try:
        with native_messages():  # pydicom's warnings and its native decoders' messages: not shown, as before
            arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for bad/compressed files
        raise ImageReadError(f"unreadable DICOM ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 3 and getattr(ds, "SamplesPerPixel", 1) == 1:
        arr = arr[0]  # multi-frame: the first frame
    arr = apply_modality_lut(arr, ds)
    arr = apply_voi_lut(arr, ds)
    pixels = to_uint8(_to_gray(np.asarray(arr)) if arr.ndim == 3 else np.asarray(arr))
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        pixels = 255 - pixels
    meta = {
        key: str(getattr(ds, key))
        for key in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "BodyPartExamined", "ViewPosition")
        if getattr(ds, key, None) not in (None, "")
    }
    return LoadedImage(pixels=pixels, source_bit_depth=int(getattr(ds, "BitsStored", 16)), kind="dicom", meta=meta)


def read_image(path: str | Path, max_pixels: int | None = MAX_PIXELS, min_side: int | None = None) -> LoadedImage:
    """Decode one film to 8-bit gray, or raise ImageReadError with a one-line reason.

    A film of more than `max_pixels` pixels (all frames; None: no limit) is refused from its header, undecoded.
    `min_side` (None: full size): a complete 8-bit JPEG at least twice that on its short side is decoded at
    1/2, 1/4 or 1/8 size by libjpeg's DCT scaling (`jpeg_reduction`: the short side stays >= `min_side`), several
    times faster than a full decode and resize; `reduction` and `film_shape` say how to map back. Every other
    film decodes at full size.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError("file not found")
    with path.open("rb") as f:
        head = f.read(132)
    return _read_dicom(path, max_pixels) if is_dicom(head, path) else _read_raster(path, max_pixels, min_side)


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


# Formats whose EXIF orientation annotation tools apply when they display the film; a PNG eXIf chunk is ignored,
# as the hand-written parser this replaced did.
_EXIF_FORMATS = ("JPEG", "MPO", "TIFF", "WEBP")


def image_header(path: str | Path) -> ImageHeader:
    """Width, height and EXIF orientation from the header only (no pixel decoding).

    DICOM through pydicom without pixel data; everything else through PIL's lazy `Image.open`, which reads
    only the header (measured on 1,500 FracAtlas JPEGs: 0.12-0.19 ms a file).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError as exc:
        raise HeaderError(f"cannot open ({exc.strerror})") from exc
    if is_dicom(head, path):
        import pydicom

        try:
            with native_messages():  # pydicom warns about malformed values: the size is all that is asked here
                ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)  # force: no preamble
            width, height = int(ds.Columns), int(ds.Rows)
        except Exception as exc:  # pydicom raises many types
            raise HeaderError(f"unreadable DICOM header ({type(exc).__name__})") from exc
        if width <= 0 or height <= 0:
            raise HeaderError(f"DICOM header gives no size ({width} x {height})")
        return ImageHeader(width, height)
    if not head:
        raise HeaderError("empty file")

    try:
        # PIL warns on the terminal about what it tolerates ("Corrupt EXIF data"): not this function's question
        with native_messages(), _open_unlimited(path) as im:
            width, height = im.size
            orientation = 1
            if im.format in _EXIF_FORMATS:
                try:
                    orientation = int(im.getexif().get(0x0112, 1) or 1)
                except Exception:  # a malformed EXIF block: the film still reads, unrotated
                    orientation = 1
    except Exception as exc:  # PIL raises many types; Ultralytics' Image.open patch adds ImportError (pi_heif)
        kind = "" if isinstance(exc, ImportError) else f" ({type(exc).__name__})"
        raise HeaderError(f"not a readable image{kind}") from exc
    if not (width and height):
        raise HeaderError("image header gives no size")
    return ImageHeader(width, height, orientation if orientation in range(1, 9) else 1)


def _open_unlimited(path: str | Path) -> PILImage:
    """`Image.open` (header only), with PIL's decompression-bomb limit lifted for a film over it.

    PIL refuses to open an image over 2 x `Image.MAX_IMAGE_PIXELS` (179 megapixels) and warns over half that
    (`read_image` collects the warning); `check_pixels` applies fracturekit's own limit from the size read here.
    """
    from PIL import Image

    try:
        return Image.open(path)
    except Image.DecompressionBombError:
        with _PIL_SWITCH_LOCK:
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                return Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = previous


def apply_clahe(pixels: np.ndarray, clip_limit: float = 2.0, tile: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalization, the usual radiograph enhancement."""
    return cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile, tile)).apply(pixels)


def limit_side(pixels: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Downscale so the long side is at most `max_side`; returns the image and the scale applied."""
    if not max_side or max(pixels.shape[:2]) <= max_side:
        return pixels, 1.0
    scale = max_side / max(pixels.shape[:2])
    size = (max(1, round(pixels.shape[1] * scale)), max(1, round(pixels.shape[0] * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA), scale
