"""Stages with a running folding service: end-to-end latency, and restore on assignment.

Latency: a :class:`~producers.RunRecorder` emits live runs (wall-clock timestamps) at a
fixed offered rate through an :class:`~producers.EventProducer`; a ``runfold consume``
child process folds them exactly-once; a ``read_committed`` consumer of the service's
``agent-runs`` topic sees each run's state land. An event's latency is the time from its
timestamp to the first committed state of its run whose ``last_seq`` covers it.

Restore: ``agent-runs`` is pre-loaded with many runs (one real folded state, its run_id
rewritten per run: same size, same shape); a fresh service is assigned the partitions and
restores them. The time is the service's own (its "restored N runs ... in S s" log line);
RSS per run is the child's resident set after the restore minus before it, divided by N.
"""

from __future__ import annotations

import gc
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.kafka_env import BenchError, Watched, create_topic
from bench.results import Measurement
from bench.runfold_stages import ServiceTopics, start_service
from consumers import apply_event
from consumers.service.edge import FoldEdge
from producers import EventProducer, Fleet, FleetConfig, RunRecorder
from producers.kafka import DEFAULT_PRODUCER_CONFIG
from schemas import Event, NodeEntered, NodeExited, ToolCalled, ToolReturned
from schemas.codec import EventCodec

__all__ = ["LiveFolder", "measure_latency", "measure_restore", "runfold_folder"]

STAGE_LATENCY = "latency"
STAGE_RESTORE = "restore"
_OPEN_RUNS = 64
_WARM_UP = 2.0
"""Seconds of offered load before latencies count."""
_EVENTS_PER_RUN = 24


class _TimedSink:
    """Forwards events to the producer, remembering each one's timestamp first.

    Events sent before ``measure_from`` (ns) are the warm-up: folded like the others but
    not counted (timestamp 0 in ``pending``).
    """

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer
        self.pending: dict[str, deque[tuple[int, int]]] = {}
        self.lock = threading.Lock()
        self.sent = 0
        self.measure_from = 0

    def send(self, event: Event) -> None:
        run_id = str(event.run_id)
        stamp = int(event.timestamp)
        measured = stamp >= self.measure_from
        with self.lock:
            self.pending.setdefault(run_id, deque()).append((event.seq, stamp if measured else 0))
        self.producer.send(event)
        self.sent += measured


def _emit_step(handle: Any, step: int) -> None:
    node = f"node-{step % 5}"
    kind = step % 4
    if kind == 0:
        handle.emit(NodeEntered(node_id=node, iteration=step // 4 + 1), {"tokens": step * 7})
    elif kind == 1:
        handle.emit(ToolCalled(tool_name="search"), {"query": f"q{step}"})
    elif kind == 2:
        handle.emit(ToolReturned(tool_name="search"), {"hits": step})
    else:
        handle.emit(NodeExited(node_id=node, next_node=None, duration_ms=step), {})


def _offer(recorder: RunRecorder, rate: float, seconds: float) -> tuple[int, float]:
    """Emit runs at ``rate`` events/s for ``seconds``; (events sent, seconds taken)."""
    open_runs: list[tuple[Any, Any, int]] = []
    started = time.monotonic()
    sent = 0
    run_rng = random.Random(7)
    # Bounded by time, not by count: on a busy machine the offered rate may not be reached,
    # and the achieved rate is reported rather than the stage running on and on.
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate) + 1
        while sent < due:
            if len(open_runs) < _OPEN_RUNS:
                manager = recorder.run("d" * 64, "a" * 40, {"task": sent}, graph_name="bench",
                                       run_id=uuid.UUID(int=run_rng.getrandbits(128), version=4))
                open_runs.append((manager, manager.__enter__(), 0))
                sent += 1
                continue
            slot = run_rng.randrange(len(open_runs))
            manager, handle, steps = open_runs[slot]
            if steps >= _EVENTS_PER_RUN:
                manager.__exit__(None, None, None)  # graph_completed
                open_runs.pop(slot)
            else:
                _emit_step(handle, steps)
                open_runs[slot] = (manager, handle, steps + 1)
            sent += 1
        time.sleep(0.002)
    for manager, _, _ in open_runs:
        manager.__exit__(None, None, None)
    return sent + len(open_runs), time.monotonic() - started  # sent counts graph_started too


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass(frozen=True)
class LiveFolder:
    """What folds the live events: a started process, when it is ready, where its state lands."""

    process: Watched
    ready: str
    """The mark of ``process`` after which load is offered (assigned, restored)."""
    state_topic: str
    read_state: Callable[[bytes, bytes], tuple[str, int]]
    """``(run_id, last_seq)`` of one committed state record (key, value)."""
    key: str = "latency"
    label: str = "end-to-end latency"
    cleanup: Callable[[], None] = lambda: None
    """Called once the process is stopped (its working directory removed)."""


def runfold_folder(bootstrap: str, topics: ServiceTopics, group: str, seconds: float,
                   consume_args: tuple[str, ...]) -> LiveFolder:
    """``runfold consume`` exactly-once, its state read from ``agent-runs``."""
    service = start_service(bootstrap, topics, group, "exactly-once",
                            until_idle=seconds + 120, extra=list(consume_args))
    edge = FoldEdge.default()

    def read_state(_key: bytes, value: bytes) -> tuple[str, int]:
        state = edge.read_run(value).state
        return str(state.run_id), state.last_seq

    return LiveFolder(service, "restored", topics.runs, read_state)


def measure_latency(
    bootstrap: str, admin: Any, partitions: int, prefix: str, *, rate: float, seconds: float,
    consume_args: tuple[str, ...] = (),
    folder: Callable[[str, ServiceTopics, str, float], LiveFolder] | None = None,
) -> list[Measurement]:
    """p50/p99 from event timestamp to its run's state committed, at ``rate`` ev/s.

    ``folder(bootstrap, topics, group, seconds)`` starts what folds (runfold's service
    unless given: the Kafka Streams peer is the other).
    """
    topics = ServiceTopics.own(f"{prefix}lat-events", f"{prefix}lat-")
    create_topic(admin, topics.events, partitions)
    group = f"{prefix}lat"
    if folder is None:
        topics.create(admin, partitions)
        live = runfold_folder(bootstrap, topics, group, seconds, consume_args)
    else:
        live = folder(bootstrap, topics, group, seconds)
    service = live.process
    latencies: list[float] = []
    stop = threading.Event()
    producer = EventProducer(topics.events, bootstrap_servers=bootstrap)
    sink = _TimedSink(producer)

    def read_states() -> None:
        consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"{group}-reader",
            "isolation.level": "read_committed", "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
        })
        consumer.assign([TopicPartition(live.state_topic, p, OFFSET_BEGINNING)
                         for p in range(partitions)])
        try:
            while not stop.is_set():
                # poll() returns on the first state; consume(n, t) would wait out t for n
                # of them and add that wait to every latency it reports.
                first = consumer.poll(0.05)
                if first is None:
                    continue
                for msg in [first, *consumer.consume(num_messages=1000, timeout=0)]:
                    value = msg.value()
                    if msg.error() is not None or value is None:
                        continue
                    now = time.time_ns()
                    run_id, last_seq = live.read_state(msg.key() or b"", value)
                    with sink.lock:
                        waiting = sink.pending.get(run_id)
                        while waiting and waiting[0][0] <= last_seq:
                            stamp = waiting.popleft()[1]
                            if stamp:
                                latencies.append((now - stamp) / 1e6)
        finally:
            consumer.close()

    reader = threading.Thread(target=read_states, daemon=True)
    # What earlier stages left in this process (fleets, half a million Event models) must
    # not be scanned by the collector while the reader stamps arrival times: a full
    # collection stops both threads and shows up as latency of runfold's.
    gc.collect()
    gc.freeze()
    try:
        service.wait_mark(live.ready, 90)
        reader.start()
        producer.connect()
        # The first second of a fresh topic, producer and transaction (metadata, the first
        # AddPartitionsToTxn, fetch sessions) is start-up, not the steady state this
        # stage reports: offered like the rest, folded, not counted.
        sink.measure_from = time.time_ns() + int(_WARM_UP * 1e9)
        _, took = _offer(RunRecorder(sink), rate, seconds + _WARM_UP)
        took -= _WARM_UP
        producer.flush(60)
        sent = sink.sent
        deadline = time.monotonic() + 30
        while len(latencies) < sent and time.monotonic() < deadline and service.alive():
            time.sleep(0.1)
    finally:
        stop.set()
        reader.join(timeout=10)
        service.stop()
        live.cleanup()
        producer.close(timeout=10)
        gc.unfreeze()
    if not latencies:
        raise BenchError(f"no committed run state was seen; service: {service.tail()}")
    seen = f"{len(latencies):,} of {sent:,} events seen committed"
    detail = (f"offered {rate:,.0f} ev/s for {seconds:.0f}s after {_WARM_UP:.0f}s of warm-up "
              f"(achieved {sent / took:,.0f}); {seen}")
    if consume_args and folder is None:
        detail += f"; runfold consume {' '.join(consume_args)}"
    complete = len(latencies) == sent
    note = "" if complete else f"only {seen}"
    return [
        Measurement(f"{live.key}.p50", STAGE_LATENCY, f"{live.label} p50",
                    _percentile(latencies, 50), "ms", detail=detail, valid=complete, note=note),
        Measurement(f"{live.key}.p99", STAGE_LATENCY, f"{live.label} p99",
                    _percentile(latencies, 99), "ms", detail=detail, valid=complete, note=note,
                    extra={"max_ms": max(latencies)}),
    ]


def _template_state() -> tuple[bytes, bytes]:
    """One realistic folded run's state bytes, and its run_id text inside them."""
    fleet = Fleet(FleetConfig(runs=1, agents=1, seed=11))
    codec = EventCodec()
    state = None
    for offset, (_, value, _) in enumerate(fleet.records()):
        state, _ = apply_event(state, codec.decode(value))
        state.source_offset = offset
    assert state is not None
    return FoldEdge.default().encode_state(state), str(state.run_id).encode()


def _preload_states(bootstrap: str, topic: str, runs: int) -> int:
    """Write ``runs`` distinct run states to ``topic``; their average size."""
    template, old_id = _template_state()
    producer = Producer({**DEFAULT_PRODUCER_CONFIG, "bootstrap.servers": bootstrap})
    rng = random.Random(5)
    for index in range(runs):
        run_id = str(uuid.UUID(int=rng.getrandbits(128), version=4)).encode()
        while True:
            try:
                producer.produce(topic, template.replace(old_id, run_id), run_id)
                break
            except BufferError:
                producer.poll(0.05)
        if index % 1000 == 0:
            producer.poll(0)
    if producer.flush(300):
        raise BenchError(f"could not write {runs} run states to {topic}")
    return len(template)


def measure_restore(
    bootstrap: str, admin: Any, partitions: int, prefix: str, *, runs: int, timeout: float,
) -> list[Measurement]:
    """Restore ``runs`` runs on assignment, in seconds. (What they cost in memory once
    folded is the week stage's: :mod:`bench.week`.)"""
    topics = ServiceTopics.own(f"{prefix}restore-events", f"{prefix}restore-")
    create_topic(admin, topics.events, partitions)
    topics.create(admin, partitions)
    size = _preload_states(bootstrap, topics.changelog, runs)
    service = start_service(bootstrap, topics, f"{prefix}restore", "exactly-once",
                            until_idle=5.0)
    try:
        service.wait_mark("restored", timeout)
    finally:
        service.stop()
    found = service.match("restored")
    assert found is not None
    restored, seconds = int(found.group(1)), float(found.group(2))
    valid = restored == runs
    note = "" if valid else f"restored {restored:,} runs, expected {runs:,}"
    detail = f"{runs:,} runs in the changelog ({size} B per state record), {partitions} partitions"
    return [
        Measurement("restore.seconds", STAGE_RESTORE, "restore on assignment", seconds, "s",
                    detail=detail + "; the service's own timing", valid=valid, note=note,
                    extra={"runs": runs}),
    ]
