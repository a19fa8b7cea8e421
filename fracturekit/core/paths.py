"""User paths enter here once: `~` expanded, made absolute, `..` and symlinks resolved.

Every public entry point (the CLI and the Python API) passes the paths it is given through
`user_path`, so no module downstream ever compares a resolved path with an unresolved one
(`relative_to` between `my_kaggle_folder` and `/abs/my_kaggle_folder/x.jpg` raised ValueError).
Outputs then store paths relative to their own root (`rel_to`) so a moved folder keeps working.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def user_path(path: str | os.PathLike[str]) -> Path:
    """The absolute, symlink-resolved form of a path as a user typed it (relative, `.`, `..`, `~`)."""
    return Path(os.path.expanduser(os.fspath(path))).resolve()


def maybe_path(path: str | os.PathLike[str] | None) -> Path | None:
    """`user_path`, passing None through (optional arguments)."""
    return None if path is None else user_path(path)


def rel_to(path: str | os.PathLike[str], root: Path) -> str:
    """`path` relative to `root`, POSIX separators; the absolute path when it lies outside.

    The link path is tried before the resolved one, so a symlinked film (a cv fold's) keeps its place in
    the dataset that links it instead of jumping to the dataset it points into.
    """
    linked = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    for p, r in ((linked, Path(os.path.abspath(root))), (user_path(path), user_path(root))):
        with contextlib.suppress(ValueError):
            return p.relative_to(r).as_posix()
    return user_path(path).as_posix()
