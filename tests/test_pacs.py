"""predict against a real PACS: Orthanc with its DICOMweb plugin, started here on 127.0.0.1 in tmp_path.

The round trip of issue 23: films uploaded to Orthanc, `predict --source dicomweb://... --push --dicom-out sr,sc`,
every pushed object read back from Orthanc (in the source study, referencing its source film, passing
dciodvfy); a --resume run fetches nothing twice; Orthanc stopped mid-run gives one sentence and keeps the rows.
Skips with the reason where Orthanc or its DICOMweb plugin is absent (`make test` installs them as root).
"""

from __future__ import annotations

import csv
import glob
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import requests
from conftest import SHARED_DATA
from dicom_films import dciodvfy, make_film
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from fracturekit.cli.app import app

pytest.importorskip("dicomweb_client", reason="dicomweb-client is absent (pip install 'fracturekit[dicom]')")
pytest.importorskip("highdicom", reason="highdicom is absent (pip install 'fracturekit[dicom]')")

USER, PASSWORD = "fk", "test-only-secret"
# Where Debian's orthanc-dicomweb puts the plugin; other layouts put it under a lib folder.
PLUGIN_GLOBS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so*", "/usr/lib/*/orthanc/libOrthancDicomWeb.so*")


def _plugin() -> str | None:
    return next((p for g in PLUGIN_GLOBS for p in sorted(glob.glob(g))), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    """A running Orthanc: its REST address, process and DICOMweb source for predict."""

    port: int
    proc: subprocess.Popen[bytes]

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def source(self) -> str:
        return f"dicomweb://127.0.0.1:{self.port}/dicom-web"

    def upload(self, path: Path) -> None:
        r = requests.post(f"{self.rest}/instances", data=path.read_bytes(), auth=(USER, PASSWORD), timeout=30)
        r.raise_for_status()

    def qido(self, what: str) -> list[dict]:
        r = requests.get(f"{self.rest}/dicom-web/{what}", auth=(USER, PASSWORD), timeout=30)
        r.raise_for_status()
        return r.json()

    def wado(self, study: str, series: str, sop: str, folder: Path) -> Path:
        """One instance retrieved with WADO-RS (through dicomweb-client), saved to `folder`."""
        from dicomweb_client.api import DICOMwebClient

        session = requests.Session()
        session.auth = (USER, PASSWORD)
        ds = DICOMwebClient(f"{self.rest}/dicom-web", session=session).retrieve_instance(study, series, sop)
        path = folder / f"{sop}.dcm"
        ds.save_as(path, enforce_file_format=False)
        return path

    def listing(self) -> list[tuple[str, str, str, int]]:
        """(study, modality, series description, instances) per series, sorted: what a PACS browser shows."""
        rows = []
        for st in self.qido("studies"):
            study = st["0020000D"]["Value"][0]
            for se in self.qido(f"studies/{study}/series"):
                desc = (se.get("0008103E", {}).get("Value") or [""])[0]
                n = len(self.qido(f"studies/{study}/series/{se['0020000E']['Value'][0]}/instances"))
                rows.append((study[-12:], se["00080060"]["Value"][0], desc, n))
        return sorted(rows)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """Orthanc on 127.0.0.1 (free ports, storage and config in tmp_path, basic auth on), stopped after the test."""
    exe, plugin = shutil.which("Orthanc"), _plugin()
    if exe is None or plugin is None:
        pytest.skip("Orthanc or its DICOMweb plugin is absent (Debian: orthanc orthanc-dicomweb; `make test` installs)")
    port = _free_port()
    folder = tmp_path / "orthanc"
    folder.mkdir()
    config = {
        "Name": "fracturekit-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": port,
        "DicomServerEnabled": False,  # no C-STORE: only the HTTP port is opened
        "DicomPort": _free_port(),
        "RemoteAccessAllowed": False,  # loopback only
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("wb")
    proc = subprocess.Popen([exe, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    server = Orthanc(port, proc)
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{server.rest}/dicom-web/studies", auth=(USER, PASSWORD), timeout=2).ok:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}")
        time.sleep(0.2)
    yield server
    server.stop()
    log.close()


def _real_films(n: int) -> list[np.ndarray]:
    """Real FracAtlas films (fractured), else phantoms where ../shared/data is absent."""
    found = sorted((SHARED_DATA / "fracatlas" / "images" / "Fractured").glob("*.jpg"))[:n]
    if len(found) == n:
        return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in found]
    from fracturekit.data.phantoms import generate_phantom

    return [generate_phantom(7, i, size=256).image for i in range(n)]


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The films Orthanc gets: 2 patients, 2 studies; CR MONOCHROME2, DX MONOCHROME1, CR with a VOI LUT, a phantom
    CR, a CR whose pixel data is cut short (unreadable), and an MG film that --modality CR,DX must leave out."""
    from fracturekit.data.phantoms import generate_phantom

    folder = tmp_path_factory.mktemp("pacs-films")
    a, b = generate_uid(), generate_uid()
    real = _real_films(3)
    phantom = generate_phantom(3, 0, size=128).image
    specs = {  # name: (pixels, kind, patient, study, study date)
        "cr": (real[0], "cr", "P1", a, "20260110"),
        "dx_mono1": (real[1], "dx-mono1", "P1", a, "20260110"),
        "cr_voilut": (real[2], "cr-voilut", "P2", b, "20260220"),
        "phantom": (phantom, "cr", "P2", b, "20260220"),
        "broken": (phantom, "cr", "P2", b, "20260220"),
        "mammo": (phantom, "cr", "P2", b, "20260220"),
    }
    out = {}
    for k, (name, (pixels, kind, patient, study, date)) in enumerate(specs.items(), 1):
        path = folder / f"{name}.dcm"
        make_film(pixels, path, kind=kind, patient_id=patient, study_uid=study, study_date=date, instance_number=k)
        if name == "broken":
            ds = pydicom.dcmread(path)
            ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]  # cut short: no pixel array can be made
            ds.save_as(path)
        if name == "mammo":
            ds = pydicom.dcmread(path)
            ds.Modality = "MG"
            ds.save_as(path)
        out[name] = path
    return out


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="") as f:
        return list(csv.DictReader(f))


def _predict(orthanc: Orthanc, run: Path, out: Path, *extra: str) -> object:
    args = ["predict", "--source", orthanc.source, "--detector", str(run), "--out", str(out), "--conf", "0.01"]
    return CliRunner().invoke(app, [*args, *extra])


@pytest.fixture
def logged_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRACTUREKIT_DICOMWEB_USER", USER)
    monkeypatch.setenv("FRACTUREKIT_DICOMWEB_PASSWORD", PASSWORD)


def test_pacs_round_trip_push_and_resume(
    orthanc: Orthanc,
    films: dict[str, Path],
    tiny_runs: dict[str, Path],
    tmp_path: Path,
    logged_in: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for path in films.values():
        orthanc.upload(path)
    sources = {n: pydicom.dcmread(p, stop_before_pixels=True) for n, p in films.items()}
    before = orthanc.listing()
    print("Orthanc before --push:", *before, sep="\n  ")
    out = tmp_path / "out"
    res = _predict(orthanc, tiny_runs["detect"], out, "--push", "--dicom-out", "sr,sc")
    assert res.exit_code == 0, res.output
    rows = _rows(out / "predictions.csv")
    by_sop = {r["sop_uid"]: r for r in rows}
    # every CR/DX film has a row; the MG film is not scored; the broken one is a row with its reason
    assert set(by_sop) == {sources[n].SOPInstanceUID for n in films if n != "mammo"}
    assert "unreadable DICOM" in by_sop[sources["broken"].SOPInstanceUID]["error"]
    assert all(not r["error"] for r in rows if r["sop_uid"] != sources["broken"].SOPInstanceUID)
    assert not (out / ".fetching").exists()  # the fetched films are gone

    after = orthanc.listing()
    print("Orthanc after --push:", *after, sep="\n  ")
    # each study gains one SR series and one SC series (modality OT), one object per scored film in it
    scored = [n for n in films if n not in ("mammo", "broken")]
    for study in {sources[n].StudyInstanceUID for n in scored}:
        n_films = sum(1 for n in scored if sources[n].StudyInstanceUID == study)
        new = [r for r in after if r not in before and r[0] == study[-12:]]
        assert sorted((m, k) for _, m, _, k in new) == [("OT", n_films), ("SR", n_films)], after

    # every pushed object: retrievable with WADO-RS, in its source film's study, referencing it, dciodvfy-clean
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    found = {}
    for name in scored:
        src = sources[name]
        for se in orthanc.qido(f"studies/{src.StudyInstanceUID}/series"):
            series = se["0020000E"]["Value"][0]
            for inst in orthanc.qido(f"studies/{src.StudyInstanceUID}/series/{series}/instances"):
                sop = inst["00080018"]["Value"][0]
                if sop in by_sop or sop in (s.SOPInstanceUID for s in sources.values()):
                    continue  # a source film
                path = orthanc.wado(src.StudyInstanceUID, series, sop, fetched)
                ds = pydicom.dcmread(path)
                refs = _referenced(ds)
                if src.SOPInstanceUID in refs:
                    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.PatientID == src.PatientID
                    assert ds.SOPInstanceUID != src.SOPInstanceUID and ds.SeriesInstanceUID != src.SeriesInstanceUID
                    errors, warnings = dciodvfy(path)
                    assert errors == [], (ds.Modality, errors)
                    found[(name, ds.Modality)] = (path, warnings)
    assert sorted(found) == sorted((n, m) for n in scored for m in ("SR", "OT")), sorted(found)

    # --resume: every instance is in predictions.csv, so nothing is fetched or pushed again
    from fracturekit.hospital.pacs import Pacs

    calls: list[str] = []
    real_fetch, real_push = Pacs.fetch, Pacs.push
    monkeypatch.setattr(Pacs, "fetch", lambda self, inst, path: calls.append(inst.sop) or real_fetch(self, inst, path))
    monkeypatch.setattr(Pacs, "push", lambda self, paths: calls.append("push") or real_push(self, paths))
    res = _predict(orthanc, tiny_runs["detect"], out, "--push", "--dicom-out", "sr,sc", "--resume")
    assert res.exit_code == 0, res.output
    assert calls == []
    assert _rows(out / "predictions.csv") == rows
    assert orthanc.listing() == after


def _referenced(ds: pydicom.Dataset) -> set[str]:
    """SOP Instance UIDs an SR's evidence or an SC's Source Image Sequence names."""
    refs = {r.ReferencedSOPInstanceUID for r in getattr(ds, "SourceImageSequence", [])}
    for study in getattr(ds, "CurrentRequestedProcedureEvidenceSequence", []):
        for series in study.ReferencedSeriesSequence:
            refs |= {r.ReferencedSOPInstanceUID for r in series.ReferencedSOPSequence}
    return refs


def test_pacs_stopped_mid_run_keeps_rows(
    orthanc: Orthanc,
    films: dict[str, Path],
    tiny_runs: dict[str, Path],
    tmp_path: Path,
    logged_in: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fracturekit import predict as predict_module
    from fracturekit.hospital.pacs import Pacs

    for name in ("cr", "dx_mono1", "cr_voilut", "phantom"):
        orthanc.upload(films[name])
    monkeypatch.setattr(predict_module, "FETCH_AHEAD", 2)  # two chunks of two films
    real_fetch, fetched = Pacs.fetch, []

    def fetch_then_stop(self: Pacs, inst: object, path: Path) -> None:
        if len(fetched) == 2:  # the first chunk is scored: Orthanc goes away before the second
            orthanc.stop()
        fetched.append(inst)
        real_fetch(self, inst, path)

    monkeypatch.setattr(Pacs, "fetch", fetch_then_stop)
    out = tmp_path / "out"
    res = _predict(orthanc, tiny_runs["detect"], out)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()  # the progress bar, then the one sentence
    assert lines[-1].startswith("error:") and "does not answer" in lines[-1], res.output
    assert sum("error" in line.lower() for line in lines) == 1 and "Traceback" not in res.output, res.output
    assert len(_rows(out / "predictions.csv")) == 2  # the first chunk's rows are kept
    assert not (out / ".fetching").exists()


def test_pacs_down_or_refused_is_one_sentence(
    orthanc: Orthanc, tiny_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = [  # (source, expected words): nothing listens on a fresh port; Orthanc refuses without credentials
        (f"dicomweb://127.0.0.1:{_free_port()}/dicom-web", "does not answer"),
        (orthanc.source, "HTTP 401"),
    ]
    monkeypatch.delenv("FRACTUREKIT_DICOMWEB_USER", raising=False)
    monkeypatch.delenv("FRACTUREKIT_DICOMWEB_TOKEN", raising=False)
    for source, words in cases:
        args = ["predict", "--source", source, "--detector", str(tiny_runs["detect"]), "--out", str(tmp_path / "o")]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2 and words in res.output and res.output.count("\n") == 1, res.output
        assert not (tmp_path / "o").exists()


def test_pacs_film_gone_before_fetch_is_a_row(
    orthanc: Orthanc,
    films: dict[str, Path],
    tiny_runs: dict[str, Path],
    tmp_path: Path,
    logged_in: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A film deleted from the PACS between the search and its retrieve (WADO-RS 404) is a row with the reason."""
    from fracturekit.hospital.pacs import Pacs

    for name in ("cr", "phantom"):
        orthanc.upload(films[name])
    gone = pydicom.dcmread(films["cr"], stop_before_pixels=True).SOPInstanceUID
    real_fetch = Pacs.fetch

    def delete_then_fetch(self: Pacs, inst: object, path: Path) -> None:
        if inst.sop == gone:  # type: ignore[attr-defined]
            auth = (USER, PASSWORD)
            (found,) = requests.post(f"{orthanc.rest}/tools/lookup", data=gone, auth=auth, timeout=10).json()
            requests.delete(f"{orthanc.rest}/instances/{found['ID']}", auth=auth, timeout=10).raise_for_status()
        real_fetch(self, inst, path)

    monkeypatch.setattr(Pacs, "fetch", delete_then_fetch)
    res = _predict(orthanc, tiny_runs["detect"], tmp_path / "out")
    assert res.exit_code == 0, res.output
    rows = {r["sop_uid"]: r for r in _rows(tmp_path / "out" / "predictions.csv")}
    assert len(rows) == 2 and "not retrieved" in rows[gone]["error"] and "404" in rows[gone]["error"], rows[gone]
    assert sum(not r["error"] for r in rows.values()) == 1
