"""What a finished run's marker costs in memory: bytes per marker for N markers.

    .venv/bin/python -m bench.marker_memory [--markers 1000000]

Fills one :class:`consumers.lifecycle.MarkerTable` (what the folding service keeps per
partition for finished runs past their grace) with N markers of random run ids, and
prints per marker: what ``tracemalloc`` saw allocated (the table and everything it
holds), the table's own buffer sizes, and the growth of the process's RSS
(``/proc/self/statm``, Linux; it includes the index arrays freed while the table grew
that the allocator kept). Then the cost of an add and of a lookup, of a key held and of
one absent (every new run's first event makes one), timed on a second table without
tracemalloc. The keys are made before the measure starts and are not counted. Goal
(issue 15): <= 100 B per marker.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc

from consumers.lifecycle import Marker, MarkerTable
from schemas import RunStatus

_T0 = 1_700_000_000_000_000_000


def _rss() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _fill(keys: list[bytes]) -> MarkerTable:
    table = MarkerTable()
    for n, key in enumerate(keys):
        table.add(key, Marker(n + 3, RunStatus.COMPLETED, _T0 + n, n * 2654435761 + 1))
    return table


def measure(count: int) -> dict[str, float]:
    """Bytes per marker, and µs per add and per lookup, for ``count`` markers."""
    keys = [os.urandom(16) for _ in range(count)]
    gc.collect()
    rss = _rss()
    tracemalloc.start()
    table = _fill(keys)
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    grown = _rss() - rss
    nbytes = table.nbytes()
    del table
    started = time.perf_counter()
    table = _fill(keys)
    added = time.perf_counter() - started
    sample = keys[: min(count, 100_000)]
    started = time.perf_counter()
    for key in sample:
        table.get(key)
    looked = time.perf_counter() - started
    absent = [os.urandom(16) for _ in sample]
    started = time.perf_counter()
    for key in absent:
        table.get(key)
    missed = time.perf_counter() - started
    return {
        "markers": count,
        "traced_bytes_per_marker": traced / count,
        "table_bytes_per_marker": nbytes / count,
        "rss_bytes_per_marker": grown / count,
        "add_us": added / count * 1e6,
        "get_us": looked / len(sample) * 1e6,
        "get_absent_us": missed / len(absent) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--markers", type=int, default=1_000_000)
    args = parser.parse_args()
    for name, value in measure(args.markers).items():
        print(f"{name:>24}: {value:,.1f}")


if __name__ == "__main__":
    main()
