"""Micro-benchmark of the fold's batch lane: µs per record, C lane vs Python lane.

    .venv/bin/python -m bench.fastlane_bench [--runs 2000] [--repeat 5] [--batch 500]

A fleet of ``--runs`` runs without faults (``producers.Fleet``, as ``runfold
produce`` writes it) becomes consumed messages (``confluent_kafka.Message``, three
partitions). Each pass folds the whole stream afresh as the service does: batches
of ``--batch`` messages, the batch lane up to the first record it does not take,
that record through the general path (decode, ``apply_event``, offsets), the lane
again after it. Printed per lane, best and median of ``--repeat`` passes, in CPU
time of this thread (``time.thread_time_ns``, so other processes do not count):

- ``lane``: time inside the lane's calls per record it folded (its own cost);
- ``all``: the whole pass per record (general path included; the same records
  take it whichever lane runs).

Messages are touched (not timed) just before their batch is folded: ``consume()``
hands over messages it has just built, warm in the cache.

The Python lane is the same call shape over today's per-record ``fast_lane()``, so
its ``lane`` number is what the service's loop plus that lane cost per record.

``--service`` also times ``FoldService._fold_batch`` as the service has it (no
broker: outputs are kept by a stand-in producer, a transaction is open), in CPU
seconds per record, with ``RUNFOLD_PURE_PYTHON`` unset and set.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from typing import Any

from confluent_kafka import Message

from consumers.edge import body_digest
from consumers.fastlane import BatchLane, batch_lane, compiled_lane_available
from consumers.fold import apply_event
from producers import Fleet, FleetConfig  # noqa: E402
from schemas.codec import decode_event  # noqa: E402


def _messages(runs: int) -> list[Message]:
    fleet = Fleet(FleetConfig(runs=runs, agents=64, seed=1))
    return [
        Message(topic="ev", partition=hash(key) % 3, offset=offset, key=key, value=value)
        for offset, (key, value, _) in enumerate(fleet.records())
    ]


def _general(
    msg: Message,
    runs_of: dict[int, dict[bytes, Any]],
    dirty_of: dict[int, set[bytes]],
    next_offsets: dict[int, int],
) -> None:
    """The service's general path, without outputs: decode, fold, offsets."""
    partition, key, value, offset = msg.partition(), msg.key(), msg.value(), msg.offset()
    next_offsets[partition] = offset + 1
    runs = runs_of.setdefault(partition, {})
    event = decode_event(value)
    state, _ = apply_event(runs.get(key), event, digest=body_digest(value))
    state.source_offset = offset
    runs[key] = state
    dirty_of.setdefault(partition, set()).add(key)


def _touch(chunk: list[Message]) -> None:
    for msg in chunk:
        msg.error(), msg.partition(), msg.key(), msg.offset()
        value = msg.value()
        if value is not None:
            value[-1] + value[len(value) // 2]


def _pass(lane: BatchLane, msgs: list[Message], batch: int) -> tuple[int, int, int]:
    """One pass over the stream; (ns in the lane, records it folded, ns in all)."""
    runs_of: dict[int, dict[bytes, Any]] = {}
    dirty_of: dict[int, set[bytes]] = {}
    next_offsets: dict[int, int] = {}
    unchecked: set[bytes] = set()
    clock = time.thread_time_ns
    in_lane = folded = 0
    began = clock()
    for first in range(0, len(msgs), batch):
        chunk = msgs[first : first + batch]
        # consume() hands over messages it has just built, warm in the cache; these were
        # built long ago. Touching them first (not timed) keeps cache misses out.
        before = clock()
        _touch(chunk)
        began += clock() - before
        index, count = 0, len(chunk)
        while index < count:
            before = clock()
            index, got = lane(chunk, index, runs_of, dirty_of, next_offsets, unchecked)
            in_lane += clock() - before
            folded += got
            if index < count:
                _general(chunk[index], runs_of, dirty_of, next_offsets)
                index += 1
    return in_lane, folded, clock() - began


class _KeepingProducer:
    """Stands in for the transactional producer: keeps nothing, sends nothing."""

    def produce(self, topic: str, **kwargs: Any) -> None:
        pass

    def poll(self, timeout: float = 0) -> int:
        return 0


def _service_pass(msgs: list[Message], batch: int, pure_python: bool) -> float:
    """CPU µs per record of FoldService._fold_batch over the stream (a fresh service)."""
    from consumers.edge import FoldEdge
    from consumers.service import FoldService, ServiceConfig

    saved = os.environ.pop("RUNFOLD_PURE_PYTHON", None)
    if pure_python:
        os.environ["RUNFOLD_PURE_PYTHON"] = "1"
    try:
        config = ServiceConfig(
            kafka={}, events_topic="ev", dlq_topic="dlq", violations_topic="viol", runs_topic="runs"
        )
        service = FoldService(config, edge=FoldEdge.default())
    finally:
        os.environ.pop("RUNFOLD_PURE_PYTHON", None)
        if saved is not None:
            os.environ["RUNFOLD_PURE_PYTHON"] = saved
    service._producer = _KeepingProducer()  # type: ignore[assignment]
    service._in_txn = True
    gc.collect()
    gc.disable()
    try:
        began = time.thread_time_ns()
        for first in range(0, len(msgs), batch):
            service._fold_batch(msgs[first : first + batch])
        return (time.thread_time_ns() - began) / 1000 / len(msgs)
    finally:
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--service", action="store_true", help="also time FoldService._fold_batch")
    args = parser.parse_args(argv)
    msgs = _messages(args.runs)
    print(
        f"{len(msgs)} records of {args.runs} runs, batches of {args.batch}, "
        f"best/median of {args.repeat} passes (thread CPU time)"
    )
    lanes = {"python": batch_lane(compiled=False)}
    if compiled_lane_available():
        lanes["c"] = batch_lane(compiled=True)
    else:
        print("C lane not built (or RUNFOLD_PURE_PYTHON set): Python only")
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in lanes}
    for _ in range(args.repeat):
        for name, lane in lanes.items():
            assert lane is not None
            gc.collect()
            gc.disable()
            try:
                in_lane, folded, total = _pass(lane, msgs, args.batch)
            finally:
                gc.enable()
            results[name].append((in_lane / 1000 / folded, total / 1000 / len(msgs), folded))
    for name, rows in results.items():
        lane_us = [row[0] for row in rows]
        all_us = [row[1] for row in rows]
        share = rows[0][2] / len(msgs)
        print(
            f"{name:>6} lane: {min(lane_us):6.3f} us/record folded (median "
            f"{statistics.median(lane_us):6.3f}), {share:.1%} of records; "
            f"all: {min(all_us):6.3f} us/record (median {statistics.median(all_us):6.3f})"
        )
    if "c" in results:
        c = min(row[0] for row in results["c"])
        py = min(row[0] for row in results["python"])
        print(f"lane speed-up C vs Python: {py / c:.1f}x")
    if args.service:
        for pure in (False, True):
            times = [_service_pass(msgs, args.batch, pure) for _ in range(args.repeat)]
            label = "RUNFOLD_PURE_PYTHON=1" if pure else "default lanes"
            print(
                f"FoldService._fold_batch, {label}: {min(times):6.3f} us/record "
                f"(median {statistics.median(times):6.3f})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
