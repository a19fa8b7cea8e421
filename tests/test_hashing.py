"""Content and perceptual hashes: transformed copies stay near, different films stay far."""

from __future__ import annotations

import cv2
import imagehash
import numpy as np
import pytest
from PIL import Image

from fracturekit.data.hashing import (
    NEAR_THRESHOLD,
    _rows_per_block,
    dihedral_phashes,
    min_dihedral_distances,
    near_pairs,
    nearest_distances,
    phash_hex,
    pixel_sha256,
)
from fracturekit.data.phantoms import generate_phantom


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_GRAYSCALE)


@pytest.fixture(scope="module")
def film() -> np.ndarray:
    return generate_phantom(seed=3, index=0, size=256).image


@pytest.mark.parametrize(
    "transform",
    [
        lambda a: a[:, ::-1],  # horizontal flip
        lambda a: a[::-1, :],  # vertical flip
        lambda a: np.rot90(a, 1),  # 90 degrees
        lambda a: np.rot90(a, 3),  # 270 degrees
        lambda a: np.rot90(a[:, ::-1], 1),  # transpose-like (flip + rotate)
        lambda a: cv2.resize(a, (128, 128), interpolation=cv2.INTER_AREA),  # half size
        lambda a: _jpeg(a, 70),  # lossy re-encoding
        lambda a: _jpeg(cv2.resize(np.rot90(a), (180, 180)), 60),  # rotate + resize + re-encode
    ],
)
def test_transformed_copy_is_near(film: np.ndarray, transform) -> None:
    copy = np.ascontiguousarray(transform(film))
    hashes = np.stack([dihedral_phashes(film), dihedral_phashes(copy)])
    assert min_dihedral_distances(hashes, slice(0, 1))[0, 1] <= NEAR_THRESHOLD


def test_different_films_are_far() -> None:
    hashes = np.stack([dihedral_phashes(generate_phantom(seed=5, index=i, size=128).image) for i in range(12)])
    assert (nearest_distances(hashes) > NEAR_THRESHOLD).mean() >= 0.9


def test_near_pairs_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=(40, 8), dtype=np.uint64)
    base[7] = base[3]  # identical
    base[9, 0] = base[2, 5] ^ np.uint64(0b11)  # film 9 is a transform of film 2 two bits away
    pairs = {tuple(p) for p in near_pairs(base, threshold=2, block=16).tolist()}
    brute = set()
    for i in range(40):
        for j in range(40):
            d = min(bin(int(base[i, 0]) ^ int(base[j, t])).count("1") for t in range(8))
            if i != j and d <= 2:
                brute.add((min(i, j), max(i, j)))
    assert pairs == brute and {(3, 7), (2, 9)} <= pairs
    # blocks sized by a memory budget (the default, and 1 row at a 2 KB budget: 40 x 8 hashes x 8 bytes) agree
    assert _rows_per_block(40, budget=2048) == 1
    assert {tuple(p) for p in near_pairs(base, threshold=2, block=_rows_per_block(40, budget=2048)).tolist()} == brute
    assert {tuple(p) for p in near_pairs(base, threshold=2).tolist()} == brute


def test_pixel_hash_ignores_container(film: np.ndarray) -> None:
    png = cv2.imdecode(cv2.imencode(".png", film)[1], cv2.IMREAD_UNCHANGED)
    bmp = cv2.imdecode(cv2.imencode(".bmp", film)[1], cv2.IMREAD_GRAYSCALE)
    assert pixel_sha256(png) == pixel_sha256(bmp) != pixel_sha256(film[:, ::-1].copy())


@pytest.mark.parametrize("index", range(4))
def test_bits_equal_imagehash_phash(index: int) -> None:
    """The vectorized hash is imagehash.phash, bit for bit, on each of the 8 transforms of the 32 px input."""
    film = generate_phantom(seed=4, index=index, size=200).image
    small = cv2.resize(film, (32, 32), interpolation=cv2.INTER_AREA)
    transforms = [np.rot90(f, k) for f in (small, small[:, ::-1]) for k in range(4)]
    expected = [str(imagehash.phash(Image.fromarray(np.ascontiguousarray(t)))) for t in transforms]
    assert [phash_hex(h) for h in dihedral_phashes(film)] == expected
