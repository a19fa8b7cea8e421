"""`fracturekit prepare`: a thin layer over `fracturekit.prepare.prepare`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from fracturekit.cli import flags
from fracturekit.cli.app import app, out_console, progress_bars, tagged, user_errors
from fracturekit.core.errors import UserError
from fracturekit.core.layout import SPLITS
from fracturekit.data.imageio import MAX_PIXELS

if TYPE_CHECKING:
    from fracturekit.prepare import PrepareResult


def parse_mapping(text: str | None) -> dict[str, str] | None:
    """'fractured=fracture,normal=no_fracture' -> {'fractured': 'fracture', 'normal': 'no_fracture'}."""
    if not text:
        return None
    mapping: dict[str, str] = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"--map {text!r}: expected NAME=CLASS pairs like fractured=fracture,normal=no_fracture.")
        mapping[key.strip()] = value.strip()
    return mapping


def _summary_table(summary: dict) -> Table:
    """Images per split and label, with box counts."""
    labels = sorted({label for counts in summary["per_split"].values() for label in counts})
    t = Table(title=f"prepared {summary['ok']} of {summary['images_in']} images ({summary['format']})")
    t.add_column("split")
    for label in labels:
        t.add_column(label, justify="right")
    t.add_column("boxes", justify="right")
    for s in SPLITS:
        counts = summary["per_split"][s]
        t.add_row(s, *(str(counts.get(label, 0)) for label in labels), str(summary["boxes_per_split"][s]))
    return t


@app.command()
@user_errors
def prepare(
    source: Annotated[
        Path, typer.Argument(help="Folder of a raw dataset (class folders, COCO, VOC, YOLO, FracAtlas).")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: datasets/<name of SOURCE>).")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="auto|folders|coco|voc|yolo|fracatlas (auto detects it).")
    ] = "auto",
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="Train,val,test fractions of the re-split (with --keep-splits: of the unsplit images).",
        ),
    ] = "0.7,0.15,0.15",
    keep_splits: Annotated[
        bool, typer.Option("--keep-splits", help="Keep the source's own splits (unlisted images are re-split).")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the re-split.")] = 0,
    group_regex: Annotated[
        str | None, typer.Option("--group-regex", help="Patient key from file names: first capture group.")
    ] = None,
    meta: Annotated[
        Path | None, typer.Option("--meta", help="CSV with one row per image (file name + patient_id, region, ...).")
    ] = None,
    mapping: Annotated[
        str | None, typer.Option("--map", help="Class name overrides: fractured=fracture,normal=no_fracture.")
    ] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Known public dataset (see datasets/*.yaml).")] = None,
    film_split: Annotated[
        bool,
        typer.Option(
            "--film-split",
            help="Split films one by one, without patient groups (leaks when a patient has several films).",
        ),
    ] = False,
    clahe: Annotated[bool, typer.Option("--clahe", help="Apply CLAHE contrast enhancement to every film.")] = False,
    max_side: Annotated[int | None, typer.Option("--max-side", help="Downscale films to this long side (px).")] = None,
    max_pixels: flags.MaxPixels = MAX_PIXELS,
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", help="Replace what an earlier prepare wrote in --out; nothing else.")
    ] = False,
    corrections: Annotated[
        Path | None,
        typer.Option(
            "--corrections", help="A review's decisions.csv: relabels and exclusions, applied before the split."
        ),
    ] = None,
) -> None:
    """Turn a raw fracture dataset into leak-free YOLO classification + detection datasets, then audit them."""
    from fracturekit.data.split import parse_ratios
    from fracturekit.prepare import prepare as run_prepare

    with progress_bars(transient=True) as bar:
        result = run_prepare(
            source,
            out,
            fmt=fmt,
            split=parse_ratios(split),
            keep_splits=keep_splits,
            seed=seed,
            group_regex=group_regex,
            meta=meta,
            mapping=parse_mapping(mapping),
            clahe=clahe,
            max_side=max_side,
            max_pixels=max_pixels,
            preset=preset,
            film_split=film_split,
            exist_ok=exist_ok,
            corrections=corrections,
            progress=bar,
        )
    _print_result(result)


def _print_result(result: PrepareResult) -> None:
    """What prepare made: the summary table, skipped and other files, notes, grouping, corrections, the audit."""
    from fracturekit.prepare import grouping_line

    s = result.summary
    out_console.print(_summary_table(s))
    out_console.print(
        f"detection: {s['det_images']} images, classes {s['det_classes']}; "
        f"{s['copied_byte_for_byte']} copied byte for byte, {s['written_png']} written as PNG; "
        f"{s['with_warnings']} with warnings (see manifest.csv)"
    )
    out_console.print(grouping_line(s["grouping"]), highlight=False)
    if s["skipped"]:
        _print_files(tagged(f"skipped {s['skipped']} files:", "yellow"), s["skipped_reasons"], s["skipped_files"][:10])
    if s["other_files"]:
        title = f"{len(s['other_files'])} other files are not films (all listed in prepare.json):"
        _print_files(title, s["other_files_reasons"], s["other_files"][:5])
    for note in s.get("notes", []):
        out_console.print(f"note: {note}", highlight=False, soft_wrap=True)
    kept = ", ".join(f"{n} by {kind}" for kind, n in s["grouped_by_link"].items() if n)
    out_console.print(
        f"kept together in one split: {kept or 'no duplicate films'}; {s['groups']} patient groups", highlight=False
    )
    if c := s.get("corrections"):
        out_console.print(
            f"corrections from {c['file']}: {c['relabelled']} relabelled, {c['excluded']} excluded, {c['box_wrong']} "
            f"out of detection (box wrong), {c['confirmed']} confirmed, {c['notes']} notes; recorded in manifest.csv",
            highlight=False,
            soft_wrap=True,
        )
    if result.audit is not None:
        out_console.print(result.audit.table())
    out_console.print(
        f"wrote {result.dataset.root} in {s['timings_s']['total']:.1f} s; data_hash {s['data_hash'][:16]}",
        highlight=False,
        soft_wrap=True,
    )


def _print_files(title: str | Text, reasons: dict[str, int], examples: list[dict[str, str]]) -> None:
    """A title, a count per reason, then example files with their reason."""
    out_console.print(title)
    for reason, n in reasons.items():
        out_console.print(f"  {n} x {reason}", highlight=False)
    for entry in examples:
        out_console.print(f"    {entry['source']}: {entry['reason']}", highlight=False)
