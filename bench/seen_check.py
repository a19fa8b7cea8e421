"""What the seen-film check's augmented-copy test costs: seen_copies.npz's size and build time, and evaluate's check
with the copy test against the hashes alone (the reference).

    .venv/bin/python bench/seen_check.py --data datasets/fracatlas [--work DIR]

On a prepared dataset: signs its train+val films as `train` does for a classifier (seen_copies.npz under --work,
a new temporary folder by default), prints bytes per film (the whole file, and the median of 200 films each in
its own file), the build's wall and CPU time per film and the load average; then times the check of its test
split against those films as `evaluate` runs it for films of ANOTHER dataset (on the run's own dataset
`evaluate` leaves the copy test to prepare's split), hashes only and with the copy test, and prints the ratio
and the films the copy test linked.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from fracturekit.core.layout import PreparedDataset, RunDir
from fracturekit.core.yolo_env import cpu_threads
from fracturekit.data.signature_file import MAX_KEYPOINTS, read_signatures
from fracturekit.training.provenance import Seen, overlap, scored_items, seen_rows
from fracturekit.training.seen_copies import write_seen_copies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a prepared dataset (manifest.csv)")
    ap.add_argument("--work", type=Path, default=None, help="where seen_copies.npz goes (default: a temp folder)")
    args = ap.parse_args()
    ds = PreparedDataset(Path(args.data))
    work = args.work or Path(tempfile.mkdtemp(prefix="fk-seen-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = seen_rows(ds, "classify")
    print(f"{ds.root}: {len(rows)} train+val films; {cpu_threads()} threads; load {os.getloadavg()[0]:.1f}")

    t0, c0 = time.perf_counter(), time.process_time()
    size = write_seen_copies(work / "seen_copies.npz", [r["path"] for r in rows], ds.root)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"seen_copies.npz: {size:,} B = {size / len(rows):,.0f} B/film; built in {wall:.1f} s wall "
        f"({1000 * wall / len(rows):.1f} ms/film), {cpu:.1f} s CPU ({1000 * cpu / len(rows):.1f} ms/film); "
        f"load {os.getloadavg()[0]:.1f}"
    )
    t0 = time.perf_counter()
    sigs = read_signatures(work / "seen_copies.npz")
    assert sigs is not None
    print(f"loaded in {time.perf_counter() - t0:.2f} s")
    alone = []
    for p in np.random.default_rng(0).choice(sorted(sigs), min(200, len(sigs)), replace=False):
        s, buf = sigs[p], io.BytesIO()
        thumb = cv2.imencode(".png", s.thumb)[1]
        np.savez_compressed(buf, points=s.points.astype(np.float16), descriptors=s.descriptors, thumb=thumb)
        alone.append(len(buf.getvalue()))
    kept = np.array([len(s.points) for s in sigs.values()])
    print(
        f"{len(alone)} films alone: median {np.median(alone):,.0f} B, max {max(alone):,} B; keypoints kept: median "
        f"{np.median(kept):.0f}, {np.mean(kept == MAX_KEYPOINTS):.1%} of films capped at {MAX_KEYPOINTS}"
    )

    with ds.manifest.open(newline="") as f:
        test = [r["output_cls"] for r in csv.DictReader(f) if r.get("status") == "ok" and r.get("split") == "test"]
    times = {}
    for copies in (False, True):
        t0, c0 = time.perf_counter(), time.process_time()
        items, _ = scored_items(ds, test, copies=copies)
        seen = Seen(RunDir(work), "classify", rows, "seen.csv", None, None, sigs if copies else None)
        found = overlap(seen, RunDir(work), list(items.values()))
        times[copies] = time.perf_counter() - t0
        print(
            f"check of {len(items)} test films, {'with the copy test' if copies else 'hashes only'}: "
            f"{times[copies]:.1f} s wall, {time.process_time() - c0:.1f} s CPU; {len(found.films)} films linked "
            f"({len(found.pairs)} pairs); load {os.getloadavg()[0]:.1f}"
        )
    print(f"copy test / hashes only: {times[True] / times[False]:.1f}x")


if __name__ == "__main__":
    main()
