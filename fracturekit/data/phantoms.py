"""Synthetic X-ray phantoms: radiograph-like grayscale images with bones and thin fracture lines.

They are the offline data of `fracturekit demo` and of the fast tests. Each image is a function of
(seed, index) only, so any subset can be regenerated bit for bit. Negatives carry distractors
(skin folds, bone overlaps, bright hardware-like marks) so that "any dark line" is not a shortcut: a
model has to learn a crack that interrupts a bone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fracturekit.ingest.coco import save_coco
from fracturekit.ingest.records import Box, Record
from fracturekit.ingest.yolo import save_yolo

FRACTURE_CLASS = "fracture"
NORMAL_CLASS = "no_fracture"


@dataclass
class Phantom:
    """One synthetic film: 8-bit grayscale pixels and its fracture boxes (pixels)."""

    image: np.ndarray
    boxes: list[Box] = field(default_factory=list)
    region: str = "forearm"

    @property
    def fractured(self) -> bool:
        return bool(self.boxes)


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: soft-tissue texture and uneven exposure."""
    small = rng.standard_normal((max(2, int(size / scale)),) * 2).astype(np.float32)
    big = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return big / (np.abs(big).max() + 1e-6)


def _bone_mask(size: int, segments: list[tuple[np.ndarray, np.ndarray]], width: float) -> np.ndarray:
    """Float mask of a long bone: shaft segments (two when fractured) with wider rounded ends (condyles)."""
    mask = np.zeros((size, size), np.float32)
    for a, b in segments:
        cv2.line(mask, _pt(a), _pt(b), 1.0, int(width), lineType=cv2.LINE_AA)
    for p in (segments[0][0], segments[-1][1]):
        cv2.circle(mask, _pt(p), int(width * 0.75), 1.0, -1, lineType=cv2.LINE_AA)
    return mask


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))


def _bone_intensity(mask: np.ndarray, width: float) -> np.ndarray:
    """Bright cortex and a darker medullary canal, from the distance to the bone's edge."""
    dist = cv2.distanceTransform((mask > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
    cortex = max(1.5, width * 0.18)
    shade = np.where(dist < cortex, 1.0, 0.72 + 0.1 * np.clip(dist / (width / 2), 0, 1))
    return (shade * mask).astype(np.float32)


def _crack_points(rng: np.random.Generator, center: tuple[float, float], angle: float, width: float) -> np.ndarray:
    """A jagged polyline crossing the bone roughly perpendicular (or oblique) to its axis."""
    across = angle + math.pi / 2 + rng.uniform(-0.6, 0.6)
    half = width * rng.uniform(0.55, 0.8)
    n = int(rng.integers(4, 8))
    ts = np.linspace(-half, half, n)
    jitter = rng.normal(0, width * 0.08, n)
    xs = center[0] + ts * math.cos(across) + jitter * math.cos(angle)
    ys = center[1] + ts * math.sin(across) + jitter * math.sin(angle)
    return np.stack([xs, ys], 1)


def generate_phantom(seed: int, index: int, size: int = 256, fracture_prob: float = 0.5) -> Phantom:
    """Render phantom number `index` of the series `seed` (deterministic).

    Each step draws from the one generator in this order; changing the order changes every phantom.
    """
    rng = np.random.default_rng([seed, index])
    s = size
    img = np.full((s, s), rng.uniform(0.02, 0.08), np.float32)
    angle, center = _add_soft_tissue(rng, img)
    bone_layer, crack_layer, boxes = _bones(rng, s, angle, center, fracture_prob)
    bone_gain = rng.uniform(0.45, 0.65)
    bone_layer = bone_layer * (1 - rng.uniform(0.8, 1.0) * crack_layer)
    img += bone_layer * bone_gain
    _add_distractors(rng, img, bone_layer)
    return Phantom(image=_acquire(rng, img), boxes=boxes, region=_REGIONS[index % len(_REGIONS)])


def _add_soft_tissue(rng: np.random.Generator, img: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Add soft tissue to `img` in place: a limb-shaped ellipse with uneven thickness; the limb's angle and centre."""
    s = img.shape[0]
    tissue = np.zeros((s, s), np.float32)
    angle = rng.uniform(-0.5, 0.5) + (math.pi / 2 if rng.random() < 0.5 else 0.0)
    center = (s / 2 + rng.uniform(-0.08, 0.08) * s, s / 2 + rng.uniform(-0.08, 0.08) * s)
    axes = (int(s * rng.uniform(0.45, 0.6)), int(s * rng.uniform(0.2, 0.3)))
    cv2.ellipse(tissue, (int(center[0]), int(center[1])), axes, math.degrees(angle), 0, 360, 1.0, -1)
    tissue = cv2.GaussianBlur(tissue, (0, 0), s * 0.03)
    img += tissue * (rng.uniform(0.18, 0.3) + 0.06 * _smooth_noise(rng, s, 24))
    return angle, center


def _bones(
    rng: np.random.Generator, s: int, angle: float, center: tuple[float, float], fracture_prob: float
) -> tuple[np.ndarray, np.ndarray, list[Box]]:
    """One or two bones along the limb, at most one of them broken: the bone layer, the crack layer (zero
    where no bone is broken) and the fracture's box."""
    n_bones = 1 if rng.random() < 0.4 else 2
    broken = int(rng.integers(n_bones)) if rng.random() < fracture_prob else -1
    bone_layer = np.zeros((s, s), np.float32)
    crack_layer = np.zeros((s, s), np.float32)
    boxes: list[Box] = []
    for b in range(n_bones):
        offset = 0.0 if n_bones == 1 else (b - 0.5) * s * rng.uniform(0.1, 0.16)
        bc = np.array([center[0] - math.sin(angle) * offset, center[1] + math.cos(angle) * offset])
        width = s * rng.uniform(0.05, 0.09)
        length = s * rng.uniform(0.55, 0.8)
        ba = angle + rng.uniform(-0.08, 0.08)
        if b != broken:
            axis = np.array([math.cos(ba), math.sin(ba)])
            mask = _bone_mask(s, [(bc - axis * length / 2, bc + axis * length / 2)], width)
        else:
            mask, crack_layer, box = _broken_bone(rng, s, bc, ba, width, length)
            boxes += [box] if box is not None else []
        bone_layer = np.maximum(bone_layer, _bone_intensity(mask, width))
    return bone_layer, crack_layer, boxes


def _broken_bone(
    rng: np.random.Generator, s: int, bc: np.ndarray, ba: float, width: float, length: float
) -> tuple[np.ndarray, np.ndarray, Box | None]:
    """A fractured bone: two fragments, angulated and shifted at the break. Its mask, its crack line (inside the
    bone) and the crack's box, padded (None if the crack fell outside the bone)."""
    axis = np.array([math.cos(ba), math.sin(ba)])
    p1 = bc - axis * length / 2
    t = rng.uniform(-0.3, 0.3) * length
    fc = bc + axis * t
    bend = rng.uniform(0.06, 0.22) * rng.choice([-1.0, 1.0])  # angulation, radians
    axis2 = np.array([math.cos(ba + bend), math.sin(ba + bend)])
    shift = width * rng.uniform(0.1, 0.45) * rng.choice([-1.0, 1.0])  # lateral displacement
    fc2 = fc + np.array([-axis[1], axis[0]]) * shift
    mask = _bone_mask(s, [(p1, fc), (fc2, fc2 + axis2 * (length / 2 - t))], width)
    crack = np.zeros((s, s), np.float32)
    pts = _crack_points(rng, tuple((fc + fc2) / 2), ba, width)
    thickness = max(1, int(round(s / 96 * rng.uniform(0.8, 1.6))))
    cv2.polylines(crack, [np.round(pts).astype(np.int32)], False, 1.0, thickness, cv2.LINE_AA)
    crack *= (mask > 0.3).astype(np.float32)
    ys, xs = np.nonzero(crack > 0.2)
    if not len(xs):
        return mask, crack, None
    pad = max(3.0, width * 0.3)
    box = Box(
        FRACTURE_CLASS,
        float(max(0, xs.min() - pad)),
        float(max(0, ys.min() - pad)),
        float(min(s - 1, xs.max() + pad)),
        float(min(s - 1, ys.max() + pad)),
    )
    return mask, crack, box


def _add_distractors(rng: np.random.Generator, img: np.ndarray, bone_layer: np.ndarray) -> None:
    """Add to `img` in place what every film may carry: skin folds (dark lines outside bone) and dense marks."""
    s = img.shape[0]
    for _ in range(int(rng.integers(0, 3))):
        p1 = rng.uniform(0.1, 0.9, 2) * s
        p2 = p1 + rng.normal(0, s * 0.15, 2)
        fold = np.zeros((s, s), np.float32)
        cv2.line(fold, tuple(int(v) for v in p1), tuple(int(v) for v in p2), 1.0, 1, cv2.LINE_AA)
        img -= fold * (bone_layer < 0.05) * rng.uniform(0.03, 0.08)
    if rng.random() < 0.25:
        p = tuple(int(v) for v in rng.uniform(0.15, 0.85, 2) * s)
        cv2.circle(img, p, int(s * rng.uniform(0.01, 0.025)), float(rng.uniform(0.85, 1.0)), -1)


def _acquire(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """The acquisition: blur, exposure, quantum noise and gamma; the 8-bit film."""
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.0))
    img = img * rng.uniform(0.85, 1.2) + rng.uniform(-0.05, 0.05)
    img += rng.normal(0, rng.uniform(0.01, 0.03), img.shape).astype(np.float32)
    gamma = rng.uniform(0.8, 1.25)
    img = np.clip(img, 0, 1) ** gamma
    return (img * 255).astype(np.uint8)


_REGIONS = ("forearm", "leg", "hand")


def write_phantom_dataset(
    out: Path,
    n: int,
    seed: int = 0,
    size: int = 256,
    fmt: str = "coco",
    fracture_prob: float = 0.5,
    start: int = 0,
) -> Path:
    """Write `n` phantoms under `out` as a raw dataset that `prepare` ingests.

    fmt: "coco" (images/ + annotations.json, one category "fracture"; fracture-free films have no
    annotation), "yolo" (images/ + labels/ + data.yaml), "folders" (<class>/ image folders) or
    "images" (a plain folder, for `predict`). A `metadata.csv` with a patient id (two films per
    patient) and a body region is written beside them. Returns `out`.
    """
    out = Path(out)
    img_dir = out if fmt in ("images",) else out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    records: list[Record] = []
    meta_rows = ["file_name,patient_id,region"]
    for i in range(start, start + n):
        ph = generate_phantom(seed, i, size, fracture_prob)
        name = f"phantom_{seed}_{i:05d}.png"
        if fmt == "folders":
            target = out / (FRACTURE_CLASS if ph.fractured else NORMAL_CLASS) / name
            target.parent.mkdir(parents=True, exist_ok=True)
        else:
            target = img_dir / name
        cv2.imwrite(str(target), ph.image)
        meta_rows.append(f"{name},P{seed}_{i // 2:05d},{ph.region}")
        records.append(Record(source=target, boxes=ph.boxes))
    if fmt == "folders" and img_dir.exists() and not any(img_dir.iterdir()):
        img_dir.rmdir()
    if fmt == "coco":
        save_coco(records, [FRACTURE_CLASS], out / "annotations.json", root=img_dir)
    if fmt == "yolo":
        save_yolo(records, [FRACTURE_CLASS], out / "labels")
        (out / "data.yaml").write_text(f"names:\n  0: {FRACTURE_CLASS}\n")
    if fmt != "images":
        (out / "metadata.csv").write_text("\n".join(meta_rows) + "\n")
    return out
