"""Micro-benchmark of the service's batch lane: µs per record, with and without it.

    .venv/bin/python -m bench.lane_bench [--runs 2000] [--repeat 5] [--batch 500]

A fleet of ``--runs`` runs without faults (``producers.Fleet``, as ``runfold
produce`` writes it) becomes consumed messages (``confluent_kafka.Message``, three
partitions). Each pass folds the whole stream afresh through
``FoldService._fold_batch`` as the service has it (no broker: outputs are kept by a
stand-in producer, a transaction is open), in CPU time of this thread
(``time.thread_time_ns``, so other processes do not count):

- ``decode``: the C decoder's ``read`` alone, per record;
- ``lane``: the service with the lane (C decoder, then ``fold_next``; the records it
  declines take the general path);
- ``general``: the service with every record on the general path (``FoldEdge(lane=False)``:
  decode with the codec, ``apply_event``), the lane's oracle.

Printed: best and median of ``--repeat`` passes.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

from confluent_kafka import Message

from consumers.service import FoldService, ServiceConfig
from consumers.service.edge import FoldEdge
from consumers.service.lane import LaneDecoder, decoder
from producers import Fleet, FleetConfig
from schemas.codec import configure_registry, current_event_header


def _messages(runs: int, framing: str = "single-object") -> list[Message]:
    fleet = Fleet(FleetConfig(runs=runs, agents=64, seed=1), framing=framing)
    return [
        Message(topic="ev", partition=hash(key) % 3, offset=offset, key=key, value=value)
        for offset, (key, value, _) in enumerate(fleet.records())
    ]


class _KeepingProducer:
    """Stands in for the transactional producer: keeps nothing, sends nothing."""

    def produce(self, topic: str, **kwargs: Any) -> None:
        pass

    def poll(self, timeout: float = 0) -> int:
        return 0


def _timed(work: Any) -> float:
    gc.collect()
    gc.disable()
    try:
        began = time.thread_time_ns()
        work()
        return time.thread_time_ns() - began
    finally:
        gc.enable()


def _service_pass(msgs: list[Message], batch: int, lane: bool) -> float:
    """CPU µs per record of FoldService._fold_batch over the stream, for a fresh service."""
    config = ServiceConfig(
        kafka={}, events_topic="ev", dlq_topic="dlq", violations_topic="viol", runs_topic="runs"
    )
    service = FoldService(config, edge=FoldEdge(lane=lane))
    service._producer = _KeepingProducer()  # type: ignore[assignment]
    service._in_txn = True

    def fold() -> None:
        for first in range(0, len(msgs), batch):
            service._fold_batch(msgs[first : first + batch])

    return _timed(fold) / 1000 / len(msgs)


def _decode_pass(lane: LaneDecoder, msgs: list[Message], batch: int) -> float:
    """CPU µs per record of the C decoder's ``read`` alone."""
    chunks = [msgs[first : first + batch] for first in range(0, len(msgs), batch)]
    return _timed(lambda: [lane.read(chunk) for chunk in chunks]) / 1000 / len(msgs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--confluent",
        action="store_true",
        help="Confluent framing (a mock:// registry): the lane learns the schema id from "
        "the general path's first record",
    )
    args = parser.parse_args(argv)
    framing = "single-object"
    if args.confluent:
        configure_registry("mock://lane-bench")
        framing = "confluent"
    msgs = _messages(args.runs, framing)
    print(
        f"{len(msgs)} {framing} records of {args.runs} runs, batches of {args.batch}, "
        f"best/median of {args.repeat} passes (thread CPU time)"
    )
    lane = decoder()
    rows: dict[str, list[float]] = {"general": []}
    if lane is None:
        print("C decoder not built (or RUNFOLD_PURE_PYTHON set): the general path only")
    else:
        rows = {"decode": [], "lane": [], "general": []}
    for _ in range(args.repeat):
        if lane is not None:
            if args.confluent:
                header = current_event_header(msgs[0].value() or b"")
                assert header is not None, "the fleet's first record does not read"
                lane.learn(header)
            rows["decode"].append(_decode_pass(lane, msgs, args.batch))
            rows["lane"].append(_service_pass(msgs, args.batch, lane=True))
        rows["general"].append(_service_pass(msgs, args.batch, lane=False))
    for name, times in rows.items():
        print(
            f"{name:>8}: {min(times):6.3f} us/record (median {statistics.median(times):6.3f})"
        )
    if lane is not None:
        speedup = min(rows["general"]) / min(rows["lane"])
        print(f"service with the lane vs the general path alone: {speedup:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
