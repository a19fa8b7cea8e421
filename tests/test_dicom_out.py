"""predict --dicom-out sr,sc on a folder of DICOM films: SR boxes equal predictions.json's to the pixel, every
object passes dciodvfy, the SC renders (dcmtk's dcmj2pnm) as predict's annotated image."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
import pytest
from conftest import SHARED_DATA
from dicom_films import dciodvfy, make_film
from pydicom.uid import generate_uid

hd = pytest.importorskip("highdicom", reason="highdicom is absent (pip install 'fracturekit[dicom]')")


@pytest.fixture(scope="module")
def dicom_run(tiny_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(films, out): three DICOM films (CR, DX MONOCHROME1, CR with a VOI LUT) and a PNG, predicted with sr,sc."""
    from fracturekit.data.phantoms import generate_phantom
    from fracturekit.predict import predict

    films = tmp_path_factory.mktemp("dicom-films")
    real = sorted((SHARED_DATA / "fracatlas" / "images" / "Fractured").glob("*.jpg"))[3:4]
    big = cv2.imread(str(real[0]), cv2.IMREAD_GRAYSCALE) if real else generate_phantom(9, 0, size=512).image
    study = generate_uid()
    for k, (kind, pixels) in enumerate(
        [("cr", generate_phantom(4, 1, size=128).image), ("dx-mono1", big), ("cr-voilut", generate_phantom(4, 2).image)]
    ):
        make_film(pixels, films / f"{kind}.dcm", kind=kind, patient_id="P9", study_uid=study, instance_number=k + 1)
    cv2.imwrite(str(films / "plain.png"), generate_phantom(4, 3, size=128).image)  # not DICOM: no SR/SC
    out = tmp_path_factory.mktemp("dicom-out") / "out"
    predict(films, detector=tiny_runs["detect"], out=out, conf=0.01, dicom_out="sr,sc", device="cpu")
    return films, out


def _records(out: Path) -> dict[str, dict[str, Any]]:
    return {r["path"]: r for r in json.loads((out / "predictions.json").read_text())["images"]}


def _pixels(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """The pixels a box covers, first and last column and row: SCOORD 0.0 is the top-left pixel's outer corner."""
    x1, y1, x2, y2 = box
    return math.floor(x1), math.floor(y1), math.ceil(x2) - 1, math.ceil(y2) - 1


def test_sr_boxes_match_predictions_to_the_pixel(dicom_run: tuple[Path, Path]) -> None:
    from fracturekit.hospital.dicom_out import polyline_box

    films, out = dicom_run
    records = _records(out)
    assert sorted(p.name for p in (out / "dicom").iterdir()) == sorted(
        f"{k}.{t}.dcm" for k in ("cr", "dx-mono1", "cr-voilut") for t in ("sr", "sc")
    )
    n_boxes = 0
    for kind in ("cr", "dx-mono1", "cr-voilut"):
        rec, source = records[f"{kind}.dcm"], pydicom.dcmread(films / f"{kind}.dcm", stop_before_pixels=True)
        sr = hd.sr.srread(out / "dicom" / f"{kind}.sr.dcm")
        groups = sr.content.get_planar_roi_measurement_groups()
        assert len(groups) == len(rec["boxes"])
        for group, box in zip(groups, rec["boxes"], strict=True):
            region = group.roi
            assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
            assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
            in_sr = polyline_box(region.value)
            in_json = (box["x1"], box["y1"], box["x2"], box["y2"])
            print(f"{kind}: SR {np.round(in_sr, 3).tolist()} -> pixels {_pixels(in_sr)}; json {list(in_json)}")
            assert np.allclose(in_sr, in_json, atol=1e-3)  # float32 in the SR, 0.1 px in the JSON
            assert _pixels(in_sr) == _pixels(in_json)
            assert group.finding_type.value == "125605004"
            (certainty,) = group.get_measurements()
            assert certainty.value == pytest.approx(box["confidence"], abs=1e-6)
            n_boxes += 1
        (film,) = sr.content.get_image_measurement_groups()
        values = {m.name.value: m.value for m in film.get_measurements()}
        assert values == pytest.approx({"122157": rec["fracture_probability"], "122411": rec["threshold"]})
        (decision,) = film.get_qualitative_evaluations()
        assert decision.value.value == ("52101004" if rec["decision"] == "fracture" else "272519000")
    assert n_boxes > 0  # the tiny detector does draw boxes at --conf 0.01, so the comparison ran


def test_dicom_objects_pass_dciodvfy(dicom_run: tuple[Path, Path]) -> None:
    films, out = dicom_run
    for path in sorted((out / "dicom").iterdir()):
        errors, warnings = dciodvfy(path)
        print(path.name, "warnings:", warnings)
        assert errors == [], (path.name, errors)
        ds, source = pydicom.dcmread(path), pydicom.dcmread(films / f"{path.name.split('.')[0]}.dcm")
        assert ds.StudyInstanceUID == source.StudyInstanceUID and ds.PatientID == source.PatientID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID and ds.SOPInstanceUID != source.SOPInstanceUID
        assert ds.Manufacturer == "fracturekit"


def test_sc_renders_as_predicts_annotated_image(dicom_run: tuple[Path, Path], tmp_path: Path) -> None:
    """dcmj2pnm (dcmtk), a viewer's decoder, renders the SC as the annotated JPEG predict writes (up to JPEG loss)."""
    exe = shutil.which("dcmj2pnm")
    if exe is None:
        pytest.skip("dcmj2pnm is absent (Debian package dcmtk; `make test` installs it where it runs as root)")
    _, out = dicom_run
    png = tmp_path / "sc.png"
    subprocess.run([exe, "--write-png", str(out / "dicom" / "dx-mono1.sc.dcm"), str(png)], check=True, timeout=60)
    shown, drawn = cv2.imread(str(png)), cv2.imread(str(out / "dx-mono1.jpg"))
    assert shown.shape == drawn.shape
    assert np.abs(shown.astype(int) - drawn.astype(int)).mean() < 3  # JPEG quality loss only


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dicom_out": "sr,seg"}, "seg is not one of sr, sc"),  # an object kind fracturekit does not write
        ({"push": True, "dicom_out": "sr"}, "need --source dicomweb://"),  # --push from a folder
        ({"studies": ["1.2.3"]}, "need --source dicomweb://"),  # a PACS filter on a folder
        ({"source": "dicomweb://127.0.0.1:9/x", "push": True}, "--push stores the DICOM findings"),  # nothing to push
    ],
)
def test_dicom_option_errors(kwargs: dict[str, Any], message: str, tmp_path: Path) -> None:
    from fracturekit.core.errors import UserError
    from fracturekit.predict import predict

    source = kwargs.pop("source", tmp_path)
    with pytest.raises(UserError, match=message):
        predict(source, detector=tmp_path / "none.pt", out=tmp_path / "out", **kwargs)


def test_since_must_be_a_date() -> None:
    from fracturekit.core.errors import UserError
    from fracturekit.hospital.pacs import parse_since

    assert parse_since("2026-01-31") == "20260131-"
    with pytest.raises(UserError, match="YYYY-MM-DD"):
        parse_since("31/01/2026")


@pytest.mark.parametrize(
    "box",
    [
        (10.5, 20.3, 100.7, 64.1),  # fractional corners inside the film
        (0.0, 0.0, 1.0, 1.0),  # the top-left pixel alone: SCOORD 0.0 is its outer corner
        (126.9, 3.2, 128.0, 127.9),  # touching the right edge
    ],
)
def test_sr_box_round_trip(box: tuple[float, float, float, float], tmp_path: Path) -> None:
    """A box written to an SR and read back with highdicom lands on the same pixels (no half-pixel shift)."""
    from fracturekit.data.phantoms import generate_phantom
    from fracturekit.hospital.dicom_out import Algorithm, polyline_box, structured_report

    src = make_film(
        generate_phantom(1, 0, size=128).image, tmp_path / "f.dcm", kind="cr", patient_id="P", study_uid="1.2.3"
    )
    x1, y1, x2, y2 = box
    rec = {
        "boxes": [{"x1": x1, "y1": y1, "x2": x2, "y2": y2, "confidence": 0.61, "class": "fracture"}],
        "fracture_probability": 0.61,
        "threshold": 0.3,
        "decision": "fracture",
        "score_source": "detector",
    }
    alg = Algorithm("run", "best.pt", "0" * 64)
    structured_report(src, rec, alg, alg, generate_uid(), 1).save_as(tmp_path / "f.sr.dcm", enforce_file_format=True)
    (group,) = hd.sr.srread(tmp_path / "f.sr.dcm").content.get_planar_roi_measurement_groups()
    back = polyline_box(group.roi.value)
    assert np.allclose(back, box, atol=1e-4) and _pixels(back) == _pixels(box)


def test_film_without_uids_gets_a_warning_not_a_stop(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    """A DICOM film that decodes but has no SOP Instance UID is scored; its row says why it has no SR."""
    from fracturekit.data.phantoms import generate_phantom
    from fracturekit.predict import predict

    films = tmp_path / "films"
    ds = make_film(generate_phantom(2, 0, size=64).image, films / "f.dcm", kind="cr", patient_id="P", study_uid="1.2")
    del ds.SOPInstanceUID
    ds.save_as(films / "f.dcm", enforce_file_format=False)
    (rec,) = predict(films, detector=tiny_runs["detect"], out=tmp_path / "out", dicom_out="sr", device="cpu")
    assert not rec["error"] and any("no DICOM output" in w for w in rec["warnings"]), rec["warnings"]
    assert not (tmp_path / "out" / "dicom" / "f.sr.dcm").exists()
