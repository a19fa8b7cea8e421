"""prepare(): bad files, metadata, grouping, layout contract and safety, on tiny data made here."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from fracturekit.core.errors import UserError
from fracturekit.core.layout import MANIFEST_COLUMNS, NEGATIVE_CLASS, POSITIVE_CLASS, SPLITS, PreparedDataset
from fracturekit.data.phantoms import generate_phantom, write_phantom_dataset
from fracturekit.prepare import data_hash, prepare


def _film(i: int, size: int = 64) -> np.ndarray:
    return generate_phantom(seed=7, index=i, size=size).image


def _folders(root: Path, n: int = 12) -> Path:
    """`fractured/` and `normal/` class folders with n phantom PNGs each."""
    for cls, offset in (("fractured", 0), ("normal", 1000)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(root / cls / f"{cls}_{i:03d}.png"), _film(offset + i))
    return root


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _row(out: Path, name: str) -> dict[str, str]:
    return next(r for r in _rows(out) if Path(r["source"]).name == name)


def _dicom_monochrome1(path: Path) -> np.ndarray:
    """A 12-bit MONOCHROME1 DICOM (bright = low values) with a PatientID; returns its stored pixels."""
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = (4095 - _film(5).astype(np.uint16) * 16).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.StudyInstanceUID = "PAT-42", generate_uid()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return pixels


def _write_corrupt(p: Path) -> None:
    p.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 10)


def _write_truncated(p: Path) -> None:
    data = cv2.imencode(".jpg", _film(3, 128))[1].tobytes()
    p.write_bytes(data[: int(len(data) * 0.7)])


def _write_16bit(p: Path) -> None:
    cv2.imwrite(str(p), _film(4).astype(np.uint16) * 200)


def _write_empty(p: Path) -> None:
    p.write_bytes(b"")


def _write_color(p: Path) -> None:
    img = cv2.cvtColor(_film(6), cv2.COLOR_GRAY2BGR)
    img[:8, :8] = (0, 0, 255)  # a red marker
    cv2.imwrite(str(p), img)


def _write_exif_rotated(p: Path) -> None:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(_film(8)).save(p, exif=exif)


@pytest.mark.parametrize(
    ("name", "writer", "status", "reason", "written_as"),
    [
        ("bad.jpg", _write_corrupt, "skipped", "unreadable image", None),  # garbage behind a JPEG header
        ("empty.png", _write_empty, "skipped", "empty file", None),  # zero bytes
        ("cut.jpg", _write_truncated, "ok", "", ".png"),  # truncated JPEG, recovered, re-written clean
        ("deep.png", _write_16bit, "ok", "", ".png"),  # 16-bit PNG windowed to 8 bits
        ("color.jpg", _write_color, "ok", "", ".png"),  # color JPEG converted to gray, so not copied
        ("film.dcm", lambda p: _dicom_monochrome1(p), "ok", "", ".png"),  # DICOM, MONOCHROME1
        ("turned.jpg", _write_exif_rotated, "ok", "", ".png"),  # EXIF orientation: not copied (YOLO would rotate)
        ("plain.jpg", lambda p: cv2.imwrite(str(p), _film(9)), "ok", "", ".jpg"),  # clean 8-bit JPEG: copied
    ],
)
def test_bad_and_unusual_files(
    tmp_path: Path, name: str, writer: Callable[[Path], object], status: str, reason: str, written_as: str | None
) -> None:
    src = _folders(tmp_path / "src", n=6)
    writer(src / "fractured" / name)
    res = prepare(src, tmp_path / "out", split=(0.5, 0.25, 0.25))
    row = _row(tmp_path / "out", name)
    assert row["status"] == status and reason in row["reason"]
    assert res.summary["images_in"] == 13 == res.summary["ok"] + res.summary["skipped"]
    if written_as:
        out_file = tmp_path / "out" / row["output_cls"]
        assert out_file.suffix == written_as
        img = cv2.imread(str(out_file), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint8 and img.ndim == 2


def test_dicom_inverted_and_grouped(tmp_path: Path) -> None:
    src = _folders(tmp_path / "src", n=4)
    stored = _dicom_monochrome1(src / "fractured" / "film.dcm")
    prepare(src, tmp_path / "out", split=(0.5, 0.25, 0.25))
    row = _row(tmp_path / "out", "film.dcm")
    img = cv2.imread(str(tmp_path / "out" / row["output_cls"]), cv2.IMREAD_UNCHANGED)
    # MONOCHROME1 inverted back: output correlates positively with the original film, not the stored values
    assert np.corrcoef(img.ravel(), _film(5).ravel())[0, 1] > 0.95
    assert np.corrcoef(img.ravel(), stored.ravel())[0, 1] < -0.95
    assert row["group"] == "PatientID:PAT-42" and row["PatientID"] == "PAT-42"


def test_meta_csv_join_groups_patients(phantom_coco: Path, tmp_path: Path) -> None:
    res = prepare(phantom_coco, tmp_path / "out", meta=phantom_coco / "metadata.csv", seed=3)
    rows = _rows(tmp_path / "out")
    assert {"patient_id", "region"} <= set(rows[0]) and list(rows[0])[: len(MANIFEST_COLUMNS)] == list(MANIFEST_COLUMNS)
    splits_of: dict[str, set[str]] = {}
    for r in rows:
        assert r["group"] == r["patient_id"] != ""
        splits_of.setdefault(r["group"], set()).add(r["split"])
    assert len(splits_of) == 30 and all(len(s) == 1 for s in splits_of.values())
    assert res.summary["groups"] == 30 and res.audit is not None and res.audit.leaks == 0


def test_group_regex(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for p in range(10):
        for view in ("ap", "lat"):
            cls = "fractured" if p % 2 else "normal"
            (src / cls).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(src / cls / f"P{p:03d}_{view}.png"), _film(p * 2 + (view == "lat")))
    prepare(src, tmp_path / "out", group_regex=r"^(P\d+)_", split=(0.6, 0.2, 0.2))
    rows = _rows(tmp_path / "out")
    assert {r["group"] for r in rows} == {f"P{p:03d}" for p in range(10)}
    for p in range(10):
        assert len({r["split"] for r in rows if r["group"] == f"P{p:03d}"}) == 1


def test_duplicate_copy_kept_in_one_split(tmp_path: Path) -> None:
    src = _folders(tmp_path / "src", n=15)
    flipped = cv2.resize(_film(3)[:, ::-1], (48, 48), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(src / "fractured" / "copy_of_3.jpg"), flipped, [cv2.IMWRITE_JPEG_QUALITY, 80])
    for seed in range(4):
        res = prepare(src, tmp_path / "out", seed=seed, exist_ok=True)
        assert _row(tmp_path / "out", "copy_of_3.jpg")["split"] == _row(tmp_path / "out", "fractured_003.png")["split"]
        assert res.audit is not None and res.audit.leaks == 0
        # the copy's cluster is exactly {copy, original}; other phantom look-alikes may form clusters of their own
        (cluster,) = [c for c in res.audit.clusters if any(m.path.endswith("copy_of_3.jpg") for m in c.members)]
        assert sorted(Path(m.path).name for m in cluster.members) == ["copy_of_3.jpg", "fractured_003.png"]


def test_layout_contract(prepared_phantoms: Path) -> None:
    root = prepared_phantoms
    data = yaml.safe_load((root / "det" / "data.yaml").read_text())
    assert "path" not in data and data["names"] == {0: POSITIVE_CLASS}
    assert [data[s] for s in SPLITS] == [f"images/{s}" for s in SPLITS]
    rows = _rows(root)
    for s in SPLITS:
        labels = {r["label"] for r in rows if r["split"] == s}
        assert labels == {POSITIVE_CLASS, NEGATIVE_CLASS}, s
        assert {p.name for p in (root / "cls" / s).iterdir()} == {POSITIVE_CLASS, NEGATIVE_CLASS}
    for r in rows:
        assert (root / r["output_cls"]).is_file() and (root / r["output_det"]).is_file()
        lines = (root / r["label_file"]).read_text().splitlines()
        boxes = json.loads(r["boxes"])
        assert len(lines) == len(boxes) and (r["label"] == POSITIVE_CLASS) == bool(boxes)
        for line, (_, x1, y1, x2, y2) in zip(lines, boxes, strict=True):
            c, cx, cy, w, h = (float(v) for v in line.split())
            assert c == 0 and abs(cx - (x1 + x2) / 2 / int(r["width"])) < 1e-4 and 0 < w <= 1
            assert abs(cy - (y1 + y2) / 2 / int(r["height"])) < 1e-4 and abs(h - (y2 - y1) / int(r["height"])) < 1e-4
    summary = json.loads((root / "prepare.json").read_text())
    assert summary["images_in"] == summary["ok"] == 60 and len(summary["data_hash"]) == 64
    assert (root / "audit" / "duplicates.csv").is_file() and (root / "audit" / "audit.json").is_file()


def test_max_side_scales_boxes(tmp_path: Path) -> None:
    src = write_phantom_dataset(tmp_path / "raw", n=8, seed=2, size=128, fmt="coco", fracture_prob=1.0)
    full = prepare(src, tmp_path / "full", seed=0)
    small = prepare(src, tmp_path / "small", seed=0, max_side=64)
    assert full.summary["written_png"] == 0 and small.summary["copied_byte_for_byte"] == 0
    for a, b in zip(_rows(tmp_path / "full"), _rows(tmp_path / "small"), strict=True):
        assert (int(b["width"]), int(b["height"])) == (64, 64)
        for box_a, box_b in zip(json.loads(a["boxes"]), json.loads(b["boxes"]), strict=True):
            assert np.allclose(np.array(box_a[1:]) / 2, box_b[1:], atol=0.01)


def test_clahe_changes_pixels_not_labels(tmp_path: Path) -> None:
    src = _folders(tmp_path / "src", n=3)
    prepare(src, tmp_path / "out", clahe=True, split=(0.34, 0.33, 0.33))
    row = _row(tmp_path / "out", "normal_000.png")
    out = cv2.imread(str(tmp_path / "out" / row["output_cls"]), cv2.IMREAD_UNCHANGED)
    assert row["label"] == NEGATIVE_CLASS and not np.array_equal(out, _film(1000))


def test_same_name_in_two_folders(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for cls in ("fractured", "normal"):
        for i in range(4):
            (src / cls).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(src / cls / f"img{i}.png"), _film(i + (cls == "normal") * 100))
    prepare(src, tmp_path / "out", split=(0.5, 0.25, 0.25))
    outs = [Path(r["output_cls"]).name for r in _rows(tmp_path / "out")]
    assert len(outs) == len(set(outs)) == 8


def test_keep_splits(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for s in ("train", "valid", "test"):
        _folders(src / s, n=3)
        for p in (src / s).rglob("*.png"):
            p.rename(p.with_name(f"{s}_{p.name}"))
    prepare(src, tmp_path / "out", keep_splits=True)
    for r in _rows(tmp_path / "out"):
        assert Path(r["source"]).name.startswith({"val": "valid"}.get(r["split"], r["split"]))


@pytest.mark.parametrize(
    ("out_of", "message"),
    [
        (lambda src: src, "inside the source"),  # out == source
        (lambda src: src / "prepared", "inside the source"),  # out inside source
        (lambda src: src.parent, "contains the source"),  # out would replace the source's parent
        (lambda src: src.parent / "notes", "already holds files"),  # a user folder with files
    ],
)
def test_refused_outputs(tmp_path: Path, out_of: Callable[[Path], Path], message: str) -> None:
    src = _folders(tmp_path / "src", n=2)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match=message):
        prepare(src, out_of(src))
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": Path("/nonexistent/ds")}, "no such folder"),  # wrong path
        ({"fmt": "dicomdir"}, "unknown format"),  # unknown format
        ({"split": (0.5, 0.5, 0.5)}, "summing to 1"),  # bad ratios
        ({"group_regex": "(unclosed"}, "not a valid regular expression"),  # bad regex
        ({"meta": Path("/nonexistent/meta.csv")}, "no such file"),  # missing meta CSV
    ],
)
def test_user_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"source": _folders(tmp_path / "src", n=2), "out": tmp_path / "out"} | kwargs
    with pytest.raises(UserError, match=message):
        prepare(**args)
    assert not (tmp_path / "out").exists()


def test_interrupted_run_leaves_no_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fracturekit.prepare as mod

    src = _folders(tmp_path / "src", n=3)

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(mod, "_assemble", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(src, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_rerun_replaces_previous_dataset(tmp_path: Path) -> None:
    src = _folders(tmp_path / "src", n=4)
    first = prepare(src, tmp_path / "out", seed=0).summary["data_hash"]
    (src / "normal" / "normal_000.png").unlink()
    second = prepare(src, tmp_path / "out", seed=0, exist_ok=True).summary
    assert second["ok"] == 7 and second["data_hash"] != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_other_pixel_options_make_another_dataset_version(tmp_path: Path) -> None:
    """Prepared again with --clahe or --max-side, the same films, labels and split are written as other pixels: a
    model trained on the first is not scored on the second as if it were its own dataset."""
    src = _folders(tmp_path / "src", n=4)
    out = tmp_path / "out"
    plain = prepare(src, out, seed=0).summary
    assert plain["pixels"] is None
    # films as read: the hash over the films alone, as datasets prepared before pixel options entered it have
    assert plain["data_hash"] == data_hash((r["sha256"], r["split"], r["label"], "null") for r in _rows(out))
    hashes = {plain["data_hash"]}
    for kw, pixels in (
        ({"clahe": True}, "clahe"),  # CLAHE alone
        ({"max_side": 64}, "max_side=64"),  # shrunk alone
        ({"clahe": True, "max_side": 64}, "clahe,max_side=64"),  # both
    ):
        summary = prepare(src, out, seed=0, exist_ok=True, **kw).summary
        assert summary["pixels"] == pixels and PreparedDataset(out).recorded_pixels() == pixels
        assert summary["per_split"] == plain["per_split"]  # the same split ...
        hashes.add(summary["data_hash"])  # ... and yet another version
    assert len(hashes) == 4
    again = prepare(src, out, seed=0, exist_ok=True).summary  # back to films as read: the first version again
    assert again["data_hash"] == plain["data_hash"]


def test_preset_mura_groups_by_patient_folder(tmp_path: Path) -> None:
    """The `mura` preset's group_regex finds the patient in the folder path, not in the file name."""
    src = tmp_path / "MURA"
    for p in range(8):
        study = src / "train" / "XR_WRIST" / f"patient{p:05d}" / f"study1_{'positive' if p % 2 else 'negative'}"
        study.mkdir(parents=True)
        for k in range(2):
            cv2.imwrite(str(study / f"image{k + 1}.png"), _film(p * 2 + k))
    res = prepare(src, tmp_path / "out", preset="mura", split=(0.5, 0.25, 0.25))
    rows = _rows(tmp_path / "out")
    assert {r["group"] for r in rows} == {f"{p:05d}" for p in range(8)} and res.summary["groups"] == 8
    assert {r["label"] for r in rows} == {POSITIVE_CLASS, NEGATIVE_CLASS}
    for p in range(8):
        assert len({r["split"] for r in rows if r["group"] == f"{p:05d}"}) == 1


def test_meta_key_column_by_stem(tmp_path: Path) -> None:
    """A CSV keyed by file stem (GRAZPEDWRI-DX's `filestem`) with a patient column groups the films."""
    src = _folders(tmp_path / "src", n=6)
    lines = ["filestem,patient_id,age"]
    lines += [f"{cls}_{i:03d},PT{i // 2},{20 + i}" for cls in ("fractured", "normal") for i in range(6)]
    (tmp_path / "meta.csv").write_text("\n".join(lines) + "\n")
    prepare(src, tmp_path / "out", meta=tmp_path / "meta.csv", split=(0.5, 0.25, 0.25))
    rows = _rows(tmp_path / "out")
    assert all(r["group"] == r["patient_id"] and r["age"] for r in rows)
    for g in {r["group"] for r in rows}:
        assert len({r["split"] for r in rows if r["group"] == g}) == 1


def test_reader_skips_are_counted(tmp_path: Path) -> None:
    """COCO entries for a missing file and a `../` escape are reported: images in == ok + skipped."""
    src = write_phantom_dataset(tmp_path / "raw", n=10, seed=4, size=64, fmt="coco")
    coco = json.loads((src / "annotations.json").read_text())
    coco["images"] += [
        {"id": 901, "file_name": "gone.png", "width": 64, "height": 64},
        {"id": 902, "file_name": "../outside.png", "width": 64, "height": 64},
    ]
    cv2.imwrite(str(tmp_path / "outside.png"), _film(1))
    (src / "annotations.json").write_text(json.dumps(coco))
    s = prepare(src, tmp_path / "out", split=(0.6, 0.2, 0.2)).summary
    assert (s["images_in"], s["ok"], s["skipped"]) == (12, 10, 2)
    skipped = {r["source"]: r["reason"] for r in _rows(tmp_path / "out") if r["status"] == "skipped"}
    assert sorted(re.split(r"[/ ]", name)[-1] for name in skipped) == ["gone.png", "outside.png"]
    assert all(skipped.values())  # each with its reason


def test_nothing_usable_is_a_user_error(tmp_path: Path) -> None:
    src = tmp_path / "src" / "fractured"
    src.mkdir(parents=True)
    for i in range(3):
        _write_corrupt(src / f"bad{i}.jpg")
    with pytest.raises(UserError, match="none of the 3 images is usable"):
        prepare(src.parent, tmp_path / "out", fmt="folders")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_unexpected_error_on_one_file_skips_only_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fracturekit.prepare.decode as mod

    src = _folders(tmp_path / "src", n=3)
    real = mod.read_image

    def flaky(path: Path, *args: object) -> object:
        if Path(path).name == "normal_001.png":
            raise ValueError("decoder bug")
        return real(path, *args)

    monkeypatch.setattr(mod, "read_image", flaky)
    s = prepare(src, tmp_path / "out", split=(0.34, 0.33, 0.33)).summary
    assert (s["ok"], s["skipped"]) == (5, 1)
    assert _row(tmp_path / "out", "normal_001.png")["reason"] == "failed: ValueError: decoder bug"
