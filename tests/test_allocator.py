"""retain_freed_memory: glibc keeps a freed large block in its heap for reuse, and a user's own settings win."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from fracturekit.core.allocator import MMAP_THRESHOLD, TRIM_THRESHOLD

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)

# In a fresh process (the test's own heap has its own history): allocate and free a 12 MB block, as a film's SIFT
# does, and print whether it was mapped on its own (1) or came from the heap (0), and the heap's free MB after.
_PROBE = """
import ctypes, ctypes.util, sys
from fracturekit.core.allocator import retain_freed_memory
changed = retain_freed_memory() if sys.argv[1] == "1" else False
libc = ctypes.CDLL(ctypes.util.find_library("c"))
class Info(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(n, ctypes.c_size_t) for n in names.split()]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2().hblks
p = libc.malloc(12 << 20)
mapped = libc.mallinfo2().hblks - before
libc.free(p)
print(changed, mapped, libc.mallinfo2().fordblks >> 20)
"""


def _probe(call: bool, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    args = [sys.executable, "-c", _PROBE, "1" if call else "0"]
    out = subprocess.run(args, env=clean | env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_freed_block_stays_in_the_heap() -> None:
    assert TRIM_THRESHOLD > 12 << 20 and MMAP_THRESHOLD > 12 << 20
    # glibc's defaults: a 12 MB block is mapped on its own and unmapped when freed
    changed, mapped, free_mb = _probe(call=False)
    assert (changed, mapped) == ("False", "1") and int(free_mb) < 12
    # set: it comes from the heap and its 12 MB stay there, free, for the next film
    changed, mapped, free_mb = _probe(call=True)
    assert (changed, mapped) == ("True", "0") and int(free_mb) >= 12


@pytest.mark.parametrize(
    "env",
    [
        {"MALLOC_TRIM_THRESHOLD_": "131072"},  # the user's environment variable
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},  # the user's glibc tunable
    ],
)
def test_user_settings_are_left_alone(env: dict[str, str]) -> None:
    changed, mapped, _ = _probe(call=True, **env)
    assert (changed, mapped) == ("False", "1")
