"""Split assignment: ratios per label, groups and duplicate clusters never straddle splits."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from fracturekit.core.errors import UserError
from fracturekit.data.split import assign_splits, check_ratios, film_units, manifest_units, parse_ratios, unit_basis


@pytest.mark.parametrize("seed", range(8))
def test_leak_free_property(seed: int) -> None:
    """Random labels, patient groups and duplicate pairs: no unit in two splits, ratios within tolerance."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(150, 400))
    labels = [str(x) for x in rng.choice(["fracture", "no_fracture", "other"], size=n, p=[0.3, 0.6, 0.1])]
    groups = rng.integers(0, n // 3, size=n)
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(int(g), []).append(i)
    dup_pairs = [list(rng.choice(n, 2, replace=False)) for _ in range(n // 20)]
    splits = assign_splits(labels, [*by_group.values(), *dup_pairs], ratios=(0.7, 0.15, 0.15), seed=seed)
    for idx in [*by_group.values(), *dup_pairs]:
        assert len({splits[i] for i in idx}) == 1
    share = Counter(splits)
    assert abs(share["train"] / n - 0.7) < 0.08 and abs(share["test"] / n - 0.15) < 0.08
    for label in ("fracture", "no_fracture"):
        assert {s for s, lab in zip(splits, labels, strict=True) if lab == label} == {"train", "val", "test"}


def test_seed_changes_and_reproduces() -> None:
    labels = ["a", "b"] * 50
    assert assign_splits(labels, seed=1) == assign_splits(labels, seed=1) != assign_splits(labels, seed=2)


def test_fixed_splits_kept_and_free_members_follow() -> None:
    labels = ["fracture"] * 4 + ["no_fracture"] * 20
    fixed = ["test", "val", "train", "train"] + [None] * 20
    splits = assign_splits(labels, together=[[0, 4]], fixed=fixed, seed=0)
    assert splits[:4] == ["test", "val", "train", "train"]
    assert splits[4] == "test"  # unit-mate of a fixed test film
    assert set(splits[5:]) == {"train", "val", "test"}


def test_zero_ratio_split_stays_empty() -> None:
    assert "test" not in assign_splits(["a", "b"] * 30, ratios=(0.8, 0.2, 0.0))


@pytest.mark.parametrize(
    "text",
    [
        "0.7,0.15",  # two values
        "0.7,0.2,0.2",  # sums to 1.1
        "0,0.5,0.5",  # no training data
        "0.9,-0.1,0.2",  # negative
        "a,b,c",  # not numbers
    ],
)
def test_bad_ratios_are_user_errors(text: str) -> None:
    with pytest.raises(UserError):
        parse_ratios(text)


def test_good_ratios() -> None:
    assert parse_ratios("0.6,0.2,0.2") == check_ratios((0.6, 0.2, 0.2))


def test_multi_film_units_reach_every_split() -> None:
    """Pairs (patients, duplicate clusters) are spread over splits, not all sent to train first."""
    labels = ["a"] * 300
    pairs = [[i, i + 1] for i in range(0, 100, 2)]
    splits = assign_splits(labels, pairs, seed=0)
    homes = Counter(splits[p[0]] for p in pairs)
    assert homes["val"] >= 4 and homes["test"] >= 4 and homes["train"] >= 25


def _partition(ids: np.ndarray) -> list[list[int]]:
    """Unit ids -> the sets of row indices sharing one id, sorted (ids themselves are arbitrary)."""
    sets: dict[int, list[int]] = {}
    for i, u in enumerate(ids):
        sets.setdefault(int(u), []).append(i)
    return sorted(sets.values())


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        # group only: one patient's two films are one unit
        ({"group": ["p1", "p1", "p2", "p3"]}, [[0, 1], [2], [3]]),
        # cluster only: a film and its copy are one unit
        ({"cluster": ["", "c1", "", "c1"]}, [[0], [1, 3], [2]]),
        # chained: p1 (0,1) -> copy cluster c1 (1,2) -> p2 (2,3): all four are one unit; 4 stays alone
        ({"group": ["p1", "p1", "p2", "p2", "p3"], "cluster": ["", "c1", "c1", "", ""]}, [[0, 1, 2, 3], [4]]),
        # empty strings, blanks and missing values link nothing
        ({"group": ["", "", " ", None], "cluster": [None, "", None, ""]}, [[0], [1], [2], [3]]),
        # the same value in group and in cluster is not a link between the two columns
        ({"group": ["x", "", ""], "cluster": ["", "x", ""]}, [[0], [1], [2]]),
        # a manifest from before clusters were recorded: groups only
        ({"group": ["p1", "", "p1"]}, [[0, 2], [1]]),
        # neither column: every film its own unit
        ({"label": ["fracture", "fracture"]}, [[0], [1]]),
    ],
)
def test_manifest_units(columns: dict[str, list], expected: list[list[int]]) -> None:
    assert _partition(manifest_units(pd.DataFrame(columns))) == expected


def test_film_units_by_output_path() -> None:
    manifest = pd.DataFrame(
        {
            "output_cls": ["cls/test/a/1.png", "cls/test/a/2.png", "cls/train/a/3.png", ""],
            "group": ["p1", "p1", "p2", "p2"],
            "cluster": ["", "", "", ""],
        }
    )
    ids = film_units(manifest, "output_cls", ["cls/test/a/1.png", "cls/test/a/2.png", "cls/test/a/new.png"])
    assert ids[0] == ids[1]  # one patient
    assert len(set(ids.tolist())) == 2  # a film the manifest does not list is a unit of its own


@pytest.mark.parametrize(
    ("columns", "linked_by", "warns"),
    [
        (["group", "cluster"], ["group", "cluster"], False),  # current manifest
        (["group"], ["group"], True),  # old manifest: clusters unknown, said so
    ],
)
def test_unit_basis(columns: list[str], linked_by: list[str], warns: bool) -> None:
    basis = unit_basis(pd.DataFrame(columns=columns))
    assert basis["linked_by"] == linked_by
    assert ("warning" in basis) == warns
