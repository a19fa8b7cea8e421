"""audit(): duplicates across splits (flipped / rotated / resized copies), conflicts, patient overlap."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from fracturekit.audit import AuditItem, audit, audit_items, film_hashes
from fracturekit.data.hashing import dihedral_phashes
from fracturekit.data.phantoms import generate_phantom


def _film(i: int, size: int = 96) -> np.ndarray:
    return generate_phantom(seed=11, index=i, size=size).image


def _raw_split_dataset(root: Path, n: int = 6) -> Path:
    """`train|test/<fractured|normal>/` class folders of distinct phantoms."""
    for s, base in (("train", 0), ("test", 500)):
        for cls, offset in (("fractured", 0), ("normal", 100)):
            (root / s / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                cv2.imwrite(str(root / s / cls / f"{s}_{cls}_{i}.png"), _film(base + offset + i))
    return root


@pytest.mark.parametrize(
    "transform",
    [
        lambda a: a.copy(),  # exact pixel copy under another name
        lambda a: a[:, ::-1],  # mirrored
        lambda a: np.rot90(a),  # rotated 90 degrees
        lambda a: cv2.resize(a, (60, 60), interpolation=cv2.INTER_AREA),  # downscaled
        lambda a: cv2.resize(np.rot90(a[::-1], 3), (130, 130)),  # flipped, rotated and upscaled
    ],
)
def test_copy_across_splits_is_a_leak(tmp_path: Path, transform: Callable[[np.ndarray], np.ndarray]) -> None:
    src = _raw_split_dataset(tmp_path / "raw")
    copy = np.ascontiguousarray(transform(cv2.imread(str(src / "train/fractured/train_fractured_2.png"), 0)))
    cv2.imwrite(str(src / "test" / "fractured" / "sneaky.jpg"), copy, [cv2.IMWRITE_JPEG_QUALITY, 85])
    res = audit(src, tmp_path / "report")
    assert len(res.clusters) == 1 and res.clusters[0].splits == ["test", "train"]
    assert res.leaks == 1 and res.n_images == 25
    with (tmp_path / "report" / "duplicates.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["cluster"] for r in rows] == ["1", "1"] and {Path(r["path"]).name for r in rows} == {
        "sneaky.jpg",
        "train_fractured_2.png",
    }
    assert list(rows[0]) == ["cluster", "path", "split", "label", "kind"]


def test_a_pixel_twin_is_signed_once() -> None:
    # the copy search looks at an exact group through one member: a second film of the same pixels gets no SIFT
    signed: set[str] = set()
    first, twin, other = (film_hashes(img, signed) for img in (_film(3), _film(3).copy(), _film(4)))
    assert first[2] is not None and not first[2].empty
    assert twin[2] is None and twin[0] == first[0] and (twin[1] == first[1]).all()  # hashes still computed
    assert other[2] is not None  # another film is signed
    assert film_hashes(_film(3))[2] is not None  # no shared set: every film signed


def test_clean_dataset_has_no_findings(tmp_path: Path) -> None:
    res = audit(_raw_split_dataset(tmp_path / "raw"))
    assert (res.clusters, res.conflicts, res.patient_overlaps, res.leaks) == ([], [], {}, 0)
    assert not (tmp_path / "raw" / "audit").exists()  # nothing written into a raw source without --out


def _item(path: str, split: str, label: str, group: str | None, img: np.ndarray, sha: str) -> AuditItem:
    return AuditItem(path, split, label, group, sha, str(hash(img.tobytes())), dihedral_phashes(img))


def test_conflicts_overlaps_and_kinds() -> None:
    a, b, c, d = (_film(i) for i in (1, 2, 3, 4))
    items = [
        _item("a1", "train", "fracture", "P1", a, "s1"),
        _item("a2", "train", "no_fracture", "P2", a, "s1"),  # same bytes, other label: conflict, no leak
        _item("b1", "val", "fracture", "P3", b, "s3"),
        _item("b2", "test", "fracture", "P4", b[:, ::-1].copy(), "s4"),  # mirrored: near, crosses splits
        _item("c1", "train", "fracture", "P5", c, "s5"),
        _item("d1", "test", "fracture", "P5", d, "s6"),  # same patient in train and test
    ]
    res = audit_items(items)
    kinds = {m.path: m.kind for cl in res.clusters for m in cl.members}
    assert kinds == {"a1": "exact", "a2": "exact", "b1": "near", "b2": "near"}
    assert [res.clusters[i - 1].labels for i in res.conflicts] == [["fracture", "no_fracture"]]
    assert res.patient_overlaps == {"P5": ["test", "train"]}
    assert res.leaks == 2 and len(res.cross_split_clusters) == 1


def test_audit_of_prepared_dataset(prepared_phantoms: Path, tmp_path: Path) -> None:
    res = audit(prepared_phantoms, tmp_path / "a")
    assert res.n_images == 60 and res.leaks == 0 and (tmp_path / "a" / "audit.json").is_file()


def test_unreadable_file_is_listed_not_fatal(tmp_path: Path) -> None:
    src = _raw_split_dataset(tmp_path / "raw", n=2)
    (src / "test" / "normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    res = audit(src)
    assert res.n_images == 9 and [Path(p).name for p, _ in res.unreadable] == ["broken.png"]


def _write(root: Path, rel: str, img: np.ndarray) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / rel), img)


@pytest.mark.parametrize(
    ("files", "clusters", "possible"),
    [
        # distinct films sharing a stem across class folders (the Kaggle multi-region case): no link by name
        ({"train/fractured/10.png": 1, "train/not fractured/10-rotated1.jpg": 2}, 0, 0),
        # ...nor in two splits: their class folders make them two name groups
        ({"train/fractured/10.png": 1, "test/not fractured/10-rotated1.jpg": 2}, 0, 0),
        # a copy's name in one class folder and the other split, content unlinked: no link, but the audit says a
        # family may be split
        ({"train/fractured/10.png": 1, "test/fractured/10-rotated1.jpg": 2}, 0, 1),
        # a numbered series of distinct films in two splits: ` (N)` is no lineage, nothing to report
        ({"train/fractured/fracture (1).png": 1, "test/fractured/fracture (2).png": 2}, 0, 0),
        # a real copy under a rotation-chain name in the other split: one cluster, a leak, nothing 'possible'
        ({"train/fractured/7.png": 3, "test/fractured/7-rotated1.png": 3}, 1, 0),
    ],
)
def test_names_alone_never_link_films(tmp_path: Path, files: dict[str, int], clusters: int, possible: int) -> None:
    for rel, film in files.items():
        _write(tmp_path / "raw", rel, _film(film, 160))
    res = audit(tmp_path / "raw")
    assert (len(res.clusters), len(res.possible_splits)) == (clusters, possible)
    if possible:  # reported as possible, never counted as a leak
        assert res.leaks == 0 and res.to_dict()["possible_families_split"][0]["signal"] == "name"


@pytest.mark.slow
@pytest.mark.realdata
def test_a_copy_family_of_a_real_film_is_one_cluster(tmp_path: Path) -> None:
    # a Kaggle-like family of a real wrist film: the film at full size, 224 px rotation chains three deep (the
    # aspect ratio squashed), byte twins, PNGs, files in both split folders; beside it distinct real films, one
    # called `<stem> (1)` as Windows names a second file. Phantoms are too crisp to fail the old search.
    import sys

    from conftest import shared_data

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from augcopies import copy_family

    films = sorted((shared_data("fracatlas") / "images" / "Non_fractured").glob("*.jpg"))[:8]
    gray = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in films]
    raw = tmp_path / "raw"
    family = copy_family(gray[0], "5", np.random.default_rng(1))
    for f in family:
        dest = raw / f.split / "not fractured" / f.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if f.pixels is None:
            dest.write_bytes(next(raw.rglob(f.twin_of)).read_bytes())
        else:
            cv2.imwrite(str(dest), f.pixels)
    _write(raw, "train/not fractured/5 (1).jpg", gray[1])
    for i, g in enumerate(gray[2:]):
        _write(raw, f"{('train', 'test')[i % 2]}/not fractured/{20 + i}.png", g)
    res = audit(raw)
    names = {f.name for f in family}
    holding = [c for c in res.clusters if names & {Path(m.path).name for m in c.members}]
    assert len(holding) == 1 and {Path(m.path).name for m in holding[0].members} == names
    # FracAtlas itself holds IMG0000003 = IMG0000005 (21.png, 23.png, both in test): a cluster, no leak
    assert res.leaks == 1  # the family sits in train and test: one leak, the whole family, found as one
