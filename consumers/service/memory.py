"""The process's memory given back to the system (glibc only; elsewhere these do nothing).

The service's resident memory should be its state, not its busiest moment: a burst
fetches, decodes and encodes hundreds of MiB that are freed when it is over.

- :func:`trim_eagerly` (once, at start): glibc raises its trim and mmap thresholds each
  time a large block is freed, up to 64 and 32 MiB. librdkafka's threads free fetch
  buffers by the megabyte, so their heaps then keep tens of MiB free at their top, which
  :func:`release_freed_memory` cannot cut (``malloc_trim`` trims the top of the main
  heap only). Fixed thresholds, glibc's own defaults, keep every heap's top trimmed as
  it is freed; blocks over 128 KiB are mapped and unmapped on their own.
- :func:`release_freed_memory` (after a restore, and when a burst is over): the free
  pages inside every heap.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

__all__ = ["release_freed_memory", "trim_eagerly"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 128 * 1024
"""glibc's default for both (``mallopt(3)``); setting them stops their raising."""
_TUNED_BY = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")


def _glibc() -> Any | None:
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim, libc.mallopt  # noqa: B018 - both, or not glibc
    except (OSError, AttributeError):
        return None
    return libc


def trim_eagerly() -> None:
    """Fix glibc's trim and mmap thresholds at their defaults (see the module docstring),
    unless the environment sets either (``MALLOC_TRIM_THRESHOLD_``,
    ``MALLOC_MMAP_THRESHOLD_``): an operator's own tuning stands."""
    if any(name in os.environ for name in _TUNED_BY):
        return
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_TRIM_THRESHOLD, _THRESHOLD)
        libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)


def release_freed_memory() -> None:
    """Give the free pages of every malloc heap back to the system.

    librdkafka's threads fetch and decompress into their own malloc arenas; freed,
    that memory stays in the process (about 100 B per restored run) unless trimmed.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
