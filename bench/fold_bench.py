"""Micro-benchmark of the fold: µs per ``apply_event`` for a realistic mix of events.

    .venv/bin/python -m bench.fold_bench [--runs 2000] [--repeat 5]

Prints, per scenario, the best and median of ``--repeat`` passes over the same
stream, in CPU time of this thread (``time.thread_time_ns``), so that other
processes on a shared machine do not count; the best pass is the least disturbed
one. Events are touched just before each timed chunk of 256, as a decoder would
hand them over warm:

- in-order, digest computed by the fold (``content_digest``);
- in-order, digest passed in by the caller (as a decoder thread could);
- in-order through ``FoldResult.apply`` (routing, global bounds, tally);
- with faults: 5 % duplicates, 1 % of runs with two events swapped, 1 % with a lost event
  (a gap, declared by the reorder buffer's bounds), some events after the end.

The events are the fleet simulator's (:class:`producers.Fleet`, fault-free, 8 agents, seeded),
decoded before the clock starts: event decoding is not measured.
Goal (issue #5): at most 2 µs per in-order event.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable, Sequence
from uuid import UUID

from consumers import FoldResult, apply_event, content_digest
from consumers.state import FoldConfig, RunState
from producers import Fleet, FleetConfig
from schemas import Event, Timestamp, ToolCalled
from schemas.codec import decode_event


def _touch(events: Sequence[Event]) -> None:
    # A decoder hands the fold an event it has just built: warm, in cache. Events built
    # long ago (as here) are cold; touching them first keeps cache misses out of the number.
    for event in events:
        _ = (event.seq, event.timestamp, event.kind.__dict__, event.payload, event.run_id.int)


def _best(
    label: str, passes: int, stream: Sequence[Event], make: Callable[[], Callable[[Event], object]]
) -> float:
    """Best and median µs per event over ``passes``; ``make()`` gives a fresh fold step."""
    chunk = 256
    results = []
    for _ in range(passes):
        step = make()
        gc.collect()
        gc.disable()
        total = 0
        for start in range(0, len(stream), chunk):
            events = stream[start : start + chunk]
            _touch(events)
            began = time.thread_time_ns()
            for event in events:
                step(event)
            total += time.thread_time_ns() - began
        gc.enable()
        results.append(total / len(stream) / 1_000)
    best, median = min(results), sorted(results)[len(results) // 2]
    print(f"{label:<54} {best:6.2f} µs/event (median {median:.2f}, {len(stream)} events)")
    return best


class _Lean:
    __slots__ = ("count", "last")

    def __init__(self) -> None:
        self.last = self.count = 0


def _lean_step(lean: _Lean, seq: int) -> None:
    if seq == lean.last + 1:
        lean.last = seq
        lean.count += 1


def _calibrate(n: int = 200_000) -> float:
    """CPU µs of a minimal fold-like step, to compare machines (and loads) by."""
    best = float("inf")
    for _ in range(5):
        lean = _Lean()
        began = time.thread_time_ns()
        for seq in range(1, n + 1):
            _lean_step(lean, seq)
        best = min(best, (time.thread_time_ns() - began) / n / 1_000)
    return best


def _per_run(digests: dict[int, int] | None) -> Callable[[], Callable[[Event], object]]:
    """apply_event with the caller keeping the states in a dict, as the service does."""

    def make() -> Callable[[Event], object]:
        states: dict[UUID, RunState] = {}
        get = states.get

        if digests is None:

            def step(event: Event) -> object:
                state, outcomes = apply_event(get(event.run_id), event)
                states[event.run_id] = state
                return outcomes

        else:

            def step(event: Event) -> object:
                state, outcomes = apply_event(get(event.run_id), event, digest=digests[id(event)])
                states[event.run_id] = state
                return outcomes

        return step

    return make


def _with_faults(stream: list[Event], seed: int) -> list[Event]:
    rng = random.Random(seed)
    out: list[Event] = []
    by_run: dict[UUID, list[Event]] = {}
    for event in stream:
        by_run.setdefault(event.run_id, []).append(event)
    lost = {run_id for run_id in by_run if rng.random() < 0.01}
    swapped = {run_id for run_id in by_run if rng.random() < 0.01}
    held: dict[UUID, Event] = {}
    for event in stream:
        events = by_run[event.run_id]
        if event.run_id in lost and event.seq == 3 and len(events) > 4:
            continue
        if event.run_id in swapped and event.seq == 2 and len(events) > 3:
            held[event.run_id] = event
            continue
        out.append(event)
        if event.run_id in held and event.seq == 3:
            out.append(held.pop(event.run_id))
        if rng.random() < 0.05:
            out.append(event)
    for run_id, events in by_run.items():
        if rng.random() < 0.02:
            last = events[-1]
            out.append(
                Event(
                    run_id=run_id,
                    seq=last.seq + 1,
                    timestamp=Timestamp(last.timestamp + 1_000),
                    kind=ToolCalled(tool_name="late"),
                    payload={},
                )
            )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    fleet = Fleet(FleetConfig(runs=args.runs, agents=8, seed=args.seed))
    stream = [decode_event(value) for _key, value, _meta in fleet.records(meta=False)]
    digests = [content_digest(event) for event in stream]
    kinds: dict[str, int] = {}
    for event in stream:
        kinds[event.kind.type] = kinds.get(event.kind.type, 0) + 1
    mix = ", ".join(
        f"{k} {v / len(stream):.0%}" for k, v in sorted(kinds.items(), key=lambda i: -i[1])
    )
    print(f"python {sys.version.split()[0]}; {args.runs} runs, {len(stream)} events; mix: {mix}")

    print(f"machine: {_calibrate():.3f} µs per lean step (a __slots__ counter bump; reference)")
    digests = {id(event): content_digest(event) for event in stream}
    _best("content_digest alone", args.repeat, stream, lambda: content_digest)
    _best("apply_event in order, digest computed by the fold", args.repeat, stream, _per_run(None))
    _best(
        "apply_event in order, digest given by the caller", args.repeat, stream, _per_run(digests)
    )
    _best(
        "FoldResult.apply in order (routing, bounds, tally)",
        args.repeat,
        stream,
        lambda: FoldResult(FoldConfig()).apply,
    )
    faulty = _with_faults(stream, args.seed)
    # A lost event is declared by the time bound; make it short so gaps close in-stream.
    config = FoldConfig(max_delay_ns=200_000_000)
    _best(
        f"FoldResult.apply with faults ({len(faulty) - len(stream):+d} events)",
        args.repeat,
        faulty,
        lambda: FoldResult(config).apply,
    )
    result = FoldResult(config)
    for event in faulty:
        result.apply(event)
    counts: dict[str, int] = {}
    for state in result.runs.values():
        for kind, count in state.violation_counts.items():
            counts[kind.value] = counts.get(kind.value, 0) + count
    print(f"  faults folded: {counts}")
    print(f"  {result.tally}; pending {result.pending_total}")


if __name__ == "__main__":
    main()
