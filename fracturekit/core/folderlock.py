"""One command per output folder at a time: an advisory `flock` on `LOCK` inside the folder.

`prepare --out`, `predict --out`, `evaluate --out`, a `train` run folder and a `cv` folder are each
held by the command writing them; a second command into the same folder is refused at once, with the
pid holding it (exit 2). The kernel drops the lock when the process ends, however it ends (a kill -9
too), so a stale lock never blocks. The lock is held as long as the `FolderLock` object lives: commands
keep it in a local, so it goes when the command returns (CPython frees locals then) or the process dies.
The lock file (the holder's command and pid) is removed when released, and a folder the lock itself created
goes with it when left empty; a killed command leaves its lock file, free, which the next one reuses and the
output checks ignore. A command that opened the file just before its holder removed it sees it is no longer
the file at that path (`samestat`) and opens it again, so two never hold one folder. Advisory only: it keeps
fracturekit commands apart, not other programs; on NFS Linux maps `flock` to a POSIX byte-range lock.

A command that raises after taking its lock releases it at once (`release_on_error`): the traceback keeps the
command's frame, and so its lock, alive until the caller drops the exception (a notebook keeps the last one),
so a refused command would otherwise leave its lock, and the folder the lock made, behind it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fracturekit.core.errors import UserError

LOCK = ".fracturekit.lock"
F = TypeVar("F", bound=Callable[..., Any])
# .locks: weak references to the FolderLocks this thread holds, in the order taken (weak: a lock still goes
# when the command's frame drops it)
_held = threading.local()


class FolderLock:
    """A held lock on `folder`; `release()` (or dropping the object) lets the next command in."""

    def __init__(self, folder: Path, fd: int, created: bool) -> None:
        self.folder, self._fd, self._created = folder, fd, created
        self._ref = weakref.ref(self)
        self._held = _held_locks()  # this thread's list, kept here: __del__ may run in another thread, or at exit
        self._held.append(self._ref)

    def release(self) -> None:
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):  # removed while still held; a command waiting on it opens a new one
            (self.folder / LOCK).unlink()
            if self._created:
                self.folder.rmdir()  # the folder this lock made, when the command left it empty (else OSError)
        os.close(self._fd)
        self._fd = -1
        self._held.remove(self._ref)

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def lock_folder(folder: Path, command: str) -> FolderLock:
    """Hold `folder` (created if missing) for `command`, or raise UserError naming the pid that holds it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; pass a folder.")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    for _ in range(3):  # the holder may remove the lock file as we open it: open again
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another fracturekit command"
            os.close(fd)
            raise UserError(
                f"{folder} is in use by {holder}; wait for it to finish, or choose another folder."
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        os.close(fd)
    else:
        raise UserError(f"{folder}: could not take its lock file {LOCK}; run the command again.")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"fracturekit {command} (pid {os.getpid()})\n".encode(), 0)
    return FolderLock(folder, fd, created)


def check_unlocked(folder: Path) -> None:
    """Raise UserError when a command holds `folder` (before replacing a folder wholesale)."""
    if (Path(folder) / LOCK).is_file():
        lock_folder(folder, "check").release()


def _held_locks() -> list[weakref.ref[FolderLock]]:
    if not hasattr(_held, "locks"):
        _held.locks = []
    return _held.locks


def release_on_error(fn: F) -> F:
    """`fn` with every folder lock it took released the moment it raises (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = list(_held_locks())
        try:
            return fn(*args, **kwargs)
        except BaseException:
            taken = [ref() for ref in _held_locks() if not any(ref is b for b in before)]
            for lock in reversed(taken):
                if lock is not None:
                    lock.release()
            raise

    return wrapper  # type: ignore[return-value]
