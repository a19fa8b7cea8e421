"""A full disk, in one sentence: which folder, how much is free, about how much the command needs.

`prepare` and `predict` catch the OSError of a full disk (or quota) where they write their outputs and
raise this instead of a traceback; what they leave follows their own rules (prepare: nothing, its build
folder removed; predict: every finished film, for `--resume`).
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from fracturekit.core.errors import UserError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def is_no_space(exc: BaseException) -> bool:
    """True for the OSError of a full disk or an exceeded quota, also when raised while handling another."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return True
        exc = exc.__context__  # type: ignore[assignment]
    return False


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def free_bytes(folder: Path) -> int:
    """Free bytes on the filesystem of `folder` (of its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


def no_space(folder: Path, needed: float, what: str, after: str = "") -> UserError:
    """The UserError for a full disk under `folder`: free space, about `needed` bytes for `what`, and what next."""
    return UserError(
        f"{folder}: no space left on the device ({_mb(free_bytes(folder))} free; about {_mb(needed)} needed for "
        f"{what}); free some space or choose another folder{after}."
    )
