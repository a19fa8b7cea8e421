"""seen_overlap: the audit's duplicate test between a run's seen films (as recorded) and scored films (hashed)."""

from __future__ import annotations

import numpy as np
import pytest

from fracturekit.audit import AuditItem, seen_overlap
from fracturekit.data.hashing import dihedral_phashes, phash_hex, pixel_sha256
from fracturekit.data.phantoms import generate_phantom
from fracturekit.training.provenance import Seen, seen_items


def _scored(pixels: np.ndarray, sha: str) -> AuditItem:
    return AuditItem("scored", "", "", None, sha, pixel_sha256(pixels), dihedral_phashes(pixels))


@pytest.mark.parametrize(
    ("make", "sha", "found"),
    [
        (lambda img: img, "same-bytes", True),  # the same file: content sha256 matches
        (lambda img: img, "other-bytes", True),  # re-saved: the perceptual hash matches
        (lambda img: img[:, ::-1], "other-bytes", True),  # mirrored: found through the scored film's 8 transforms
        (lambda img: np.rot90(img), "other-bytes", True),  # rotated 90 degrees
        (lambda img: generate_phantom(seed=99, index=7, size=96).image, "other-bytes", False),  # another film
    ],
)
def test_seen_overlap(make, sha: str, found: bool) -> None:
    seen_img = generate_phantom(seed=3, index=1, size=96).image
    row = {
        "split": "train",
        "path": "cls/train/x.png",
        "sha256": "same-bytes",
        "phash": phash_hex(dihedral_phashes(seen_img)[0]),
    }
    train = seen_items(Seen(run=None, task="classify", rows=[row], source="seen.csv", data=None, data_hash=None))  # type: ignore[arg-type]
    pairs = seen_overlap(train, [_scored(np.ascontiguousarray(make(seen_img)), sha)])
    assert (pairs == [(0, 0)]) is found


def test_unknown_pixel_hashes_do_not_match_each_other() -> None:
    # seen films carry no pixel hash (""): two of them must not become "exact duplicates" of each other or of a film
    rows = [{"split": "train", "path": f"{k}.png", "sha256": f"s{k}", "phash": f"{k:016x}"} for k in (1, 2)]
    train = seen_items(Seen(None, "classify", rows, "seen.csv", None, None))  # type: ignore[arg-type]
    other = AuditItem("o", "", "", None, "s3", "", np.full(8, 2**63 - 1, dtype=np.uint64))
    assert seen_overlap(train, [other]) == []


def test_a_film_is_not_seen_by_its_name_alone() -> None:
    # evaluate's old false link: train/not fractured/10-rotated1-rotated1-rotated1.jpg (a forearm) was taken for
    # the scored film fractured/10.png (a tibia) because the names point to one stem
    seen_img, scored_img = (generate_phantom(seed=3, index=i, size=160).image for i in (1, 2))
    train = [
        AuditItem(
            "not fractured/10-rotated1-rotated1-rotated1.jpg", "train", "", None, "s1", "", dihedral_phashes(seen_img)
        )
    ]
    scored = AuditItem("fractured/10.png", "", "", None, "s2", pixel_sha256(scored_img), dihedral_phashes(scored_img))
    assert seen_overlap(train, [scored]) == []
