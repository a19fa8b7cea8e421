"""predict's DICOM outputs for a DICOM film: a TID 1500 Structured Report and a Secondary Capture, built with highdicom.

`sr`: a Comprehensive SR holding a TID 1500 Measurement Report. Each predicted box is one planar ROI group
(TID 1410) whose region is a closed SCOORD POLYLINE on the source image (SCOORD has no RECTANGLE graphic type,
PS3.3 C.18.6.1.2, so a box is its 5 corners, the first repeated), finding type SNOMED CT 125605004 "Fracture of
bone", with the box confidence as DCM 111012 "Certainty of Finding" (the CAD term for how sure the algorithm is
of one finding, CID 6048). One film-level group (TID 1501) holds the fracture probability (DCM 122157
"Probability"), the tuned threshold (DCM 122411 "Threshold Value") and the decision as a qualitative
evaluation: "Fracture of bone" = SNOMED CT 52101004 "Present" / 272519000 "Absent". Every group carries the
algorithm identification (TID 4019): name fracturekit, its version, and as parameters the model's run name,
weights file and sha256. SCOORD coordinates are the film's pixel coordinates as they are: both count from the
top-left corner of the top-left pixel (0.0\\0.0), so a box (x1, y1, x2, y2) is written unchanged.

`sc`: a Secondary Capture (RGB, burned-in annotation YES) of the annotated film predict draws as JPEG, for
viewers that render neither SR nor presentation states. A Grayscale Softcopy Presentation State would keep the
original pixels, but it only shows where the viewer implements GSPS and holds the source film too; a picture
shows everywhere, dcmj2pnm included.

Both copy the Patient and General Study modules from the source (highdicom does, from the evidence / reference
dataset) and nothing else of it; they get a new series, new UIDs and fracturekit as their General Equipment
(PS3.3 C.7.5.1: the equipment that produced this object, not the modality that took the film).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fracturekit import __version__
from fracturekit.data.hashing import file_sha256

KINDS = ("sr", "sc")
MANUFACTURER = "fracturekit"
SERIES_NUMBERS = {"sr": 9801, "sc": 9802}  # high, so the new series sort after the modality's own


def parse_kinds(text: str | None) -> tuple[str, ...]:
    """`--dicom-out sr,sc` -> ("sr", "sc"); raises ValueError naming a kind that is not one of KINDS."""
    if not text:
        return ()
    kinds = tuple(dict.fromkeys(k.strip().lower() for k in text.split(",") if k.strip()))
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"--dicom-out {text}: {bad[0]} is not one of {', '.join(KINDS)}")
    return kinds


def weights_sha256(weights: Path) -> str:
    """sha256 of a weights file; of an export folder (OpenVINO), of its files' names and hashes in sorted order."""
    if weights.is_file():
        return file_sha256(weights)
    h = hashlib.sha256()
    for f in sorted(p for p in weights.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(weights).as_posix()}:{file_sha256(f)}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Algorithm:
    """Which model produced a finding: what the SR's algorithm identification (TID 4019) says."""

    run: str
    weights: str
    sha256: str

    @classmethod
    def of(cls, model: Any) -> Algorithm:
        """From a loaded `fracturekit.infer.model.Model`: its run folder's name, weights file name and hash."""
        run = model.run.root.name if model.run is not None else ""
        return cls(run, model.weights.name, weights_sha256(model.weights))

    def sr_item(self) -> Any:
        from highdicom.sr import AlgorithmIdentification

        params = [f"run {self.run}", f"weights {self.weights}", f"sha256 {self.sha256}"]
        return AlgorithmIdentification(name=MANUFACTURER, version=__version__, parameters=params)


def _codes() -> dict[str, Any]:
    from pydicom.sr.coding import Code

    return {
        "fracture": Code("125605004", "SCT", "Fracture of bone"),
        "present": Code("52101004", "SCT", "Present"),
        "absent": Code("272519000", "SCT", "Absent"),
        "certainty": Code("111012", "DCM", "Certainty of Finding"),
        "probability": Code("122157", "DCM", "Probability"),
        "threshold": Code("122411", "DCM", "Threshold Value"),
        "unitless": Code("1", "UCUM", "no units"),
        "radiography": Code("168537006", "SCT", "Plain radiography"),
    }


def box_polyline(box: dict[str, Any]) -> np.ndarray:
    """A box's closed SCOORD POLYLINE (column, row) in film pixels: its 4 corners clockwise, the first repeated."""
    x1, y1, x2, y2 = (float(box[k]) for k in ("x1", "y1", "x2", "y2"))
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]], dtype=np.float32)


def polyline_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """The (x1, y1, x2, y2) a box_polyline was made from (its bounds), read back from an SR."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


def _device_uid(name: str) -> str:
    """A UID for fracturekit as an observer device, stable for one version (a UUID-derived 2.25 UID)."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[MANUFACTURER, __version__, name])


def structured_report(
    source: Any,
    rec: dict[str, Any],
    detector: Algorithm | None,
    scorer: Algorithm | None,
    series_uid: str,
    instance_number: int,
) -> Any:
    """The TID 1500 Comprehensive SR of one scored film (`rec`, predict's record) on the `source` dataset."""
    import highdicom as hd
    from highdicom.sr import (
        ComprehensiveSR,
        DeviceObserverIdentifyingAttributes,
        MeasurementReport,
        ObservationContext,
        ObserverContext,
    )
    from pydicom.sr.codedict import codes

    c = _codes()
    frames = [1] if int(getattr(source, "NumberOfFrames", 1) or 1) > 1 else None  # predict scores the first frame
    groups = _box_groups(source, rec, detector, frames, c)
    if rec["fracture_probability"] is not None:
        groups.append(_film_group(source, rec, scorer, frames, c))
    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=_device_uid("observer"), name=MANUFACTURER, manufacturer_name=MANUFACTURER, model_name=__version__
        ),
    )
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=c["radiography"],
        imaging_measurements=groups,
    )
    return ComprehensiveSR(
        evidence=[source],
        content=report,
        series_instance_uid=series_uid,
        series_number=SERIES_NUMBERS["sr"],
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MANUFACTURER,
        software_versions=__version__,
        series_description="fracturekit findings",
        is_complete=True,
        is_final=False,  # an algorithm's output, not verified by a clinician (PS3.3 C.17.2 Verification Flag)
    )


def _box_groups(
    source: Any, rec: dict[str, Any], detector: Algorithm | None, frames: list[int] | None, c: dict[str, Any]
) -> list[Any]:
    """One planar-ROI measurement group per detected box: its polyline on the film and its confidence."""
    import highdicom as hd
    from highdicom.sr import (
        GraphicTypeValues,
        ImageRegion,
        Measurement,
        PlanarROIMeasurementsAndQualitativeEvaluations,
        SourceImageForRegion,
        TrackingIdentifier,
    )

    groups: list[Any] = []
    for k, box in enumerate(rec["boxes"], 1):
        region = ImageRegion(
            graphic_type=GraphicTypeValues.POLYLINE,
            graphic_data=box_polyline(box),
            source_image=SourceImageForRegion(source.SOPClassUID, source.SOPInstanceUID, frames),
        )
        groups.append(
            PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=TrackingIdentifier(uid=hd.UID(), identifier=f"box {k} {box['class']}".strip()),
                referenced_region=region,
                finding_type=c["fracture"],
                algorithm_id=detector.sr_item() if detector else None,
                measurements=[Measurement(c["certainty"], float(box["confidence"]), c["unitless"])],
            )
        )
    return groups


def _film_group(
    source: Any, rec: dict[str, Any], scorer: Algorithm | None, frames: list[int] | None, c: dict[str, Any]
) -> Any:
    """The film-level measurement group: the fracture probability, and the threshold and decision when set."""
    import highdicom as hd
    from highdicom.sr import (
        Measurement,
        MeasurementsAndQualitativeEvaluations,
        QualitativeEvaluation,
        SourceImageForMeasurementGroup,
        TrackingIdentifier,
    )

    measurements = [Measurement(c["probability"], float(rec["fracture_probability"]), c["unitless"])]
    evaluations = []
    if rec["threshold"] is not None:
        measurements.append(Measurement(c["threshold"], float(rec["threshold"]), c["unitless"]))
        positive = rec["decision"] == _positive_class()
        evaluations.append(QualitativeEvaluation(c["fracture"], c["present"] if positive else c["absent"]))
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=hd.UID(), identifier=f"film {rec['score_source']}"),
        finding_type=c["fracture"],
        algorithm_id=scorer.sr_item() if scorer else None,
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[SourceImageForMeasurementGroup.from_source_image(source, frames)],
    )


def _positive_class() -> str:
    from fracturekit.core.layout import POSITIVE_CLASS

    return POSITIVE_CLASS


def secondary_capture(source: Any, annotated_bgr: np.ndarray, series_uid: str, instance_number: int) -> Any:
    """A Secondary Capture of predict's annotated film (BGR, as drawn for the JPEG) on the `source` dataset."""
    import highdicom as hd
    from highdicom.sc import SCImage
    from pydicom.dataset import Dataset

    rgb = np.ascontiguousarray(annotated_bgr[:, :, ::-1])
    sc = SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=rgb,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid,
        series_number=SERIES_NUMBERS["sc"],
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        patient_orientation=_orientation(source),
        laterality=_laterality(source),
        series_description="fracturekit annotated",
        transfer_syntax_uid="1.2.840.10008.1.2.1",  # explicit VR little endian: every reader takes it
    )
    if "Laterality" not in sc:
        sc.Laterality = ""  # type 2C: present and empty when not known (a film of a paired body part, side unknown)
    sc.BurnedInAnnotation = "YES"
    ref = Dataset()  # Source Image Sequence (General Image module): the film this picture was drawn on
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    sc.ManufacturerModelName = MANUFACTURER
    sc.SoftwareVersions = __version__
    sc.DerivationDescription = "fracturekit predict: boxes and fracture probability drawn on the film"
    return sc


def _orientation(source: Any) -> tuple[str, str]:
    """The source's Patient Orientation (0020,0020) when it has two values, else ("", "") (allowed empty: type 2C)."""
    value = list(getattr(source, "PatientOrientation", []) or [])
    return (str(value[0]), str(value[1])) if len(value) == 2 else ("", "")


def _laterality(source: Any) -> str | None:
    """The source's side (Laterality, else Image Laterality) when it is L or R, else None."""
    for key in ("Laterality", "ImageLaterality"):
        value = str(getattr(source, key, "") or "")
        if value in ("L", "R"):
            return value
    return None


class Writer:
    """Writes (and hands to `push`) the SR and/or SC of each DICOM film predict scores, one new series per kind."""

    def __init__(self, kinds: tuple[str, ...], out: Path, detector: Any, classifier: Any) -> None:
        import highdicom as hd

        self.kinds, self.folder = kinds, out / "dicom"
        self.detector = Algorithm.of(detector) if detector is not None else None
        self.classifier = Algorithm.of(classifier) if classifier is not None else None
        self.series = {k: hd.UID() for k in kinds}  # one series per kind for this run
        self.count = 0
        self._lock = threading.Lock()  # films are written from predict's pool: one instance number each

    def planned(self, names: list[str]) -> set[str]:
        """The files this writer may write for films named `names` (relative to the output folder)."""
        return {f"dicom/{n}.{k}.dcm" for n in names for k in self.kinds}

    @staticmethod
    def header(path: Path) -> Any:
        """The DICOM header (no pixels) of a scored film, or None when the film is not DICOM."""
        import pydicom

        from fracturekit.data.imageio import is_dicom

        with path.open("rb") as f:
            if not is_dicom(f.read(132), path):
                return None
        return pydicom.dcmread(str(path), stop_before_pixels=True, force=True)

    def write(self, source: Any, name: str, rec: dict[str, Any], annotated_bgr: np.ndarray | None) -> list[Path]:
        """The objects for one scored film (`rec`) on its `source` header, written to OUT/dicom/NAME.KIND.dcm."""
        self.folder.mkdir(exist_ok=True)
        with self._lock:
            self.count += 1
            number = self.count
        scorer = self.classifier if rec["score_source"] == "classifier" else self.detector
        written = []
        for kind in self.kinds:
            if kind == "sr":
                ds = structured_report(source, rec, self.detector, scorer, self.series["sr"], number)
            else:
                if annotated_bgr is None:
                    continue
                ds = secondary_capture(source, annotated_bgr, self.series["sc"], number)
            path = self.folder / f"{name}.{kind}.dcm"
            ds.save_as(path, enforce_file_format=True)
            written.append(path)
        return written
