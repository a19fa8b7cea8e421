"""Read any X-ray file the toolkit accepts into a normalized 8-bit image.

One reader for `prepare` and `predict`, so a film looks the same to the model at training and at
inference time. JPEG/PNG/BMP/TIFF (8- or 16-bit, gray or color) go through OpenCV; DICOM through
pydicom (modality + VOI LUT, MONOCHROME1 inverted). Truncated JPEGs are recovered when decodable.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"})
# PIL's truncated-image switch is a process-wide global: hold this while it is flipped (prepare decodes in threads).
_PIL_TRUNCATED_LOCK = threading.Lock()


class ImageReadError(Exception):
    """A file that cannot be turned into an image; the message is the reason shown to the user."""


@dataclass
class LoadedImage:
    """A decoded film: `pixels` is uint8 gray (H, W); `meta` holds DICOM grouping tags."""

    pixels: np.ndarray
    source_bit_depth: int
    meta: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

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


def _read_raster(path: Path) -> LoadedImage:
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise ImageReadError("empty file")
    notes: list[str] = []
    is_jpeg = data[:2].tobytes() == b"\xff\xd8"
    # A complete JPEG ends with the EOI marker FFD9 (trailing padding bytes tolerated): look in the bytes
    # already read rather than opening the file again.
    if is_jpeg and b"\xff\xd9" not in data[-64:].tobytes():
        notes.append("truncated JPEG: decoded what was present")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None and is_jpeg:
        img = _decode_truncated_with_pil(path)
    if img is None:
        raise ImageReadError("not a decodable image (corrupt or unsupported format)")
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
    if min(pixels.shape[:2]) < 8:
        raise ImageReadError(f"image too small ({pixels.shape[1]}x{pixels.shape[0]} px)")
    return LoadedImage(pixels=np.ascontiguousarray(pixels), source_bit_depth=depth, warnings=notes)


def _decode_truncated_with_pil(path: Path) -> np.ndarray | None:
    """PIL can decode some truncated JPEGs that OpenCV rejects outright."""
    from PIL import Image, ImageFile

    with _PIL_TRUNCATED_LOCK:
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("L"))
        except Exception:
            return None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _read_dicom(path: Path) -> LoadedImage:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(str(path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
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
    return LoadedImage(pixels=pixels, source_bit_depth=int(getattr(ds, "BitsStored", 16)), meta=meta)


def read_image(path: str | Path) -> LoadedImage:
    """Decode one film to 8-bit gray, or raise ImageReadError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError("file not found")
    with path.open("rb") as f:
        head = f.read(132)
    if path.suffix.lower() in (".dcm", ".dicom") or head[128:132] == b"DICM":
        return _read_dicom(path)
    return _read_raster(path)


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
