"""Kaggle-style augmented copies of radiographs, seeded: the generator shared by the leakage and near-duplicate benches.

Public fracture sets are often "augmented" before upload: every film is saved again a few times, rotated by a
few degrees, re-cropped, brightened, mirrored, re-encoded, under names like `<name>-rotated1 - Copy (1).jpg` or
under a new name altogether, and the whole folder is then split at random. This module makes such copies of a
grayscale film so that benches can measure what the copies do to a split and whether the audit finds them.

    from augcopies import STRENGTHS, augment_copy, copy_name   # bench/ is on sys.path for `python bench/x.py`
    rng = np.random.default_rng(seed)
    copy = augment_copy(gray, rng, "default")                  # uint8 (H', W'), already JPEG re-encoded once
    name = copy_name("IMG0000019", 1, rng)                      # e.g. 'IMG0000019-rotated1 - Copy (1).jpg'

Every random draw comes from `rng`, so one seed gives the same copies and names on every machine (OpenCV's
resampling and JPEG codec are deterministic for a given build).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASS_DIRS = {"Fractured": "fractured", "Non_fractured": "not fractured"}  # FracAtlas folder -> Kaggle folder


@dataclass(frozen=True)
class Strength:
    """Ranges of one augmentation strength; each copy draws its own values inside them."""

    rotation: tuple[float, float]  # |angle| in degrees, random sign; the canvas keeps its size, corners go black
    min_crop: float  # each side keeps a uniform fraction in [min_crop, 1] of its length, at a random offset
    brightness: float  # +- fraction of 255 added
    contrast: float  # +- fraction: pixels scaled about their mean by 1 +- this
    gamma: tuple[float, float]
    mirror: float  # probability of a horizontal flip
    rot90: float  # probability of a 90/180/270 degree turn
    jpeg: tuple[int, int]  # quality range of the re-encoding
    resize: tuple[float, float]  # scale factor of the final film
    mark: float  # probability of an added border or a burned-in text
    clahe: float  # probability of CLAHE (OpenCV, clip 2.0, 8x8 tiles)


# "default" is what the controlled check used (rotation 3-15 deg, crop to 85-100%, +-15% brightness and
# contrast, half mirrored, JPEG 70-95) plus gamma, 90-degree turns, rescaling and marks. The smallest angle is a
# fifth of the largest so that a "rotated" copy is really rotated, not a byte-level near-duplicate.
STRENGTHS: dict[str, Strength] = {
    "mild": Strength((1.0, 5.0), 0.95, 0.05, 0.05, (0.9, 1.1), 0.5, 0.0, (85, 95), (0.8, 1.0), 0.0, 0.0),
    "default": Strength((3.0, 15.0), 0.85, 0.15, 0.15, (0.8, 1.25), 0.5, 0.2, (70, 95), (0.6, 1.0), 0.2, 0.0),
    "strong": Strength((4.0, 20.0), 0.75, 0.15, 0.15, (0.8, 1.25), 0.5, 0.2, (70, 95), (0.6, 1.0), 0.2, 0.5),
}

_TEXTS = ("L", "R", "AUG", "PA", "LAT", "2019-03-14", "x-ray")


def _rotate(img: np.ndarray, angle: float) -> np.ndarray:
    h, w = img.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _crop(img: np.ndarray, rng: np.random.Generator, min_crop: float) -> np.ndarray:
    h, w = img.shape
    ch, cw = (max(8, round(n * rng.uniform(min_crop, 1.0))) for n in (h, w))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return img[y : y + ch, x : x + cw]


def _intensity(img: np.ndarray, rng: np.random.Generator, s: Strength) -> np.ndarray:
    a = img.astype(np.float32)
    a = (
        (a - a.mean()) * (1 + rng.uniform(-s.contrast, s.contrast))
        + a.mean()
        + 255 * rng.uniform(-s.brightness, s.brightness)
    )
    a = 255 * (np.clip(a, 0, 255) / 255) ** rng.uniform(*s.gamma)
    return np.clip(a + 0.5, 0, 255).astype(np.uint8)


def _mark(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A black or white border (2-8% per side), or a burned-in text label in OpenCV's built-in Hershey font."""
    h, w = img.shape
    if rng.random() < 0.5:
        pad = [round(n * rng.uniform(0.02, 0.08)) for n in (h, h, w, w)]
        return cv2.copyMakeBorder(img, *pad, cv2.BORDER_CONSTANT, value=255 if rng.random() < 0.3 else 0)
    img = img.copy()
    scale = max(h, w) / 600 * rng.uniform(0.8, 1.6)
    org = (int(rng.uniform(0.03, 0.6) * w), int(rng.uniform(0.1, 0.95) * h))
    text = _TEXTS[int(rng.integers(len(_TEXTS)))]
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, max(1, round(2 * scale)), cv2.LINE_AA)
    return img


def augment_copy(img: np.ndarray, rng: np.random.Generator, strength: str = "default") -> np.ndarray:
    """One augmented copy of the grayscale uint8 film `img` at `strength` ('mild' | 'default' | 'strong').

    Order: rotation, crop, rescale, mirror, 90-degree turn, brightness/contrast, gamma, CLAHE, border or text,
    then one JPEG encode/decode round trip, so the returned pixels carry the re-encoding artefacts.
    """
    if img.ndim != 2 or img.dtype != np.uint8:
        raise ValueError(f"augment_copy wants a grayscale uint8 film, got {img.dtype} {img.shape}")
    s = STRENGTHS[strength]
    out = _rotate(img, float(rng.uniform(*s.rotation)) * (1 if rng.random() < 0.5 else -1))
    out = _crop(out, rng, s.min_crop)
    f = float(rng.uniform(*s.resize))
    out = cv2.resize(
        out, (max(8, round(out.shape[1] * f)), max(8, round(out.shape[0] * f))), interpolation=cv2.INTER_AREA
    )
    if rng.random() < s.mirror:
        out = out[:, ::-1]
    if rng.random() < s.rot90:
        out = np.rot90(out, int(rng.integers(1, 4)))
    out = _intensity(np.ascontiguousarray(out), rng, s)
    if rng.random() < s.clahe:
        out = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(out)
    if rng.random() < s.mark:
        out = _mark(out, rng)
    quality = int(rng.integers(s.jpeg[0], s.jpeg[1] + 1))
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode the augmented copy")
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


# Name patterns seen on Kaggle fracture sets; `{stem}` is the original's name without extension, `{k}` the copy
# number (1-based), `{j}` a small "Copy (j)" counter. RENAMED_SHARE of copies get a fresh name with no lineage.
NAME_PATTERNS: tuple[str, ...] = (
    "{stem}-rotated{k} - Copy ({j}).jpg",
    "{stem}-rotated{k}.jpg",
    "{stem}_aug{k}.jpg",
    "{stem} - Copy ({k}).jpg",
    "{stem} ({k}).jpg",
    "{stem}_flip{k}.jpg",
)
RENAMED_SHARE = 0.25


def copy_name(stem: str, k: int, rng: np.random.Generator) -> str:
    """A Kaggle-like file name for copy `k` of the film named `stem`; a quarter are renamed with no trace of it."""
    if rng.random() < RENAMED_SHARE:
        return f"img_{int(rng.integers(0, 2**40)):010x}.jpg"
    pattern = NAME_PATTERNS[int(rng.integers(len(NAME_PATTERNS)))]
    return pattern.format(stem=stem, k=k, j=int(rng.integers(1, 4)))


# Copy families, the shape of a real augmented Kaggle upload ("Fracture Multi-Region X-ray Data", measured): one
# film kept at full size plus 50-200 files made from it, 224 x 224 copies (the aspect ratio squashed) rotated in
# chains of one to three successive rotations of 2-12 degrees (`1-rotated1.jpg`, `1-rotated3-rotated2.jpg`), each
# saved again as byte twins named ` - Copy`, ` - Copy (1)`, ` (1)`; some as PNG; a few in another split folder.
CHAIN_SIDE = 224
CHAIN_ANGLE = (2.0, 12.0)
CHAIN_CROP = 0.9  # each rotation also keeps >= 90% of each side (a zoom), then resizes back to 224 x 224
TWIN_SUFFIXES = (" - Copy", " - Copy (1)", " (1)")
FAMILY_SIZE = (50, 200)


@dataclass(frozen=True)
class FamilyFile:
    """One file of a copy family: its name, its split folder, and its pixels or the file it is a byte twin of."""

    name: str
    split: str
    pixels: np.ndarray | None  # None: a byte twin of `twin_of`
    twin_of: str | None = None


def _chain_step(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One link of a chain: rotate 2-12 degrees either way (black corners), zoom to >= 90%, back to 224 x 224."""
    angle = float(rng.uniform(*CHAIN_ANGLE)) * (1 if rng.random() < 0.5 else -1)
    out = _crop(_rotate(img, angle), rng, CHAIN_CROP)
    return cv2.resize(out, (CHAIN_SIDE, CHAIN_SIDE), interpolation=cv2.INTER_AREA)


def _saves(name: str, pixels: np.ndarray, rng: np.random.Generator, other_split: float) -> list[FamilyFile]:
    """A member saved 1-3 times: itself plus byte twins with Windows copy suffixes, each in train or test."""
    ext = ".png" if rng.random() < 0.15 else ".jpg"
    split = lambda: "test" if rng.random() < other_split else "train"  # noqa: E731
    first = FamilyFile(name + ext, split(), pixels)
    twins = rng.choice(len(TWIN_SUFFIXES), int(rng.integers(0, 3)), replace=False)
    return [first, *(FamilyFile(name + TWIN_SUFFIXES[t] + ext, split(), None, first.name) for t in sorted(twins))]


def copy_family(full: np.ndarray, stem: str, rng: np.random.Generator, other_split: float = 0.15) -> list[FamilyFile]:
    """A Kaggle-like family of 50-200 files made from the grayscale film `full`, named after `stem`.

    The film itself (full size, with 0-2 byte twins) and chains of 224 px copies: 3-6 first rotations of the
    squashed film, 2-5 rotations of each, 0-4 of each of those. Drawn again until the file count lies in
    FAMILY_SIZE, so every draw comes from `rng` and one seed gives one family.
    """
    if full.ndim != 2 or full.dtype != np.uint8:
        raise ValueError(f"copy_family wants a grayscale uint8 film, got {full.dtype} {full.shape}")
    base = cv2.resize(full, (CHAIN_SIDE, CHAIN_SIDE), interpolation=cv2.INTER_AREA)
    while True:
        files = [FamilyFile(f"{stem}.jpg", "train", full)]
        for t in sorted(rng.choice(2, int(rng.integers(0, 3)), replace=False)):  # `1 - Copy.jpg`, `1 (2).jpg`
            files.append(FamilyFile(f"{stem}{(' - Copy', ' (2)')[t]}.jpg", "train", None, files[0].name))
        level = [(stem, base)]
        for fanout in ((3, 6), (2, 5), (0, 4)):
            nxt = []
            for name, img in level:
                for k in range(1, int(rng.integers(fanout[0], fanout[1] + 1)) + 1):
                    child = (f"{name}-rotated{k}", _chain_step(img, rng))
                    files += _saves(*child, rng, other_split)
                    nxt.append(child)
            level = nxt
        if FAMILY_SIZE[0] <= len(files) <= FAMILY_SIZE[1]:
            return files


def distinct_films(files: list[Path], n: int, rng: np.random.Generator) -> list[Path]:
    """`n` FracAtlas films in a seeded order, balanced between the two classes, none within the audit's
    near-duplicate distance of another (FracAtlas holds repeat films), so the built lineage is the only link."""
    from fracturekit.core.parallel import parallel_map
    from fracturekit.data.hashing import NEAR_THRESHOLD, dihedral_phashes

    by_class = {c: [p for p in files if p.parent.name == c] for c in CLASS_DIRS}
    order = {c: [f[i] for i in rng.permutation(len(f))] for c, f in by_class.items()}
    pool = [p for pair in zip(*order.values(), strict=False) for p in pair][: int(1.3 * n) + 20]
    hashes = np.stack(parallel_map(lambda p: dihedral_phashes(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)), pool))
    kept: list[int] = []
    for i in range(len(pool)):
        ident = hashes[i, 0]
        if all(np.bitwise_count(ident ^ hashes[j]).min() > NEAR_THRESHOLD for j in kept):
            kept.append(i)
    if len(kept) < n:
        raise SystemExit(f"only {len(kept)} distinct FracAtlas films drawn, {n} needed")
    return [pool[i] for i in kept[:n]]


def build_families(
    files: list[Path], n_large: int, n_small: int, n_single: int, seed: int, root: Path, n_heldout: int = 0
) -> tuple[dict[str, str], set[str], list[Path]]:
    """A Kaggle-like augmented set under `root/{train,test}/<class>/`, from distinct FracAtlas films.

    `n_large` copy families of 50-200 files (augcopies.copy_family), `n_small` families of the film plus 1-12
    augmented copies under Kaggle-like or fresh names (augcopies.augment_copy/copy_name), `n_single` single films.
    Films are named 1, 2, ... in each class folder (so `fractured/3.jpg` and `not fractured/3.jpg` are distinct
    films), and every second large family meets a distinct film named `<stem> (1).jpg` in its folder, as when
    Windows renames a second file of one name. Returns {path under root: original film}, the colliding files, and
    `n_heldout` further distinct films that are in none of them (for a held-out test).
    """
    from fracturekit.core.parallel import parallel_map

    rng = np.random.default_rng(seed)
    n_coll = n_large // 2
    films = distinct_films(files, n_large + n_small + n_single + 2 * n_coll + n_heldout, rng)
    films, heldout = films[: len(films) - n_heldout], films[len(films) - n_heldout :]
    counters = dict.fromkeys(CLASS_DIRS, 0)

    def stem_of(path: Path) -> str:
        counters[path.parent.name] += 1
        return str(counters[path.parent.name])

    large, small, single = films[:n_large], films[n_large : n_large + n_small], films[n_large + n_small :]
    jobs = [("large", p, stem_of(p)) for p in large] + [("small", p, stem_of(p)) for p in small]
    jobs += [("single", p, stem_of(p)) for p in single[:n_single]]
    spare = single[n_single:]  # films for the root-name collisions, matched to a family's class
    collisions: list[tuple[Path, str]] = []
    for _kind, path, stem in jobs[:n_large:2]:
        partner = next(p for p in spare if p.parent.name == path.parent.name)
        spare.remove(partner)
        collisions.append((partner, stem))

    def one(job: tuple[int, tuple[str, Path, str]]) -> list[tuple[str, str]]:
        k, (kind, path, stem) = job
        r = np.random.default_rng([seed, k])
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        cls = CLASS_DIRS[path.parent.name]
        if kind == "large":
            made = [(f.name, f.split, f.pixels, f.twin_of) for f in copy_family(gray, stem, r)]
        else:
            made = [(f"{stem}.jpg", "train", gray, None)]
            names = {made[0][0]}
            for c in range(1, (int(r.integers(1, 13)) if kind == "small" else 0) + 1):
                name = copy_name(stem, c, r)
                if name not in names and not name.startswith(f"{stem} (1)"):  # ` (1)` is the collisions' name
                    names.add(name)
                    made.append((name, "test" if r.random() < 0.15 else "train", augment_copy(gray, r), None))
        written: dict[str, Path] = {}
        out = []
        for name, split, pixels, twin in made:
            dest = root / split / cls / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if pixels is None:
                dest.write_bytes(written[twin].read_bytes())  # a byte twin, as Windows' copy makes it
            else:
                cv2.imwrite(str(dest), pixels, [cv2.IMWRITE_JPEG_QUALITY, 95] if dest.suffix == ".jpg" else [])
            written[name] = dest
            out.append((dest.relative_to(root).as_posix(), path.name))
        return out

    lineage: dict[str, str] = {}
    for part in parallel_map(one, list(enumerate(jobs))):
        lineage.update(part)
    clashing: set[str] = set()
    for partner, stem in collisions:
        rel = f"train/{CLASS_DIRS[partner.parent.name]}/{stem} (1).jpg"
        cv2.imwrite(str(root / rel), cv2.imread(str(partner), cv2.IMREAD_GRAYSCALE), [cv2.IMWRITE_JPEG_QUALITY, 95])
        lineage[rel] = partner.name
        clashing.add(rel)
    return lineage, clashing, heldout
