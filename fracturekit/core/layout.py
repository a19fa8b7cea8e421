"""Where each pipeline stage reads and writes: the contract between prepare, train, evaluate and predict.

Data flows one way: raw dataset -> PreparedDataset (cls/, det/, manifest.csv) -> RunDir (weights,
config, metrics per epoch) -> evaluation folder (metrics.json, report.html) -> predictions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fracturekit.core.errors import UserError
from fracturekit.core.paths import user_path

POSITIVE_CLASS = "fracture"
NEGATIVE_CLASS = "no_fracture"
SPLITS = ("train", "val", "test")

# manifest.csv: one row per source image. `source` is relative to the source root (prepare.json `source`),
# output_* columns relative to the dataset root, so moving either folder breaks nothing;
# `boxes` is JSON [[class_name, x1, y1, x2, y2], ...] in output-image pixels; extra metadata columns
# (patient, region, view, ...) follow these.
MANIFEST_COLUMNS = (
    "source",
    "split",
    "label",
    "group",
    "cluster",
    "status",
    "reason",
    "output_cls",
    "output_det",
    "label_file",
    "boxes",
    "width",
    "height",
    "sha256",
    "phash",
    "warnings",
)


@dataclass(frozen=True)
class PreparedDataset:
    """A dataset written by `prepare`: YOLO-cls under cls/, YOLO-det under det/, plus the manifest."""

    root: Path

    @property
    def cls_dir(self) -> Path:
        return self.root / "cls"

    @property
    def det_dir(self) -> Path:
        return self.root / "det"

    @property
    def data_yaml(self) -> Path:
        return self.det_dir / "data.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.csv"

    def det_images(self, split: str) -> list[Path]:
        """The image files of det/images/<split>, sorted; [] when that folder is absent (a source without boxes)."""
        from fracturekit.data.imageio import is_image_file  # here only: layout itself needs no OpenCV

        folder = self.det_dir / "images" / split
        return sorted(p for p in folder.iterdir() if is_image_file(p)) if folder.is_dir() else []

    @property
    def summary(self) -> Path:
        return self.root / "prepare.json"

    @property
    def audit_dir(self) -> Path:
        return self.root / "audit"

    @property
    def signatures(self) -> Path:
        """The films' copy signatures, keyed by manifest `source` (a `fracturekit.data.signature_file`):
        written by prepare when its films are the pixels it signed (no --clahe, no --max-side); `train` takes its
        seen films' from here instead of signing them again."""
        return self.root / "signatures.npz"

    def recorded_data_hash(self) -> str | None:
        """The data_hash prepare recorded in prepare.json; None when that file is missing or unreadable.

        The one reader of it (`fracturekit.prepare.report.data_hash` is what computes it)."""
        return self._recorded("data_hash")

    def recorded_pixels(self) -> str | None:
        """How prepare changed the films' pixels (`fracturekit.prepare.report.pixel_transform`: "clahe",
        "max_side=1024", ...), as prepare.json records it; None for films written as read, or no prepare.json."""
        return self._recorded("pixels")

    def _recorded(self, key: str) -> str | None:
        try:
            return json.loads(self.summary.read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):  # AttributeError: a prepare.json that is not an object
            return None

    @classmethod
    def open(cls, path: str | Path) -> PreparedDataset:
        """The prepared dataset at `path`, or a UserError saying how to make one."""
        root = user_path(path)
        if not root.is_dir():
            raise UserError(f"{root}: no such folder; run `fracturekit prepare SOURCE --out {root}` first.")
        ds = cls(root)
        if not ds.manifest.is_file():
            if _holds_images(root):  # the raw dataset itself: prepare reads it, it does not write into it
                raise UserError(
                    f"{root}: a raw dataset, not a prepared one (no manifest.csv); run `fracturekit prepare {root}` "
                    f"(it writes datasets/{root.name}) and pass that folder."
                )
            raise UserError(
                f"{root}: not a prepared dataset (no manifest.csv); run `fracturekit prepare SOURCE --out {root}`."
            )
        return ds


def _holds_images(folder: Path, most: int = 1000) -> bool:
    """True when one of the first `most` entries of `folder`, up to three levels deep (FracAtlas keeps its films in
    images/<class>/), is an image file."""
    from fracturekit.data.imageio import is_image_file  # here only: layout itself needs no OpenCV

    seen = 0
    for pattern in ("*", "*/*", "*/*/*"):
        for path in folder.glob(pattern):
            if is_image_file(path) and path.is_file():
                return True
            seen += 1
            if seen >= most:
                return False
    return False


@dataclass(frozen=True)
class RunDir:
    """A training run: `<project>/<task>/<name>/` with weights/, config.yaml, run.json, results.csv."""

    root: Path

    @property
    def best(self) -> Path:
        return self.root / "weights" / "best.pt"

    @property
    def last(self) -> Path:
        return self.root / "weights" / "last.pt"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def record(self) -> Path:
        return self.root / "run.json"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def metrics(self) -> Path:
        """metrics.json of the run's latest default evaluation (the highest of eval/, eval2/, ...)."""
        from fracturekit.core.outputs import latest

        found = latest(self.eval_dir, "metrics.json")
        return (found or self.eval_dir) / "metrics.json"

    @classmethod
    def find(cls, path: str | Path) -> RunDir:
        """Accept a run folder or a weights file inside one (`.../weights/best.pt`)."""
        p = user_path(path)
        if p.is_file() and p.parent.name == "weights":
            return cls(p.parent.parent)
        if p.is_dir() and (p / "weights").is_dir():
            return cls(p)
        raise UserError(f"{p}: not a run folder (expected weights/best.pt inside); pass a `fracturekit train` run.")
