"""`fracturekit predict`: a thin layer over `fracturekit.predict.predict`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fracturekit.cli import flags
from fracturekit.cli.app import app, console, progress_bars, tagged, user_errors
from fracturekit.core.options import NMS_IOU
from fracturekit.data.imageio import MAX_PIXELS
from fracturekit.infer import backends

if TYPE_CHECKING:
    from fracturekit.predict import Predictions

_WEIGHTS = backends.weights_help()  # e.g. ".pt, .onnx, OpenVINO folder": what the backends read


@app.command()
@user_errors
def predict(
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="A folder (recursive), an image file, a glob, or a DICOMweb server: dicomweb://HOST:PORT/PATH "
            "(dicomwebs:// for HTTPS; credentials from FRACTUREKIT_DICOMWEB_USER/_PASSWORD or _TOKEN).",
        ),
    ],
    detector: Annotated[Path | None, typer.Option(help=f"Detector run folder or weights ({_WEIGHTS}).")] = None,
    classifier: Annotated[Path | None, typer.Option(help=f"Classifier run folder or weights ({_WEIGHTS}).")] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Output folder for annotated images and predictions.csv/.json (default runs/predict, 2...)."),
    ] = None,
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", help="Replace what an earlier predict wrote in --out; nothing else.")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a killed predict in --out: skip films already in its CSV.")
    ] = False,
    imgsz: flags.Imgsz = None,
    conf: flags.Conf = 0.25,
    iou: flags.Iou = NMS_IOU,
    cam: Annotated[bool, typer.Option("--cam", help="Also write EigenCAM heatmap overlays to OUT/cam/.")] = False,
    batch: Annotated[
        int | None,
        typer.Option(
            help=f"Images per inference batch; default: the largest of the models' own ({backends.batch_help()})."
        ),
    ] = None,
    device: flags.Device = "auto",
    max_pixels: flags.MaxPixels = MAX_PIXELS,
    threads: Annotated[int | None, typer.Option(help="CPU threads; default: all cores this process may use.")] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="Which weights of a run folder: auto (the fastest export that passed its accuracy check), "
            f"{', '.join(backends.VARIANTS)}."
        ),
    ] = "auto",
    dicom_out: Annotated[
        str | None,
        typer.Option(
            "--dicom-out",
            help="For DICOM films: sr (a TID 1500 Structured Report of the boxes and decision), sc (a Secondary "
            "Capture with the boxes drawn) or sr,sc; written to OUT/dicom/.",
        ),
    ] = None,
    study: Annotated[
        list[str] | None, typer.Option("--study", help="dicomweb source: a Study Instance UID (repeatable).")
    ] = None,
    modality: Annotated[
        str | None, typer.Option(help="dicomweb source: the series modalities scored, comma-separated (default CR,DX).")
    ] = None,
    since: Annotated[str | None, typer.Option(help="dicomweb source: studies from this date on (YYYY-MM-DD).")] = None,
    push: Annotated[
        bool, typer.Option("--push", help="dicomweb source: store the --dicom-out objects in their study (STOW-RS).")
    ] = False,
    full_size: Annotated[
        bool,
        typer.Option(
            "--full-size",
            help="Decode and draw every film at full size; default: a JPEG over twice imgsz is decoded at 1/2, 1/4 "
            "or 1/8 size (boxes still in film pixels).",
        ),
    ] = False,
) -> None:
    """Predict fracture probability and boxes for every X-ray under --source; write annotated copies."""
    from fracturekit.predict import predict as run_predict

    with progress_bars() as bar:
        records = run_predict(
            source,
            detector=detector,
            classifier=classifier,
            out=out,
            imgsz=imgsz,
            conf=conf,
            iou=iou,
            cam=cam,
            batch=batch,
            device=device,
            threads=threads,
            max_pixels=max_pixels,
            exist_ok=exist_ok,
            resume=resume,
            progress=bar,
            backend=backend,
            dicom_out=dicom_out,
            studies=study,
            modality=modality,
            since=since,
            push=push,
            full_size=full_size,
        )
    _print_records(records)


def _print_records(records: Predictions) -> None:
    """What predict did: the model used per role and why, the decisions, the films skipped, the notes."""
    folder = records.out  # the folder predict chose (--out, or the next runs/predict*)
    for role, m in records.meta["models"].items():
        console.print(f"{role}: {m['used']}" + (f" - {m['why']}" if m["why"] else ""), highlight=False)
    errors = [r for r in records if r["error"]]
    decisions = Counter(r["decision"] for r in records if not r["error"])
    summary = ", ".join(f"{k} {v}" for k, v in sorted(decisions.items()))
    console.print(
        f"{len(records)} image{'' if len(records) == 1 else 's'}: {len(records) - len(errors)} predicted ({summary}), "
        f"{len(errors)} unreadable -> {folder / 'predictions.csv'}",
        highlight=False,
    )
    for r in errors:
        console.print(tagged("  skipped", "yellow", f"{r.get('sop_uid') or r['path']}: {r['error']}"), highlight=False)
    for note in sorted({n for r in records for n in r["note"].split("; ") if n}):
        console.print(tagged("  note", "yellow", note), highlight=False)
