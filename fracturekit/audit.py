"""Audit a dataset for leakage: duplicate films, label conflicts and patients across splits.

Works on a raw dataset (read through `load_source`; splits from its folder names or annotation files)
or on a prepared one (read from its manifest; the written images are hashed). Films are linked by four
signals, each a link kind in duplicates.csv: `exact` (same file bytes or decoded pixels), `near`
(perceptual hash within `NEAR_THRESHOLD` bits under flips and 90-degree turns, `fracturekit.data.hashing`),
`augmented` (rotated, cropped, re-exposed copies verified geometrically, `fracturekit.data.copies`) and `name`
(a copy's file name points to its original's, `fracturekit.data.copies.lineage`). Linked films form one cluster.
A leak is a cluster or a patient group whose films sit in more than one split.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.table import Table
from rich.text import Text

from fracturekit import callable_stage
from fracturekit.core.errors import UserError
from fracturekit.core.folderlock import lock_folder, release_on_error
from fracturekit.core.layout import PreparedDataset
from fracturekit.core.outputs import check_free, claim, write_record
from fracturekit.core.parallel import parallel_map
from fracturekit.core.paths import maybe_path, rel_to, user_path
from fracturekit.core.progress import Progress
from fracturekit.data.copies import Signature, copy_pairs, name_links, signature
from fracturekit.data.hashing import NEAR_THRESHOLD, dihedral_phashes, file_sha256, near_pairs, pixel_sha256
from fracturekit.data.imageio import ImageReadError, read_image
from fracturekit.data.split import units

DUPLICATE_COLUMNS = ("cluster", "path", "split", "label", "kind")
# Link kinds, strongest first: the order in which duplicates.csv names a member's kinds.
LINK_KINDS = ("exact", "near", "augmented", "name")
# Links that join nothing: films that may be one film's copies, by names the content test did not confirm or by a
# copy check just under its threshold. Reported when they end in different clusters in different splits.
POSSIBLE_KINDS = {"name": "names point to one original", "copy": "a copy check just under its threshold"}


@dataclass
class AuditItem:
    """One film as the audit sees it: where it is, its split/label/group and its hashes."""

    path: str
    split: str
    label: str
    group: str | None
    sha256: str
    pixel_sha256: str
    phashes: np.ndarray
    copy_sig: Signature | None = None  # None: the augmented-copy search skips this film


@dataclass(frozen=True)
class Link:
    """Films that one signal (a LINK_KINDS kind) says are the same film."""

    members: tuple[int, ...]
    kind: str


@dataclass
class ClusterMember:
    """One file of a duplicate cluster; kind names the signals that tie it to the others ('near+name')."""

    path: str
    split: str
    label: str
    kind: str


@dataclass
class DuplicateCluster:
    """Two or more films that are the same film (exactly, re-encoded, augmented, or by name lineage)."""

    id: int
    members: list[ClusterMember]

    @property
    def splits(self) -> list[str]:
        return sorted({m.split for m in self.members if m.split})

    @property
    def labels(self) -> list[str]:
        return sorted({m.label for m in self.members if m.label})

    @property
    def kinds(self) -> set[str]:
        """Every signal that links films of this cluster."""
        return {k for m in self.members for k in m.kind.split("+")}

    @property
    def kind(self) -> str:
        """The strongest signal in the cluster; `name` only when file names alone hold it together."""
        return min(self.kinds, key=LINK_KINDS.index)


@dataclass(frozen=True)
class PossibleSplit:
    """Films that may be copies of one film (by `signal`: 'name' or 'copy') left in clusters of different splits."""

    signal: str
    films: list[tuple[str, str]]  # (path, split)

    def describe(self, most: int = 3) -> str:
        more = f" +{len(self.films) - most}" if len(self.films) > most else ""
        shown = ", ".join(f"{path}[{split or '-'}]" for path, split in self.films[:most])
        return f"{self.signal}: {shown}{more}"


@dataclass
class AuditResult:
    """Duplicate clusters, label conflicts, patient overlaps and the leak count of one dataset."""

    n_images: int
    threshold: int
    clusters: list[DuplicateCluster] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)
    patient_overlaps: dict[str, list[str]] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    possible_splits: list[PossibleSplit] = field(default_factory=list)

    @property
    def cross_split_clusters(self) -> list[int]:
        """Ids of clusters whose films sit in more than one split."""
        return [c.id for c in self.clusters if len(c.splits) > 1]

    @property
    def leaks(self) -> int:
        """Clusters plus patient groups that cross splits: 0 means the splits can be trusted."""
        return len(self.cross_split_clusters) + len(self.patient_overlaps)

    @property
    def n_duplicate_files(self) -> int:
        return sum(len(c.members) for c in self.clusters)

    @property
    def files_by_link(self) -> dict[str, int]:
        """Films tied to their cluster by each signal (a film tied by two counts under both)."""
        return {k: sum(k in m.kind.split("+") for c in self.clusters for m in c.members) for k in LINK_KINDS}

    def to_dict(self) -> dict:
        """JSON-ready summary (audit.json)."""
        return {
            "images": self.n_images,
            "near_threshold_bits": self.threshold,
            "clusters": len(self.clusters),
            **{f"{k}_clusters": sum(c.kind == k for c in self.clusters) for k in LINK_KINDS},
            "files_in_clusters": self.n_duplicate_files,
            "files_by_link": self.files_by_link,
            "cross_split_clusters": self.cross_split_clusters,
            "label_conflicts": [{"cluster": cid, "labels": self.clusters[cid - 1].labels} for cid in self.conflicts],
            "patient_overlaps": self.patient_overlaps,
            "leaks": self.leaks,
            "unreadable": [{"path": p, "reason": r} for p, r in self.unreadable],
            "possible_families_split": [
                {"signal": ps.signal, "films": [{"path": f, "split": s} for f, s in ps.films]}
                for ps in self.possible_splits
            ],
        }

    def write(self, out: Path) -> None:
        """Write `out/duplicates.csv` (one row per file in a cluster of >= 2) and `out/audit.json`."""
        out.mkdir(parents=True, exist_ok=True)
        with (out / "duplicates.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(DUPLICATE_COLUMNS)
            for c in self.clusters:
                for m in c.members:
                    w.writerow([c.id, m.path, m.split, m.label, m.kind])
        (out / "audit.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def table(self, max_rows: int = 15) -> Table:
        """A rich table: totals, then the clusters that matter most (crossing splits, conflicting labels)."""
        t = Table(title=f"audit: {self.n_images} images, near-duplicate threshold {self.threshold} bits")
        t.add_column("finding")
        t.add_column("count", justify="right")
        t.add_column("examples")
        cross = self.cross_split_clusters
        by_link = self.files_by_link
        rows = [
            *(
                (
                    f"duplicate clusters ({k}{' only' if k == 'name' else ''})",
                    sum(c.kind == k for c in self.clusters),
                    [f"{by_link[k]} films linked by {_LINK_WORDS[k]}"],
                )
                for k in LINK_KINDS
            ),
            ("clusters crossing splits", len(cross), [self._describe(self.clusters[i - 1]) for i in cross]),
            ("label conflicts", len(self.conflicts), [self._describe(self.clusters[i - 1]) for i in self.conflicts]),
            (
                "patients in several splits",
                len(self.patient_overlaps),
                [f"{g}: {'/'.join(s)}" for g, s in self.patient_overlaps.items()],
            ),
            ("unreadable files", len(self.unreadable), [f"{p}: {r}" for p, r in self.unreadable]),
            (
                "possible families split",
                len(self.possible_splits),
                [p.describe() for p in self.possible_splits],
            ),
        ]
        for name, count, examples in rows:
            shown = "\n".join(examples[:max_rows]) + (
                f"\n... {len(examples) - max_rows} more" if len(examples) > max_rows else ""
            )
            t.add_row(name, str(count), Text(shown))  # Text, not a str: file names and [split:label] are not markup
        if self.leaks:
            verdict = "see above"
        elif self.possible_splits:
            verdict = f"no certain leak; {len(self.possible_splits)} possible families split, see above"
        else:
            verdict = "0 = no film or patient in two splits"
        t.add_row("LEAKS", str(self.leaks), verdict)
        return t

    @staticmethod
    def _describe(c: DuplicateCluster) -> str:
        names = ", ".join(f"{Path(m.path).name}[{m.split or '-'}:{m.label or '-'}]" for m in c.members[:3])
        return f"#{c.id} {c.kind}: {names}" + (f" +{len(c.members) - 3}" if len(c.members) > 3 else "")


_LINK_WORDS = {
    "exact": "same bytes or pixels",
    "near": "perceptual hash (flips, 90-degree turns, resizes)",
    "augmented": "geometry + pixels (rotated, cropped, re-exposed copies)",
    "name": "file-name lineage",
}


def audit_items(
    items: Sequence[AuditItem],
    unreadable: Sequence[tuple[str, str]] = (),
    duplicates: list[Link] | None = None,
    scratch: Path | None = None,
) -> AuditResult:
    """Cluster linked films among `items`, then find label conflicts and cross-split leaks.

    duplicates: `duplicate_links(items)` when the caller already has it (prepare), to skip a second search.
    scratch: as in `duplicate_links`.
    """
    every = duplicates if duplicates is not None else duplicate_links(items, scratch=scratch)
    links = joining(every)
    unit_of = units(len(items), [link.members for link in links])
    kinds_of: dict[int, set[str]] = defaultdict(set)
    for link in links:
        for i in link.members:
            kinds_of[i].add(link.kind)

    by_unit: dict[int, list[int]] = defaultdict(list)
    for i, u in enumerate(unit_of):
        by_unit[int(u)].append(i)
    clusters: list[DuplicateCluster] = []
    for idx in sorted((v for v in by_unit.values() if len(v) > 1), key=lambda v: min(items[i].path for i in v)):
        members = [
            ClusterMember(
                items[i].path, items[i].split, items[i].label, "+".join(k for k in LINK_KINDS if k in kinds_of[i])
            )
            for i in sorted(idx, key=lambda i: items[i].path)
        ]
        clusters.append(DuplicateCluster(len(clusters) + 1, members))

    splits_of_group: dict[str, set[str]] = defaultdict(set)
    for it in items:
        if it.group and it.split:
            splits_of_group[it.group].add(it.split)
    overlaps = {g: sorted(s) for g, s in sorted(splits_of_group.items()) if len(s) > 1}
    possible = [
        PossibleSplit(lk.kind.split()[1], [(items[i].path, items[i].split) for i in lk.members])
        for lk in every
        if lk.kind.startswith("possible ")
        and len({unit_of[i] for i in lk.members}) > 1
        and len({items[i].split for i in lk.members}) > 1
    ]
    return AuditResult(
        n_images=len(items) + len(unreadable),
        threshold=NEAR_THRESHOLD,
        clusters=clusters,
        conflicts=[c.id for c in clusters if len(c.labels) > 1],
        patient_overlaps=overlaps,
        unreadable=list(unreadable),
        possible_splits=possible,
    )


def exact_groups(items: Sequence[AuditItem]) -> list[list[int]]:
    """Index sets of films with the same file bytes or the same decoded pixels (size >= 2)."""
    keys: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        for key in ("f" + it.sha256, "p" + it.pixel_sha256):
            if len(key) > 1:  # an unknown hash ("") is no evidence: films without one must not all match
                keys[key].append(i)
    return [idx for idx in keys.values() if len(idx) > 1]


def duplicate_links(items: Sequence[AuditItem], names: bool = True, scratch: Path | None = None) -> list[Link]:
    """Every link among `items`: exact, near (phash), augmented (verified copy) and name lineage, plus possible
    links that join nothing (name groups the content test did not confirm, copy checks just under the
    threshold) for the audit to report when they straddle splits; `joining(links)` drops those.

    A pair that a stronger content signal already links is not linked again by a weaker one (identical pixels
    also have equal phashes), so each member's kind names the strongest content signal plus any name link.
    Exact and near copies are searched for augmented copies through one representative each.
    names=False leaves name lineage out (a check that must rest on content alone).
    scratch: a folder of the caller's output where the copy search may keep a temporary store for its worker
    processes (`copy_pairs`); without one its checks run on this process's threads.
    """
    links = [Link(tuple(idx), "exact") for idx in exact_groups(items)]
    if not items:
        return links
    exact_of = {i: k for k, link in enumerate(links) for i in link.members}
    linked = set()
    for i, j in near_pairs(np.stack([it.phashes for it in items])).tolist():
        if i not in exact_of or exact_of.get(j) != exact_of[i]:
            links.append(Link((i, j), "near"))
            linked.add((i, j))
    found = copy_pairs(
        [it.copy_sig for it in items], map_fn=parallel_map, together=[lk.members for lk in links], scratch=scratch
    )
    for i, j, _ in found.pairs:
        if (i, j) not in linked and (i not in exact_of or exact_of.get(j) != exact_of[i]):
            links.append(Link((i, j), "augmented"))
    links += [Link((i, j), "possible copy") for i, j, _ in found.near_misses]
    if names:
        content = units(len(items), [lk.members for lk in joining(links)])
        joined, unconfirmed = name_links([it.path for it in items], content)
        links += [Link(tuple(idx), "name") for idx in joined] + [Link(tuple(i), "possible name") for i in unconfirmed]
    return links


def joining(links: Iterable[Link]) -> list[Link]:
    """The links that put films in one cluster (the LINK_KINDS; not the possible ones)."""
    return [lk for lk in links if lk.kind in LINK_KINDS]


def film_hashes(pixels: np.ndarray, signed: set[str] | None = None) -> tuple[str, np.ndarray, Signature | None]:
    """(pixel sha256, dihedral phashes, copy signature) of one decoded 8-bit film: what the audit compares.

    signed: the pixel hashes of the films signed so far, shared by the calls of one audit (this call adds its
    own). A film whose pixels were signed already gets no signature (None): `duplicate_links` links it to its
    twin as `exact`, and the copy search looks at an exact group through one member, so its SIFT (~8 ms, most
    of a film's cost) would never be used. Two twins decoded at once may both be signed: harmless.
    """
    key, phashes = pixel_sha256(pixels), dihedral_phashes(pixels)
    if signed is not None and key in signed:
        return key, phashes, None
    sig = signature(pixels)
    if signed is not None:
        signed.add(key)  # once signed: a film whose SIFT failed leaves its twins to be signed
    return key, phashes, sig


def seen_overlap(train_items: Sequence[AuditItem], eval_items: Sequence[AuditItem]) -> list[tuple[int, int]]:
    """Pairs (i, j): eval film j duplicates train film i, by the audit's content test (`duplicate_links`).

    Direct links only (no chaining through a third film): a scored film counts when it is itself a copy of
    a film the model saw. File names are no evidence here: among a run's films and the scored ones a stem is
    rarer than in a whole dataset, and `fractured/10.png` is not `not fractured/10-rotated1.jpg`.
    Used by `evaluate` to refuse scoring a model on its own training films.
    """
    n = len(train_items)
    pairs: set[tuple[int, int]] = set()
    for link in joining(duplicate_links([*train_items, *eval_items], names=False)):
        train = [i for i in link.members if i < n]
        scored = [j - n for j in link.members if j >= n]
        pairs.update((i, j) for i in train for j in scored)
    return sorted(pairs)


def hash_film(
    path: Path, copies: bool = True, signed: set[str] | None = None
) -> tuple[str, str, np.ndarray, Signature | None] | str:
    """(file sha256, pixel sha256, dihedral phashes, copy signature) of one film, or why it cannot be read.

    copies=False skips the SIFT signature (None): for callers whose other side has none to compare with.
    signed: as in `film_hashes` (a pixel twin of a film already signed gets no signature).
    """
    try:
        img = read_image(path)
        if not copies:
            return file_sha256(path), pixel_sha256(img.pixels), dihedral_phashes(img.pixels), None
        return file_sha256(path), *film_hashes(img.pixels, signed)
    except ImageReadError as exc:
        return str(exc)
    except Exception as exc:  # one odd file must not stop the audit of the others
        return f"failed: {type(exc).__name__}: {exc}"


def audit_folder(path: Path, out: Path | None) -> Path | None:
    """Where `audit` writes: `out`, else `<path>/audit` for a prepared dataset, else nowhere (a raw dataset:
    never write into the user's source folder uninvited). On the paths as given, so a caller can name it."""
    if out is not None:
        return out
    return PreparedDataset(path).audit_dir if (path / "manifest.csv").is_file() else None


AUDIT_FILES = ("duplicates.csv", "audit.json")


@release_on_error
def audit(
    path: str | Path,
    out: str | Path | None = None,
    progress: Progress | None = None,
    exist_ok: bool = False,
    also_writes: Sequence[str] = (),
) -> AuditResult:
    """Audit a raw or prepared dataset; write duplicates.csv + audit.json to `audit_folder(path, out)`; return
    the AuditResult.

    An `out` other than the dataset's own audit/ folder is an output folder like any other (`core.outputs`):
    refused when it holds files unless `exist_ok`, which replaces only what an earlier audit wrote there, and a
    file of the user's is never written over. `also_writes`: files the caller writes there afterwards (the CLI's
    label_issues.csv), recorded with the audit's own."""
    path, out = user_path(path), maybe_path(out)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; pass a dataset folder.")
    manifest = path / "manifest.csv"
    own = audit_folder(path, None)  # a prepared dataset's audit/, which prepare wrote and audit rewrites in place
    out = audit_folder(path, out)
    lock = None
    if out is not None and (own is None or out.resolve() != own.resolve()):
        lock = lock_folder(out, "audit")
        planned = [*AUDIT_FILES, *also_writes]
        check_free(out, planned, claim(out, "audit", exist_ok), "audit")
        write_record(out, "audit", planned)  # before writing: a killed audit's files are known too
    if manifest.is_file():
        entries = _prepared_entries(path, manifest)
    else:
        from fracturekit.ingest.source import load_source

        ingest = load_source(path)
        entries = [
            (r.source, rel_to(r.source, path), r.split or "", r.image_label or "", r.group) for r in ingest.records
        ]
    signed: set[str] = set()
    hashed = parallel_map(lambda e: hash_film(e[0], signed=signed), entries, progress, "hashing films")
    items: list[AuditItem] = []
    unreadable: list[tuple[str, str]] = []
    for (_, shown, split, label, group), h in zip(entries, hashed, strict=True):
        if isinstance(h, str):
            unreadable.append((shown, h))
        else:
            items.append(AuditItem(shown, split, label, group, *h))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)  # the copy search's temporary store goes there
    result = audit_items(items, unreadable, scratch=out)
    if out is not None:
        result.write(out)
    if lock is not None:
        lock.release()
    return result


def _prepared_entries(root: Path, manifest: Path) -> list[tuple[Path, str, str, str, str | None]]:
    """(file to hash, shown path, split, label, group) for each `ok` row of a prepared manifest."""
    entries = []
    with manifest.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("status") != "ok":
                continue
            rel = row.get("output_cls") or row.get("output_det")
            if not rel:
                continue
            entries.append((root / rel, rel, row.get("split", ""), row.get("label", ""), row.get("group") or None))
    return entries


callable_stage(__name__)  # `fracturekit.audit(...)` runs audit() above: see fracturekit.Stage
