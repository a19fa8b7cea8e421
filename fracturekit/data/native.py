"""What native libraries (libpng, libjpeg, OpenCV, PIL) say about a file, collected instead of printed.

libpng prints `libpng warning: iCCP: ...` and `libpng error: ...` straight to file descriptor 2, and
OpenCV's logger does the same; neither goes through Python, so neither `warnings` nor `logging` sees
it. `native_messages` points fd 2 at an in-memory file around one native call and hands back what was
written there, so the reader turns it into the film's warning or skip reason. fd 2 belongs to the whole
process: the block holds a lock, so decodes in threads take turns (the decode itself only; hashing and
writing stay parallel), and anything another thread prints to stderr during that window lands in the
film's note instead of the terminal.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

_FD2_LOCK = threading.RLock()  # re-entrant: a header read inside a decode's capture nests
# OpenCV's log prefix ("[ WARN:0@0.123] global loadsave.cpp:85 imread_ ") and libpng's/libjpeg's names.
_PREFIX = re.compile(r"^\[\s*\w+:\d+@[\d.]+\]\s*(global\s+\S+\s+\S+\s+)?")
MAX_NOTES = 3  # distinct messages kept per call: a broken PNG repeats one warning per chunk


def _buffer() -> IO[bytes]:
    """An anonymous in-memory file (Linux memfd), else an unnamed temporary file."""
    if hasattr(os, "memfd_create"):
        return os.fdopen(os.memfd_create("fracturekit-stderr"), "w+b")
    return tempfile.TemporaryFile()


def tidy(lines: list[str]) -> list[str]:
    """Distinct messages without OpenCV's log prefix, in order, at most MAX_NOTES."""
    seen: list[str] = []
    for line in lines:
        text = _PREFIX.sub("", line.strip()).strip()
        if text and text not in seen:
            seen.append(text)
    return seen[:MAX_NOTES]


@contextmanager
def native_messages() -> Iterator[list[str]]:
    """Collect what the block's native code writes to fd 2 and the Python warnings it raises, as tidy lines.

    The list yielded is filled when the block ends.
    """
    found: list[str] = []
    with _FD2_LOCK, _buffer() as buf, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no stderr at all (a daemon with fd 2 closed): nothing to keep off it
            yield found
            return
        os.dup2(buf.fileno(), 2)
        try:
            yield found
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            text = buf.read().decode("utf-8", "replace").splitlines()
            found.extend(tidy(text + [str(w.message) for w in caught]))
