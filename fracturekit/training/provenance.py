"""What a model has seen: the films a training run trained and validated on, and the check that it is
not scored on them.

A run keeps `seen.csv` beside its weights: one row per train/val film the model saw (split, path in its
dataset, content sha256 and perceptual hash), copied from the dataset's manifest, so nothing is decoded
and the file stays small (~130 bytes a film: ~450 KB for FracAtlas). Beside it `seen_copies.npz`
(`fracturekit.training.seen_copies`) keeps each film's copy signature, for the augmented-copy test.
`evaluate` hashes the films it scores the way `audit` does (and signs them when the run has signatures)
and asks the audit's own duplicate test (`fracturekit.audit.seen_overlap`) which of them are copies of a
seen film, whichever dataset they come from.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fracturekit.audit import AuditItem, hash_film, seen_overlap
from fracturekit.core.errors import UserError
from fracturekit.core.layout import PreparedDataset, RunDir
from fracturekit.core.parallel import parallel_map
from fracturekit.core.progress import Progress
from fracturekit.data.copies import Signature
from fracturekit.data.hashing import N_TRANSFORMS
from fracturekit.data.signature_file import read_signatures
from fracturekit.training.seen_copies import SEEN_COPIES_FILE, write_seen_copies

SEEN_FILE = "seen.csv"
SEEN_COLUMNS = ("split", "path", "sha256", "phash")
SEEN_SPLITS = ("train", "val")  # val: best.pt and early stopping were chosen on it
_OUTPUT_COLUMN = {"classify": "output_cls", "detect": "output_det"}


def seen_rows(ds: PreparedDataset, task: str) -> list[dict[str, str]]:
    """The manifest rows of the train and val films a `task` model trains on (cls/ or det/ images): SEEN_COLUMNS,
    and the film's manifest `source` (the key of `ds.signatures`)."""
    col = _OUTPUT_COLUMN[task]
    with ds.manifest.open(newline="") as f:
        return [
            {
                "split": r["split"],
                "path": r[col],
                "sha256": r.get("sha256", ""),
                "phash": r.get("phash", ""),
                "source": r.get("source", ""),
            }
            for r in csv.DictReader(f)
            if r.get("status") == "ok" and r.get("split") in SEEN_SPLITS and r.get(col)
        ]


def write_seen(run_dir: Path, ds: PreparedDataset, task: str) -> dict[str, int]:
    """Write `run_dir/seen.csv` and its copy signatures `run_dir/seen_copies.npz`; returns the film count per
    split (for run.json)."""
    rows = seen_rows(ds, task)
    with (run_dir / SEEN_FILE).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SEEN_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    made = read_signatures(ds.signatures) if ds.signatures.is_file() else None  # prepare's: not signed again
    known = [made.get(r["source"]) for r in rows] if made else None
    write_seen_copies(run_dir / SEEN_COPIES_FILE, [r["path"] for r in rows], ds.root, known=known)
    return {s: sum(r["split"] == s for r in rows) for s in SEEN_SPLITS}


@dataclass
class Seen:
    """The films one run saw, where that list came from, and the dataset it trained on."""

    run: RunDir
    task: str
    rows: list[dict[str, str]]
    source: str  # "seen.csv", or the dataset manifest for runs trained before seen.csv existed
    data: str | None
    data_hash: str | None
    copies: dict[str, Signature] | None = None  # path -> copy signature (seen_copies.npz); None: hashes only


def _run_record(run: RunDir) -> dict:
    try:
        return json.loads(run.record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def load_seen(run: RunDir, task: str) -> Seen | None:
    """The run's seen films: its seen.csv, else its training dataset's manifest when that dataset is still
    there with the data_hash the run recorded; None when neither is available. Its copy signatures come from
    seen_copies.npz when the run has one (runs trained before it existed have hashes only)."""
    record = _run_record(run)
    data, data_hash = record.get("data"), record.get("data_hash")
    if (run.root / SEEN_FILE).is_file():
        with (run.root / SEEN_FILE).open(newline="") as f:
            rows = list(csv.DictReader(f))
        sidecar = run.root / SEEN_COPIES_FILE
        copies = read_signatures(sidecar) if sidecar.is_file() else None
        return Seen(run, task, rows, SEEN_FILE, data, data_hash, copies)
    if data and data_hash and (Path(data) / "manifest.csv").is_file():
        ds = PreparedDataset(Path(data))
        if ds.recorded_data_hash() == data_hash:
            return Seen(run, task, seen_rows(ds, task), str(ds.manifest), data, data_hash)
    return None


def for_dataset(seen: Seen | None, ds: PreparedDataset) -> Seen | None:
    """`seen` as the check of films of `ds` uses it: without its copy signatures when `ds` is the dataset the run
    trained on (same data_hash), since prepare's audit ran the augmented-copy test over that whole dataset and
    split it by its clusters. A second search over the run's films and one split finds other borderline pairs,
    and would refuse the split prepare made: on FracAtlas 36 of its 613 test films against its train+val films
    (44 pairs, 26 of them at correlation 0.70-0.75, just over COPY_CORRELATION; bench/seen_check.py). The copy
    test is for films from elsewhere."""
    if seen is None or seen.copies is None or not seen.data_hash or seen.data_hash != ds.recorded_data_hash():
        return seen
    return replace(seen, copies=None)


def _phashes(hex_hash: str) -> np.ndarray:
    """A recorded identity phash as the (8,) array the audit compares; the other 7 transforms are not
    recorded, so the identity fills them: the scored film carries all 8, and the near test looks both
    ways, so a flipped or rotated copy of a seen film is still found."""
    value = int(hex_hash, 16) if hex_hash else 0
    return np.full(N_TRANSFORMS, value, dtype=np.uint64)


def seen_items(seen: Seen) -> list[AuditItem]:
    """AuditItems of the seen films (no pixel hash recorded: an empty one, which matches nothing), with their
    copy signatures when the run kept them."""
    sigs = seen.copies or {}
    return [
        AuditItem(r["path"], r["split"], "", None, r["sha256"], "", _phashes(r["phash"]), sigs.get(r["path"]))
        for r in seen.rows
        if r.get("sha256") or r.get("phash")
    ]


def scored_items(
    ds: PreparedDataset, rel_paths: list[str], progress: Progress | None = None, copies: bool = False
) -> tuple[dict[str, AuditItem | None], dict[str, str]]:
    """The films behind `rel_paths` keyed by their manifest source (a film in cls/ and det/ counts once),
    and each path's key.

    Each film is hashed from its file like `audit` does; the content sha256 is the manifest's (the source
    file's bytes, as in seen.csv) and the item's path is the source. None for a file that cannot be read.
    copies: also sign each film for the augmented-copy test (when some model's seen films carry signatures).
    """
    rows: dict[str, dict[str, str]] = {}
    with ds.manifest.open(newline="") as f:
        for r in csv.DictReader(f):
            for col in _OUTPUT_COLUMN.values():
                if r.get(col):
                    rows[r[col]] = r
    key_of = {rel: rows[rel].get("source") or rel if rel in rows else rel for rel in rel_paths}
    first: dict[str, str] = {}
    for rel, key in key_of.items():
        first.setdefault(key, rel)
    hashed = parallel_map(
        lambda rel: hash_film(ds.root / rel, copies=copies), list(first.values()), progress, "hashing films"
    )
    items: dict[str, AuditItem | None] = {}
    for (key, rel), h in zip(first.items(), hashed, strict=True):
        sha = rows[rel].get("sha256", "") if rel in rows else ""
        items[key] = None if isinstance(h, str) else AuditItem(key, "", "", None, sha or h[0], h[1], h[2], h[3])
    return items, key_of


@dataclass
class Overlap:
    """Scored films that are copies of films a model saw: (scored path, seen split, seen path) each."""

    source: Path  # the run folder, or the --seen list of an outside model
    pairs: list[tuple[str, str, str]]
    checked: bool  # False when there is no record of the model's films (run trained before seen.csv, no --seen)
    who: str = ""  # the model in the refusal sentence (default: the run folder)
    copies_checked: bool = False  # the augmented-copy test ran too (the model's films carry copy signatures)

    @property
    def films(self) -> set[str]:
        return {p[0] for p in self.pairs}


def overlap(seen: Seen | None, run: RunDir, scored: list[AuditItem | None]) -> Overlap:
    """Which scored films duplicate a film of `seen`, by the audit's duplicate test."""
    if seen is None:
        return Overlap(run.root, [], checked=False)
    return overlap_items(seen_items(seen), run.root, scored)


def overlap_items(train: list[AuditItem], source: Path, scored: list[AuditItem | None], who: str = "") -> Overlap:
    """Which scored films duplicate one of `train` (the films a model saw), by the audit's duplicate test.

    The augmented-copy search runs when the seen films carry signatures; otherwise the scored films' own are
    dropped, since a search among scored films alone could only link them to each other.
    """
    kept = [it for it in scored if it is not None]
    copies = any(it.copy_sig is not None for it in train) and any(it.copy_sig is not None for it in kept)
    if not copies:
        kept = [replace(it, copy_sig=None) for it in kept]
    pairs = seen_overlap(train, kept)
    found = sorted({(kept[j].path, train[i].split, train[i].path) for i, j in pairs})
    return Overlap(source, found, checked=True, who=who, copies_checked=copies)


def overlap_sentence(overlaps: list[Overlap], n_scored: int, ds: PreparedDataset, split: str) -> str:
    """The one-sentence refusal: count, two examples, and --allow-overlap."""
    films = set().union(*(o.films for o in overlaps))
    examples = list({p[0]: p for o in reversed(overlaps) for p in reversed(o.pairs)}.values())[::-1][:2]
    shown = "; ".join(f"{a} = {s} film {b}" for a, s, b in examples)  # paths: one name is in several folders
    runs = ", ".join(o.who or str(o.source) for o in overlaps if o.pairs)
    return (
        f"{len(films)} of the {n_scored} {split} films of {ds.root} are films, or copies of films, that {runs} "
        f"trained or validated on (e.g. {shown}); evaluate on films the model never saw, or pass --allow-overlap "
        "to score anyway with the overlap recorded in metrics.json and the report."
    )


def runs_trained_on(dataset: Path, data_hash: str, runs_dir: Path) -> list[Path]:
    """Run folders under `runs_dir` whose run.json says they trained on `dataset` with `data_hash`."""
    target = Path(dataset).resolve()
    found = []
    if not Path(runs_dir).is_dir():
        return found
    for record in sorted(Path(runs_dir).rglob("run.json")):
        try:
            r = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if r.get("data") and Path(r["data"]).resolve() == target and r.get("data_hash") == data_hash:
            found.append(record.parent)
    return found


def require_no_overlap(overlaps: list[Overlap], n_scored: int, ds: PreparedDataset, split: str, allow: bool) -> None:
    """UserError (exit 2) when any scored film was seen in training, unless `allow`."""
    if not allow and any(o.pairs for o in overlaps):
        raise UserError(overlap_sentence(overlaps, n_scored, ds, split))
