"""bench/augcopies.py: the augmented-copy generator the leakage and near-duplicate benches share."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from fracturekit.data.phantoms import generate_phantom

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from augcopies import NAME_PATTERNS, STRENGTHS, augment_copy, copy_name  # noqa: E402


@pytest.fixture(scope="module")
def film() -> np.ndarray:
    return generate_phantom(0, 0, size=192).image


@pytest.mark.parametrize("strength", sorted(STRENGTHS))
def test_copy_is_seeded_gray_and_within_the_strengths_size_range(film: np.ndarray, strength: str) -> None:
    s = STRENGTHS[strength]
    a = [augment_copy(film, np.random.default_rng(7), strength) for _ in range(2)]
    assert np.array_equal(a[0], a[1])  # same seed, same copy
    assert a[0].dtype == np.uint8 and a[0].ndim == 2
    # the long side shrinks by at most crop x resize, and grows only by a border (<= 2 x 8%)
    lo = int(max(film.shape) * s.min_crop * s.resize[0]) - 1
    assert lo <= max(a[0].shape) <= int(max(film.shape) * 1.17) + 1
    assert not np.array_equal(augment_copy(film, np.random.default_rng(8), strength), a[0])  # another seed differs


def test_copy_differs_from_the_film_but_keeps_its_content(film: np.ndarray) -> None:
    copy = augment_copy(film, np.random.default_rng(3), "default")
    assert copy.shape != film.shape or not np.array_equal(copy, film)
    assert 10 < copy.mean() < 245  # not blanked out by the intensity changes


def test_augment_copy_refuses_colour_input(film: np.ndarray) -> None:
    with pytest.raises(ValueError, match="grayscale uint8"):
        augment_copy(np.dstack([film] * 3), np.random.default_rng(0))


def test_names_keep_the_stem_or_are_fresh() -> None:
    rng = np.random.default_rng(0)
    names = [copy_name("IMG0000019", k, rng) for k in range(1, 201)]
    fresh = [n for n in names if not n.startswith("IMG0000019")]
    assert all(re.fullmatch(r"img_[0-9a-f]{10}\.jpg", n) for n in fresh)
    assert 0.15 < len(fresh) / len(names) < 0.35  # RENAMED_SHARE is 0.25
    kinds = {p.split("}", 1)[1].split("{")[0] for p in NAME_PATTERNS}  # '-rotated', '_aug', ' - Copy (', ...
    assert all(any(k in n for n in names) for k in kinds)  # every pattern occurs in 200 draws


def test_a_copy_family_has_the_shape_of_a_kaggle_upload() -> None:
    from augcopies import CHAIN_SIDE, FAMILY_SIZE, TWIN_SUFFIXES, copy_family

    full = generate_phantom(0, 1, size=400).image
    files = copy_family(full, "7", np.random.default_rng(3))
    again = copy_family(full, "7", np.random.default_rng(3))
    assert [f.name for f in files] == [f.name for f in again]  # seeded
    assert FAMILY_SIZE[0] <= len(files) <= FAMILY_SIZE[1]
    assert files[0].name == "7.jpg" and files[0].pixels is full  # the film itself, full size
    made = {f.name: f for f in files}
    assert len(made) == len(files)  # no name twice
    for f in files[1:]:
        if f.pixels is None:  # a byte twin: its name is its original's plus a Windows copy suffix
            stem = Path(f.twin_of).stem
            assert Path(f.name).stem[len(stem) :] in (*TWIN_SUFFIXES, " (2)") and made[f.twin_of].pixels is not None
        else:  # a chain member: 224 x 224, named by its rotations
            assert f.pixels.shape == (CHAIN_SIDE, CHAIN_SIDE)
            assert re.fullmatch(r"7(-rotated\d+){1,3}\.(jpg|png)", f.name)
    depth = max(f.name.count("-rotated") for f in files)
    assert depth >= 2 and {f.split for f in files} <= {"train", "test"}
