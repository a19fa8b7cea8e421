"""Property-based fuzzing (hypothesis) of every reader a user's files reach: COCO JSON, Pascal VOC XML, YOLO
labels + data.yaml, FracAtlas' CSVs, a --meta CSV, DICOM headers and image headers.

The property: random structure and values, wrong types, huge numbers, truncations, non-UTF-8 bytes and deep
nesting give every file a one-line reason (a skipped entry, a problem, a note) or one `UserError` sentence;
never another exception, never a hang (pytest-timeout). The suite runs a fixed seed budget (`derandomize`);
FRACTUREKIT_FUZZ_EXAMPLES=N runs N random examples per reader instead (the long campaign)."""

from __future__ import annotations

import json
import os
import string
import struct
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, reject, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fracturekit.core.errors import UserError  # noqa: E402
from fracturekit.data.imageio import HeaderError, ImageReadError, image_header, read_image  # noqa: E402
from fracturekit.ingest.records import IngestResult  # noqa: E402
from fracturekit.ingest.source import load_source  # noqa: E402

CAMPAIGN = int(os.environ.get("FRACTUREKIT_FUZZ_EXAMPLES", "0"))


def budget(n: int) -> Callable:
    """`n` derandomized examples in the suite (about 1-5 s a reader here), or the campaign's random ones."""
    return settings(
        max_examples=CAMPAIGN or n,
        derandomize=not CAMPAIGN,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


FILM = cv2.imencode(".png", np.full((16, 16), 90, np.uint8))[1].tobytes()
NAMES = st.sampled_from(["a.png", "b.png", "missing.png", "../a.png", "/etc/passwd", "", "a", "images/a.png"])
NUMBERS = st.one_of(
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 16, 8, -1, 2**31, 2**63]),
)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, NAMES)
JSON = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(TEXT, c, max_size=4), max_leaves=12)


def mangle(text: str) -> st.SearchStrategy[bytes]:
    """The file as written, or cut short, or with bytes that are not UTF-8, or with its bytes shuffled in."""
    data = text.encode("utf-8")
    return st.one_of(
        st.just(data),
        st.integers(0, max(0, len(data) - 1)).map(lambda k: data[:k]),
        st.binary(max_size=8).map(
            lambda junk: data[: len(data) // 2] + b"\xff\xfe\x80" + junk + data[len(data) // 2 :]
        ),
        st.just(data.decode("utf-8").encode("utf-16")),
    )


def one_sentence(text: str) -> None:
    assert text.strip() and "\n" not in text.strip() and "Traceback" not in text, repr(text)


def quiet(read: Callable[[], object]) -> object:
    """`read()`, asserting that no Python warning escapes it to the terminal (PIL's, pydicom's, ours)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return read()
        finally:
            assert not caught, [str(w.message) for w in caught]


def check(read: Callable[[], IngestResult | object]) -> None:
    """The property: a result whose every reason is one line, or a UserError of one line; no warning printed."""
    try:
        result = quiet(read)
    except UserError as exc:
        one_sentence(str(exc))
        return
    if isinstance(result, IngestResult):
        for s in result.skipped:
            one_sentence(s.reason)
        for rec in result.records:
            for problem in rec.problems:
                one_sentence(problem)
        for note in result.notes:
            one_sentence(note)


def _dataset(files: dict[str, bytes]) -> tuple[tempfile.TemporaryDirectory, Path]:
    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name) / "ds"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return tmp, root


# ------------------------------------------------------------------------------------------------ COCO JSON
COCO_IMAGE = st.fixed_dictionaries(
    {"id": st.one_of(st.integers(0, 3), SCALARS), "file_name": st.one_of(NAMES, SCALARS)},
    optional={"width": st.one_of(st.just(16), NUMBERS, SCALARS), "height": st.one_of(st.just(16), NUMBERS, SCALARS)},
)
COCO_ANNOTATION = st.fixed_dictionaries(
    {
        "image_id": st.one_of(st.integers(0, 3), SCALARS),
        "category_id": st.one_of(st.integers(0, 3), SCALARS),
        "bbox": st.one_of(st.lists(st.one_of(st.integers(-5, 40), NUMBERS), max_size=5), SCALARS, JSON),
    },
    optional={"id": SCALARS, "iscrowd": SCALARS, "segmentation": JSON},
)
COCO_CATEGORY = st.fixed_dictionaries(
    {"id": st.one_of(st.integers(0, 3), SCALARS), "name": st.one_of(st.sampled_from(["fracture", "0", "1"]), TEXT)}
)
COCO = st.one_of(
    st.fixed_dictionaries(
        {
            "images": st.one_of(st.lists(COCO_IMAGE, max_size=4), JSON),
            "annotations": st.one_of(st.lists(COCO_ANNOTATION, max_size=5), JSON),
            "categories": st.one_of(st.lists(COCO_CATEGORY, max_size=3), JSON),
        }
    ),
    JSON,
)


@pytest.mark.timeout(120)
@budget(80)
@given(data=st.data(), doc=COCO)
def test_coco(data: st.DataObject, doc: object) -> None:
    raw = data.draw(mangle(json.dumps(doc)))
    tmp, root = _dataset({"a.png": FILM, "b.png": FILM, "annotations/instances_train.json": raw})
    with tmp:
        check(lambda: load_source(root, fmt="coco"))


def test_coco_deep_nesting() -> None:
    # 100,000 nested lists: json raises RecursionError, which must not escape
    tmp, root = _dataset(
        {"a.png": FILM, "instances_train.json": b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"}
    )
    with tmp:
        check(lambda: load_source(root, fmt="coco"))


# ------------------------------------------------------------------------------------------------ Pascal VOC
XML_TAGS = st.sampled_from(
    ["annotation", "filename", "path", "size", "width", "height", "object", "name", "bndbox", "xmin", "ymin",
     "xmax", "ymax", "difficult", "folder"]
)  # fmt: skip
XML_TEXT = st.one_of(st.just("a.png"), st.integers(-5, 40).map(str), NUMBERS.map(str), TEXT, NAMES)


def _xml(tree: object) -> str:
    if isinstance(tree, tuple):
        tag, children = tree
        inner = "".join(_xml(c) for c in children) if isinstance(children, list) else _escape(children)
        return f"<{tag}>{inner}</{tag}>"
    return _escape(str(tree))


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;")


XML_TREE = st.recursive(
    st.tuples(XML_TAGS, XML_TEXT), lambda c: st.tuples(XML_TAGS, st.lists(c, max_size=4)), max_leaves=16
)


@pytest.mark.timeout(120)
@budget(80)
@given(data=st.data(), tree=XML_TREE)
def test_voc(data: st.DataObject, tree: object) -> None:
    raw = data.draw(mangle("<annotation>" + _xml(tree) + "</annotation>"))
    tmp, root = _dataset({"JPEGImages/a.png": FILM, "Annotations/a.xml": raw})
    with tmp:
        check(lambda: load_source(root, fmt="voc"))


def test_voc_entity_expansion() -> None:
    # "billion laughs": expat refuses the amplification instead of expanding gigabytes
    lol = '<!DOCTYPE a [<!ENTITY l "lol">' + "".join(
        f'<!ENTITY l{i} "{("&l" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10)
    )
    raw = f"{lol}]><annotation><filename>a.png</filename><object><name>&l9;</name></object></annotation>"
    tmp, root = _dataset({"JPEGImages/a.png": FILM, "Annotations/a.xml": raw.encode()})
    with tmp:
        check(lambda: load_source(root, fmt="voc"))


# ------------------------------------------------------------------------------------------------ YOLO
YOLO_YAML = st.fixed_dictionaries(
    {},
    optional={
        "names": st.one_of(
            st.lists(st.one_of(st.just("fracture"), TEXT), max_size=3),
            st.dictionaries(st.one_of(st.integers(-2, 4), TEXT), st.one_of(st.just("fracture"), TEXT), max_size=3),
            SCALARS,
        ),
        "nc": st.one_of(st.integers(-1, 4), SCALARS),
        "path": st.one_of(st.just("."), NAMES, SCALARS),
        "train": st.one_of(st.just("images/train"), NAMES, SCALARS, st.lists(NAMES, max_size=2)),
        "val": st.one_of(st.just("images/train"), NAMES, SCALARS),
    },
)
YOLO_TOKEN = st.one_of(
    st.integers(-1, 3).map(str),
    st.floats(-1, 2).map(str),
    NUMBERS.map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", "", "fracture"]),
)
YOLO_LINES = st.lists(st.lists(YOLO_TOKEN, max_size=7).map(" ".join), max_size=5).map("\n".join)


@pytest.mark.timeout(120)
@budget(80)
@given(data=st.data(), spec=YOLO_YAML, labels=YOLO_LINES)
def test_yolo(data: st.DataObject, spec: dict, labels: str) -> None:
    raw_yaml = data.draw(mangle(yaml.safe_dump(spec, allow_unicode=True)))
    raw_labels = data.draw(mangle(labels))
    files = {"data.yaml": raw_yaml, "images/train/a.png": FILM, "labels/train/a.txt": raw_labels}
    tmp, root = _dataset(files)
    with tmp:
        check(lambda: load_source(root, fmt="yolo"))


# ------------------------------------------------------------------------------------------------ FracAtlas
CSV_CELL = st.one_of(st.sampled_from(["IMG0000001.jpg", "a.jpg", "1", "0", "", "hand", '"', ","]), TEXT)
CSV_HEADER = st.lists(
    st.one_of(st.sampled_from(["image_id", "fractured", "hand", "leg", "hip", "shoulder", "frontal"]), TEXT),
    min_size=1,
    max_size=5,
)


def _csv(header: list[str], rows: list[list[str]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


CSV_TEXT = st.builds(_csv, CSV_HEADER, st.lists(st.lists(CSV_CELL, max_size=6), max_size=4))


@pytest.mark.timeout(120)
@budget(60)
@given(data=st.data(), table=CSV_TEXT, split=CSV_TEXT, labels=YOLO_LINES)
def test_fracatlas(data: st.DataObject, table: str, split: str, labels: str) -> None:
    files = {
        "images/Fractured/a.jpg": FILM,
        "images/Non_fractured/b.jpg": FILM,
        "dataset.csv": data.draw(mangle(table)),
        "splits/train.csv": data.draw(mangle(split)),
        "Annotations/YOLO/a.txt": data.draw(mangle(labels)),
    }
    tmp, root = _dataset(files)
    with tmp:
        check(lambda: load_source(root, fmt="fracatlas"))


# ------------------------------------------------------------------------------------------------ --meta CSV
@pytest.mark.timeout(120)
@budget(60)
@given(data=st.data(), table=CSV_TEXT)
def test_meta_csv(data: st.DataObject, table: str) -> None:
    from fracturekit.prepare.film import _Film
    from fracturekit.prepare.grouping import _join_meta

    tmp, root = _dataset({"a.jpg": FILM, "meta.csv": data.draw(mangle(table))})
    with tmp:
        films = [_Film(source=str(root / "a.jpg"), record=None, rel="a.jpg")]
        check(lambda: _join_meta(films, root / "meta.csv", None, None))
        for film in films:
            for warning in film.warnings:
                one_sentence(warning)


# ------------------------------------------------------------------------------------------------ DICOM headers
DICOM_VALUES = st.fixed_dictionaries(
    {
        "Rows": st.one_of(st.integers(0, 65_535), st.just(16)),
        "Columns": st.one_of(st.integers(0, 65_535), st.just(16)),
        "BitsAllocated": st.sampled_from([1, 8, 12, 16, 32, 64, 0, 7]),
        "SamplesPerPixel": st.sampled_from([1, 3, 0, 4]),
        "PhotometricInterpretation": st.sampled_from(["MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "", "X"]),
        "PixelRepresentation": st.sampled_from([0, 1, 2]),
    },
    optional={"NumberOfFrames": st.one_of(st.integers(0, 10**6), st.sampled_from(["", "1", "0"]))},
)


@pytest.mark.timeout(120)
@budget(80)
@given(values=DICOM_VALUES, pixels=st.binary(max_size=2048), cut=st.integers(0, 4096), truncate=st.booleans())
def test_dicom_headers(values: dict, pixels: bytes, cut: int, truncate: bool) -> None:
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for key, value in values.items():
        setattr(ds, key, value)
    ds.BitsStored, ds.HighBit = max(1, ds.BitsAllocated), max(0, ds.BitsAllocated - 1)
    ds.PixelData = pixels + (b"\x00" if len(pixels) % 2 else b"")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "film.dcm"
        try:
            ds.save_as(str(path), enforce_file_format=True)
        except (OSError, ValueError, struct.error):
            reject()  # a value pydicom itself cannot write: not a file a user could have
        if truncate:
            path.write_bytes(path.read_bytes()[:cut])
        _read_any(path)


# ------------------------------------------------------------------------------------------------ image headers
MAGIC = st.sampled_from(
    [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
     b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"P5\n", b"\x00\x00\x00\x0cjP  \r\n\x87\n"]
)  # fmt: skip


@pytest.mark.timeout(120)
@budget(120)
@given(
    magic=MAGIC,
    sizes=st.lists(st.integers(0, 2**32 - 1), min_size=2, max_size=2),
    rest=st.binary(max_size=256),
    real=st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".tif", ".webp"]),
    cut=st.integers(0, 400),
    kind=st.sampled_from(["header", "cut"]),
)
def test_image_headers(magic: bytes, sizes: list[int], rest: bytes, real: str, cut: int, kind: str) -> None:
    if kind == "header":  # a format's magic, then random sizes and bytes
        data = magic + b"".join(s.to_bytes(4, "big") for s in sizes) + rest
    else:  # a real small file of that format cut short
        data = _encoded(real, cut)[:cut]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"film{real}"
        path.write_bytes(data)
        _read_any(path)


def _encoded(suffix: str, seed: int) -> bytes:
    """A small random film in the format of `suffix`, encoded by PIL (OpenCV's GIF encoder refuses some)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 20), np.uint8)).save(
        buf, format={".jpg": "JPEG", ".tif": "TIFF"}.get(suffix, suffix[1:].upper())
    )
    return buf.getvalue()


def _read_any(path: Path) -> None:
    """image_header and read_image give a size or an image, else their one-line error; nothing else."""
    try:
        header = quiet(lambda: image_header(path))
        assert header.width > 0 and header.height > 0
    except HeaderError as exc:
        one_sentence(str(exc))
    try:
        img = quiet(lambda: read_image(path))
        assert img.pixels.dtype == np.uint8 and img.pixels.ndim == 2
        for note in img.warnings:
            one_sentence(note)
    except ImageReadError as exc:
        one_sentence(str(exc))


def test_the_fuzzers_are_not_empty() -> None:
    # the mangling strategies produce invalid UTF-8 and cut files, not only well-formed ones
    seen = set()

    @settings(max_examples=50, derandomize=True, database=None)
    @given(mangle('{"images": []}'))
    def probe(raw: bytes) -> None:
        try:
            json.loads(raw)
            seen.add("valid")
        except (ValueError, UnicodeDecodeError):
            seen.add("invalid")

    probe()
    assert seen == {"valid", "invalid"}
    assert set(string.digits) <= set("0123456789")
