"""`retain_freed_memory`: glibc's heap keeps what a film's work frees, for the next film, instead of handing it back.

glibc returns the top of its heap to the kernel once more than M_TRIM_THRESHOLD of it is free, and by default that
threshold only grows to twice the largest mapped block freed (~2 MB here). A film's SIFT frees its whole pyramid at
once (~10 MB of float32 levels: the 256 px film is doubled to 512 px inside OpenCV), so every film's pyramid was
faulted in again page by page. Idle, one thread, 100 FracAtlas films signed 20 times: SIFT took 13.6-14.7 ms of CPU
a film a pass, 7.9-8.3 ms with these settings; FracAtlas prepare found the same 304 clusters either way. The copy
search's worker processes had the same page-fault storm in their pair checks (8,000 FracAtlas checks: 330k page
faults and 1.2 s of system time, 32k and 0.25 s with these settings).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

# mallopt's parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 64 << 20  # free heap top kept per arena (FracAtlas prepare's peak RSS: 603 -> 637 MB)
MMAP_THRESHOLD = 32 << 20  # blocks from here up are mapped on their own (glibc's largest automatic value)
# A user's own glibc malloc settings (environment variables or tunables) are left as they are.
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


@functools.cache
def retain_freed_memory() -> bool:
    """Set glibc's trim and mmap thresholds for this process (once); False where they were left as they are.

    Linux with glibc only (mallopt): elsewhere the allocator keeps its defaults. A process started later does not
    inherit the settings: a worker process calls this itself.
    """
    if not sys.platform.startswith("linux") or any(k in os.environ for k in _USER_SETTINGS):
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    mallopt = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallopt", None)  # a libc without it: left alone
    if mallopt is None:
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
