"""glibc keeps its thresholds where trim_eagerly fixed them, after a large block is freed.

Each case runs in a fresh interpreter: the thresholds are the process's.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit
_NEEDS_MALLINFO2 = pytest.mark.skipif(
    not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="glibc >= 2.33 only (mallinfo2)"
)

_PROBE = """
import ctypes, sys
from consumers.service.memory import release_freed_memory, trim_eagerly

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "fixed":
    trim_eagerly()
# An 8 MiB block is mapped on its own; freeing it raises glibc's dynamic thresholds
# to 8 MiB, unless they were fixed.
libc.free(libc.malloc(8 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)
print(libc.mallinfo2().hblks - before)
libc.free(block)
release_freed_memory()
"""


def _mapped_after_a_large_free(mode: str, env: dict[str, str] | None = None) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return int(done.stdout)


@_NEEDS_MALLINFO2
def test_a_megabyte_block_stays_mapped_after_a_larger_one_is_freed() -> None:
    # Dynamic thresholds: the 1 MiB block comes from the heap, whose top is then kept.
    assert _mapped_after_a_large_free("default") == 0
    # Fixed: mapped on its own, so freeing it gives it back at once.
    assert _mapped_after_a_large_free("fixed") == 1


@_NEEDS_MALLINFO2
def test_an_operators_own_malloc_tuning_stands() -> None:
    # MALLOC_TOP_PAD_ tunes glibc (and stops its dynamic thresholds, as any of these does)
    # without naming the trim or mmap threshold: trim_eagerly still fixes them.
    assert _mapped_after_a_large_free("fixed", {"MALLOC_TOP_PAD_": "0"}) == 1
    # A mmap threshold of 4 MiB set by the operator: a 1 MiB block is not mapped.
    tuned = {"MALLOC_MMAP_THRESHOLD_": str(4 << 20)}
    assert _mapped_after_a_large_free("fixed", tuned) == 0
