"""Tell which annotation format a dataset folder uses, and read it with the matching reader.

Detection looks for signatures, cheapest first (FracAtlas in the folder or one below it, the others
up to four folder levels deep, junk skipped as everywhere: `ingest.files`):
- fracatlas: `images/Fractured` + `Annotations/` (FracAtlas as published; `images/Non_fractured` is not required);
- coco: a JSON file with `images` and `categories` (Roboflow `_annotations.coco.json`, `instances_*.json`);
- voc: `.xml` files whose root element is `<annotation>`;
- yolo: a `labels/` folder of `.txt` files, or a `data.yaml`/`*.yaml` with `names`;
- folders: images inside class folders (`<class>/`, `<split>/<class>/`, nested one level deeper).
Two annotation formats at once (e.g. an export carrying COCO and YOLO labels) is ambiguous: UserError
asking for `--format`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fracturekit.core.errors import UserError
from fracturekit.core.paths import user_path
from fracturekit.data.imageio import is_image_file
from fracturekit.ingest.coco import looks_like_coco
from fracturekit.ingest.files import walk
from fracturekit.ingest.records import IngestResult

FORMATS = ("folders", "coco", "voc", "yolo", "fracatlas")
_MAX_DEPTH = 4
_MAX_JSON_BYTES = 512 * 1024 * 1024


def is_fracatlas(root: Path) -> bool:
    """FracAtlas as published: an images/Fractured and an Annotations folder (images/Non_fractured may be absent)."""
    return (root / "images" / "Fractured").is_dir() and (root / "Annotations").is_dir()


def _is_coco_json(path: Path) -> bool:
    try:
        if path.stat().st_size > _MAX_JSON_BYTES:
            return False
        with path.open("rb") as f:
            head = f.read(1 << 16)
        if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
            return False
        if path.stat().st_size <= len(head):
            data = json.loads(head)
        else:
            with path.open("rb") as f:
                data = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        # An unreadable JSON named like a COCO export still counts (the reader reports it).
        return path.name.endswith(".coco.json") or path.name.startswith("instances_")
    return looks_like_coco(data)


def _is_voc_xml(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(2048).lower()
    except OSError:
        return False
    return b"<annotation" in head


def _yaml_has_names(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            text = f.read(1 << 16).decode("utf-8", "replace")
    except OSError:
        return False
    return any(line.lstrip().startswith("names:") or line.startswith("names :") for line in text.splitlines())


def _evidence(root: Path) -> dict[str, list[str]]:
    """What each format's signature matched under `root` (relative paths, a few per format)."""
    found: dict[str, list[str]] = {f: [] for f in FORMATS}
    class_dirs = 0
    for folder, files in walk(root, max_depth=_MAX_DEPTH):
        dirpath = Path(folder)
        rel = dirpath.relative_to(root)
        n_images = 0
        n_txt = 0
        for name in files:
            p = dirpath / name
            low = name.lower()
            if low.endswith(".json") and len(found["coco"]) < 5 and _is_coco_json(p):
                found["coco"].append(str(rel / name))
            elif low.endswith(".xml") and len(found["voc"]) < 5 and _is_voc_xml(p):
                found["voc"].append(str(rel / name))
            elif low.endswith((".yaml", ".yml")) and len(found["yolo"]) < 5 and _yaml_has_names(p):
                found["yolo"].append(str(rel / name))
            elif low.endswith(".txt"):
                n_txt += 1
            elif is_image_file(Path(name)):
                n_images += 1
        if n_txt and "labels" in rel.parts and len(found["yolo"]) < 5:
            found["yolo"].append(f"{rel}/ ({n_txt} .txt)")
        if n_images and rel != Path("."):
            class_dirs += 1
            if len(found["folders"]) < 5:
                found["folders"].append(f"{rel}/ ({n_images} images)")
    if class_dirs < 2:
        found["folders"] = []
    return found


def detect_format(root: Path) -> str:
    """One of folders|coco|voc|yolo|fracatlas, or UserError naming what was found."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root}: no such file or folder")
    if root.is_file():
        if root.suffix.lower() == ".json":
            return "coco"
        raise UserError(f"{root}: pass a dataset folder (or a COCO .json file)")
    if is_fracatlas(root):
        return "fracatlas"
    subdirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if len(subdirs) == 1 and is_fracatlas(subdirs[0]):
        return "fracatlas"
    found = _evidence(root)
    annotated = [f for f in ("coco", "voc", "yolo") if found[f]]
    if len(annotated) == 1:
        return annotated[0]
    shown = annotated if len(annotated) > 1 else [f for f in FORMATS if found[f]]
    described = "; ".join(f"{f}: {', '.join(found[f][:3])}" for f in shown) or "no images"
    hint = "pass --format coco|voc|yolo|folders|fracatlas"
    if len(annotated) > 1:
        raise UserError(f"{root}: cannot tell the dataset format (found {described}); {hint}")
    if found["folders"]:
        return "folders"
    raise UserError(f"{root}: cannot tell the dataset format (found {described}); {hint}")


def _reader(fmt: str) -> Callable[..., IngestResult]:
    if fmt == "coco":
        from fracturekit.ingest.coco import load_coco

        return load_coco
    if fmt == "voc":
        from fracturekit.ingest.voc import load_voc

        return load_voc
    if fmt == "yolo":
        from fracturekit.ingest.yolo import load_yolo

        return load_yolo
    if fmt == "folders":
        from fracturekit.ingest.folders import load_folders

        return load_folders
    raise AssertionError(fmt)


def load_source(
    root: Path,
    fmt: str = "auto",
    mapping: dict[str, str] | None = None,
    fracatlas_annotations: str = "yolo",
) -> IngestResult:
    """Read a raw dataset in any supported format (auto-detected unless `fmt` names one)."""
    root = user_path(root)
    if not root.exists():
        raise UserError(f"{root}: no such file or folder")
    fmt = (fmt or "auto").strip().lower()
    if fmt == "auto":
        fmt = detect_format(root)
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; use auto|{'|'.join(FORMATS)}")
    if fmt == "fracatlas":
        from fracturekit.ingest.fracatlas import load_fracatlas

        if not is_fracatlas(root):
            subdirs = [d for d in root.iterdir() if d.is_dir() and is_fracatlas(d)] if root.is_dir() else []
            if len(subdirs) != 1:
                raise UserError(
                    f"{root}: not FracAtlas as published (expected images/Fractured and Annotations/ inside)"
                )
            root = subdirs[0]
        return load_fracatlas(root, annotations=fracatlas_annotations, mapping=mapping)
    if root.is_file() and fmt != "coco":
        raise UserError(f"{root}: format {fmt} needs a dataset folder, not a file")
    return _reader(fmt)(root, mapping=mapping)
