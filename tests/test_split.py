"""Split assignment: ratios per label, groups and duplicate clusters never straddle splits."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fracturekit.errors import UserError
from fracturekit.split import assign_splits, check_ratios, parse_ratios


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
