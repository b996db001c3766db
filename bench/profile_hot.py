"""Profiles of runfold's hot paths (cProfile on the main thread's CPU clock).

    .venv/bin/python -m bench.profile_hot costs [--runs 500]      # no profiler: µs per step
    .venv/bin/python -m bench.profile_hot offline [--runs 1500]
    .venv/bin/python -m bench.profile_hot producer --bootstrap HOST:PORT [--runs 1500]
    .venv/bin/python -m bench.profile_hot fold --bootstrap HOST:PORT --events-topic T [--eos]
    .venv/bin/python -m bench.profile_hot restore [--runs 20000]

The timer is ``time.thread_time``: CPU seconds of the main thread only, so a busy shared
machine (other processes, librdkafka's own threads) does not inflate the numbers the way
wall-clock profiles do. Each prints µs of main-thread CPU per event and the top functions
by own time (``--top``), and can dump the raw profile (``--out``).

- ``offline``: decode + fold + state encode of a fleet's events, no Kafka;
- ``producer``: ``Fleet`` -> codec -> ``EventProducer`` into a topic (created if missing);
- ``fold``: :class:`consumers.service.FoldService` in-process over a pre-loaded topic until
  idle, with its own state topics;
- ``restore``: decoding N stored run states (what restore on assignment does per run).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
import uuid
from collections.abc import Callable
from typing import Any


def _profile(label: str, events: Callable[[], int], top: int, out: str | None) -> None:
    profiler = cProfile.Profile(time.thread_time)
    cpu = time.thread_time()
    wall = time.perf_counter()
    profiler.enable()
    count = events()
    profiler.disable()
    cpu = time.thread_time() - cpu
    wall = time.perf_counter() - wall
    print(f"{label}: {count:,} events, {cpu / max(1, count) * 1e6:.1f} µs main-thread CPU "
          f"per event under cProfile ({cpu:.2f}s CPU, {wall:.2f}s wall)")
    stats = pstats.Stats(profiler)
    if out:
        stats.dump_stats(out)
    stats.sort_stats("tottime").print_stats(top)


def offline(runs: int) -> Callable[[], int]:
    """Decode, fold and encode the states of a fleet's events (no Kafka)."""
    from consumers.service.edge import FoldEdge
    from producers import Fleet, FleetConfig

    records = [value for _, value, _ in Fleet(FleetConfig(runs=runs, agents=16)).records()]
    edge = FoldEdge.default()

    def run() -> int:
        states: dict[str, Any] = {}
        dirty: set[str] = set()
        for index, value in enumerate(records):
            event = edge.decode_event(value, "t", 0, index)
            run_id = str(event.run_id)
            state, _ = edge.apply(states.get(run_id), event)
            state.source_offset = index
            states[run_id] = state
            dirty.add(run_id)
            if index % 2000 == 1999:  # one state record per changed run per transaction
                for changed in dirty:
                    edge.encode_state(states[changed])
                dirty.clear()
        return len(records)

    return run


def producer(bootstrap: str, runs: int) -> Callable[[], int]:
    """Simulate, encode and produce a fleet (flush included)."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    from producers import EventProducer, Fleet, FleetConfig, produce_fleet

    topic = f"profile-producer-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(timeout=30)
    sink = EventProducer(topic, bootstrap_servers=bootstrap)
    sink.connect()

    def run() -> int:
        return produce_fleet(Fleet(FleetConfig(runs=runs, agents=16)), sink).records

    return run


def fold(bootstrap: str, events_topic: str, eos: bool) -> Callable[[], int]:
    """The folding service in-process over ``events_topic`` until idle."""
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    from consumers.service import FoldService, ServiceConfig

    prefix = f"profile-{uuid.uuid4().hex[:6]}-"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = len(admin.list_topics(events_topic, timeout=30).topics[events_topic].partitions)
    names = {f"{prefix}{n}": {"cleanup.policy": "compact"} if n in ("runs", "changelog") else {}
             for n in ("runs", "violations", "dlq", "changelog")}
    for future in admin.create_topics(
        [NewTopic(name, partitions, 1, config=config) for name, config in names.items()]
    ).values():
        future.result(timeout=30)
    config = ServiceConfig(
        kafka={"bootstrap.servers": bootstrap}, group=f"{prefix}group",
        guarantee="exactly-once" if eos else "at-least-once", until_idle=2.0,
        events_topic=events_topic, runs_topic=f"{prefix}runs",
        violations_topic=f"{prefix}violations", dlq_topic=f"{prefix}dlq",
        changelog_topic=f"{prefix}changelog",
    )

    def run() -> int:
        return FoldService(config).run().consumed

    return run


def restore(runs: int) -> Callable[[], int]:
    """Decode ``runs`` stored states, as restore on assignment does for each run."""
    from bench.live_stages import _template_state
    from consumers.service.edge import FoldEdge

    template, old_id = _template_state()
    values = [template.replace(old_id, str(uuid.uuid4()).encode()) for _ in range(runs)]
    edge = FoldEdge.default()

    def run() -> int:
        kept = {}
        for value in values:
            state = edge.decode_state(value)
            kept[str(state.run_id)] = state
        return len(kept)

    return run


def _best_cpu(run: Callable[[], object], count: int, repeat: int = 3) -> float:
    """Best main-thread CPU µs per item over ``repeat`` passes (no profiler)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.thread_time()
        run()
        best = min(best, time.thread_time() - started)
    return best / count * 1e6


def costs(runs: int) -> None:
    """µs of main-thread CPU per event for each step of the producer and the fold."""
    from consumers.service.edge import FoldEdge
    from producers import Fleet, FleetConfig
    from schemas.codec import EventCodec

    config = FleetConfig(runs=runs, agents=16)
    codec = EventCodec()
    events: list[Any] = []
    Fleet(config, encode=lambda e: events.append(e) or b"").records().__next__()
    events.clear()
    for _ in Fleet(config, encode=lambda e: events.append(e) or b"").records():
        pass
    values = [codec.encode(e) for e in events]
    n = len(events)
    edge = FoldEdge.default()
    rows = [
        ("fleet: simulate (plans, Event models), no encoding",
         lambda: sum(1 for _ in Fleet(config, encode=lambda e: b"").records())),
        ("fleet: simulate + encode (what `runfold produce` does)",
         lambda: sum(1 for _ in Fleet(config).records())),
        ("codec: encode_event", lambda: [codec.encode(e) for e in events]),
        ("codec: decode_event", lambda: [codec.decode(v) for v in values]),
    ]
    for label, run in rows:
        print(f"{label:<58} {_best_cpu(run, n):7.2f} µs/event")

    def fold_only() -> None:
        states: dict[str, Any] = {}
        for event in events:
            run_id = str(event.run_id)
            states[run_id] = edge.apply(states.get(run_id), event)[0]

    print(f"{'fold: apply_event (digest included)':<58} {_best_cpu(fold_only, n):7.2f} µs/event")
    states: dict[str, Any] = {}
    for event in events:
        states[str(event.run_id)] = edge.apply(states.get(str(event.run_id)), event)[0]
    finals = list(states.values())
    encoded = [edge.encode_state(s) for s in finals]
    per_state = _best_cpu(lambda: [edge.encode_state(s) for s in finals], len(finals))
    per_decode = _best_cpu(lambda: [edge.decode_state(v) for v in encoded], len(finals))
    print(f"{'state: encode_state (RunState -> Avro), per state':<58} {per_state:7.2f} µs/state")
    print(f"{'state: decode_state (restore), per state':<58} {per_decode:7.2f} µs/state")
    print(f"  ({n:,} events, {len(finals):,} runs, {sum(map(len, encoded)) / len(encoded):.0f} B "
          "per state record)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["costs", "offline", "producer", "fold", "restore"])
    parser.add_argument("--bootstrap")
    parser.add_argument("--events-topic")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--eos", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.what == "costs":
        costs(args.runs or 500)
        return
    if args.what == "offline":
        work = offline(args.runs or 1500)
    elif args.what == "restore":
        work = restore(args.runs or 20_000)
    elif not args.bootstrap:
        parser.error(f"{args.what} needs --bootstrap")
    elif args.what == "producer":
        work = producer(args.bootstrap, args.runs or 1500)
    else:
        if not args.events_topic:
            parser.error("fold needs --events-topic (a pre-loaded topic)")
        work = fold(args.bootstrap, args.events_topic, args.eos)
    _profile(args.what, work, args.top, args.out)


if __name__ == "__main__":
    main()
