"""What a run under way costs in memory, decoded and paged out: bytes per run for N runs.

    .venv/bin/python -m bench.run_memory [--runs 20000]

Decodes N short runs from the wire the way the folding service does (each event's record
decoded, folded by :class:`~consumers.service.edge.FoldEdge`, the run kept under its key),
then pages them all out to packed bytes as the service does for a run idle for
``--page-idle-after`` (:func:`consumers.state_bytes.pack_stored` of its changelog record).
Prints per run what ``tracemalloc`` saw held each way (the state with its strings,
``inputs`` and key; the dict holding them is counted too), and the RunState alone as the
library makes it (no decode: the events' strings are shared). The events are the week
bench's open runs (:mod:`bench.week`): a ``graph_started`` with the simulator's identity
and ``inputs``, then a ``node_entered``. Budget (issue 15): <= 1 KiB per active run.
"""

from __future__ import annotations

import argparse
import gc
import tracemalloc
from typing import Any

from bench.week import WeekFleet
from consumers import RunState, apply_event
from consumers.service.edge import FoldEdge
from consumers.state_bytes import pack_stored
from schemas.codec import decode_event


def _records(runs: int) -> dict[bytes, list[bytes]]:
    """The records of ``runs`` open runs of the week, by key."""
    by_key: dict[bytes, list[bytes]] = {}
    for key, value in WeekFleet(0, runs, days=0.01).records():
        by_key.setdefault(key, []).append(value)
    return by_key


def _traced(build: Any) -> tuple[Any, int]:
    gc.collect()
    tracemalloc.start()
    built = build()
    gc.collect()
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return built, traced


def measure(runs: int) -> dict[str, float]:
    """Bytes per run held decoded (service), packed, and as a library RunState."""
    records = _records(runs)
    edge = FoldEdge.default()

    def decoded() -> dict[bytes, RunState]:
        held: dict[bytes, RunState] = {}
        for key, values in records.items():
            state = None
            for value in values:
                state, _ = edge.apply(state, decode_event(value))
            assert state is not None
            held[bytes(key)] = state
        return held

    held, decoded_bytes = _traced(decoded)
    packed, packed_bytes = _traced(
        lambda: {key: pack_stored(key, edge.encode_state(state)) for key, state in held.items()}
    )
    lengths = sorted(len(value) for value in packed.values())
    events_of = [[decode_event(value) for value in values] for values in records.values()]

    def library() -> list[RunState]:
        states = []
        for run_events in events_of:
            state = None
            for event in run_events:
                state, _ = apply_event(state, event)
            assert state is not None
            states.append(state)
        return states

    _, library_bytes = _traced(library)
    return {
        "runs": len(records),
        "decoded_bytes_per_run": decoded_bytes / len(records),
        "packed_bytes_per_run": packed_bytes / len(records),
        "packed_value_median": lengths[len(lengths) // 2],
        "library_state_bytes_per_run": library_bytes / len(records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=20_000)
    args = parser.parse_args()
    for name, value in measure(args.runs).items():
        print(f"{name:>28}: {value:,.1f}")


if __name__ == "__main__":
    main()
