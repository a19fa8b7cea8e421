"""User paths enter here once: `~` expanded, made absolute, `..` and symlinks resolved.

Every public entry point (the CLI and the Python API) passes the paths it is given through
`user_path`, so no module downstream ever compares a resolved path with an unresolved one
(`relative_to` between `my_kaggle_folder` and `/abs/my_kaggle_folder/x.jpg` raised ValueError).
Outputs then store paths relative to their own root (`rel_to`) so a moved folder keeps working.
"""

from __future__ import annotations

import os
from pathlib import Path


def user_path(path: str | os.PathLike[str]) -> Path:
    """The absolute, symlink-resolved form of a path as a user typed it (relative, `.`, `..`, `~`)."""
    return Path(os.path.expanduser(os.fspath(path))).resolve()


def maybe_path(path: str | os.PathLike[str] | None) -> Path | None:
    """`user_path`, passing None through (optional arguments)."""
    return None if path is None else user_path(path)


def rel_to(path: str | os.PathLike[str], root: Path) -> str:
    """`path` relative to the resolved `root`, POSIX separators; the absolute path when it lies outside."""
    p = user_path(path)
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return p.as_posix()
