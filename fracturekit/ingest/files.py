"""The one folder walker, with the junk rules, and the file index the annotation readers resolve names in.

Used by the readers (`FileIndex`, `iter_images`), by format detection, by prepare's report of files it
did not use, and by predict's `list_sources`, so every command skips the same junk: hidden files and
folders (`.DS_Store`, AppleDouble `._x.jpg`, `.git/`), archiver/OS folders (`__MACOSX/`, `@eaDir/`) and
OS files (`Thumbs.db`, `desktop.ini`). Folder links are not followed (no cycles, nothing outside the root).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from fracturekit.data.imageio import IMAGE_SUFFIXES

# Folders archivers and tools leave behind; never dataset content.
JUNK_DIRS = frozenset({"__MACOSX", "__pycache__", "@eaDir", "$RECYCLE.BIN", "System Volume Information"})
# Files operating systems leave in image folders (compared lower-case).
JUNK_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})


def junk_reason(parts: Sequence[str]) -> str | None:
    """Why a path (its parts relative to the folder walked, file name last) is never data, else None.

    Only the parts below the walked folder count, so a hidden folder above it (`~/.cache/...`) does not.
    """
    *folders, name = parts
    if any(p.startswith(".") or p in JUNK_DIRS for p in folders) or name.lower() in JUNK_FILES or name.startswith("._"):
        return "operating-system or archiver junk"
    if name.startswith("."):
        return "hidden file"
    return None


def walk(root: str | Path, *, junk: bool = False, max_depth: int | None = None) -> Iterator[tuple[str, list[str]]]:
    """(folder, its sorted file names) for `root` and every folder below it, parents first, folders sorted.

    Junk folders and files (see `junk_reason`) are left out unless `junk`. `max_depth`: how many folder
    levels below `root` to enter (None: all). Paths are joined to `root` as given.
    """
    root = os.fspath(root)
    base = root.rstrip(os.sep).count(os.sep)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = dirpath.rstrip(os.sep).count(os.sep) - base
        if max_depth is not None and depth >= max_depth:
            dirnames[:] = []
        elif junk:
            dirnames.sort()
        else:
            dirnames[:] = sorted(d for d in dirnames if not (d.startswith(".") or d in JUNK_DIRS))
        yield dirpath, sorted(f for f in filenames if junk or junk_reason([f]) is None)


def walk_files(root: str | Path) -> Iterator[str]:
    """Every non-junk file under `root` (`walk` order), joined to `root` as given."""
    for dirpath, names in walk(root):
        for name in names:
            yield os.path.join(dirpath, name)


def iter_images(root: Path) -> Iterator[Path]:
    """Image files under `root` (recursive, sorted, junk skipped), by suffix only."""
    for path in FileIndex(root).images:
        yield Path(path)


class FileIndex:
    """Every file under a root, listed once (`walk`), so readers resolve names without a stat per try.

    Paths are absolute, normalized strings under the resolved root.
    """

    def __init__(self, root: Path):
        self.root = os.path.realpath(root)
        self.files: set[str] = set()
        self.images: list[str] = []
        for full in walk_files(self.root):
            self.files.add(full)
            if os.path.splitext(full)[1].lower() in IMAGE_SUFFIXES:
                self.images.append(full)
        self._by_name: dict[str, list[str]] | None = None

    def inside(self, path: str) -> bool:
        """True when the normalized absolute `path` lies under the root (no `../` escape)."""
        norm = os.path.normpath(os.path.join(self.root, path))
        return norm == self.root or norm.startswith(self.root + os.sep)

    def find(self, path: str) -> str | None:
        """The indexed file at `path` (absolute or relative to the root), else None."""
        norm = os.path.normpath(os.path.join(self.root, path))
        return norm if norm in self.files else None

    def images_named(self, name: str) -> list[str]:
        """Indexed image files with this base name."""
        if self._by_name is None:
            self._by_name = {}
            for p in self.images:
                self._by_name.setdefault(os.path.basename(p), []).append(p)
        return self._by_name.get(name, [])

    def locate(self, name: str, bases: Iterable[str], what: str = "file_name") -> tuple[str | None, str | None]:
        """Find the image an annotation names: (path, None) or (None, reason).

        `name` may hold sub-folders and Windows separators. It is tried under each of `bases` in
        order, then by unique base name anywhere under the root. A name that leaves the root (`../`,
        an absolute path elsewhere) is refused.
        """
        clean = name.replace("\\", "/").strip()
        if not clean:
            return None, f"empty {what}"
        parts = clean.split("/")
        if os.path.isabs(clean) or ".." in parts:
            bases = list(bases)
            target = os.path.normpath(os.path.join(bases[0] if bases else self.root, clean))
            if not self.inside(target):
                return None, f"{what} {name!r} escapes the dataset root; refused"
            found = self.find(target)
            return (found, None) if found else (None, f"image file not found ({name})")
        for base in bases:
            found = self.find(os.path.join(base, clean))
            if found:
                return found, None
        matches = self.images_named(parts[-1])
        if len(matches) == 1:
            return matches[0], None
        if len(matches) > 1:
            return None, f"{what} {name!r} not found as given and its base name matches {len(matches)} files"
        return None, f"image file not found ({name})"

    def rel(self, path: str) -> str:
        """`path` relative to the root, POSIX separators."""
        return os.path.relpath(path, self.root).replace(os.sep, "/")
