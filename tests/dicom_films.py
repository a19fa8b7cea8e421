"""DICOM films for the DICOM-out and PACS tests, made with pydicom from real films and phantoms.

Each kind is one way a PACS holds a radiograph: CR MONOCHROME2 16-bit with a window, DX MONOCHROME1 (the
film stored inverted), and a CR with a VOI LUT Sequence in place of a window. Patient and study tags are set
as a modality sets them, so the objects fracturekit writes have something to copy.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CR = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
DX = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def make_film(
    gray: np.ndarray,
    path: Path,
    *,
    kind: str,
    patient_id: str,
    study_uid: str,
    study_date: str = "20260115",
    series_number: int = 1,
    instance_number: int = 1,
) -> Dataset:
    """Write `gray` (uint8 film as seen) as a DICOM film of `kind` ("cr", "dx-mono1" or "cr-voilut"); returns it."""
    ds = Dataset()
    meta = FileMetaDataset()
    sop_class = DX if kind == "dx-mono1" else CR
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = f"Test^{patient_id}", patient_id, "", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = study_date, "101500", "", "1"
    ds.ReferringPhysicianName = ""
    ds.SeriesNumber, ds.InstanceNumber = series_number, instance_number
    ds.Modality = "DX" if kind == "dx-mono1" else "CR"
    ds.Manufacturer = "pydicom test modality"
    ds.BodyPartExamined, ds.ViewPosition = "HAND", "PA"
    ds.PatientOrientation = ["A", "F"] if kind != "dx-mono1" else ["P", "F"]
    ds.ContentDate, ds.ContentTime = study_date, "101600"
    ds.InstanceCreationDate = datetime.date.today().strftime("%Y%m%d")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 12, 11
    ds.PixelRepresentation = 0
    stored = gray.astype(np.uint16) * 16  # 12-bit values: 0..4080
    if kind == "dx-mono1":
        ds.PhotometricInterpretation = "MONOCHROME1"  # high values shown dark: store the film inverted
        stored = 4080 - stored
        ds.PresentationIntentType, ds.DetectorType = "FOR PRESENTATION", "SCINTILLATOR"
        ds.ImagerPixelSpacing = [0.1, 0.1]
        ds.PresentationLUTShape = "INVERSE"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
        ds.WindowCenter, ds.WindowWidth = 2040, 4096
        ds.BurnedInAnnotation = "NO"
        ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LIN", 1
        ds.KVP, ds.Laterality = "", ""
        ds.PatientOrientation = ["P", "F"]
    else:
        ds.PhotometricInterpretation = "MONOCHROME2"
    if kind == "cr-voilut":  # a VOI LUT sequence: 4096 entries mapping the 12-bit values to 0..255
        lut = Dataset()
        lut.LUTDescriptor = [4096, 0, 16]
        lut.LUTData = (np.clip(np.arange(4096) / 16, 0, 255) * 256).astype("<u2").tobytes()  # OW: raw bytes
        lut.LUTExplanation = "test VOI LUT"
        ds.VOILUTSequence = [lut]
    elif kind == "cr":
        ds.WindowCenter, ds.WindowWidth = 2040, 4096
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) dciodvfy (Debian dicom3tools) reports for one object; skips the test where it is absent."""
    import shutil
    import subprocess

    import pytest

    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy is absent (Debian package dicom3tools; `make test` installs it where it runs as root)")
    res = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    lines = (res.stdout + res.stderr).splitlines()
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warning")]
