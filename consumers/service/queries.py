"""Read-side queries over the folded topics: list runs, show one, replay its events.

- :func:`list_runs`: the latest record of every run in ``agent-runs``;
- :func:`find_run`: one run's latest record, read from its partition only;
- :func:`replay_run`: a run's events read back from its partition of
  ``agent-run-events``, in order, with the origin ledger's replay digest.

A run's partition is the Java client's ``murmur2(key) % partitions`` (what the
producers' ``partitioner=murmur2_random`` does for a non-null key), and
``agent-runs`` is co-partitioned with the events, so both reads touch one
partition. Everything here reads ``read_committed`` and commits nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException

from consumers.run_view import RunView
from consumers.service.edge import FoldEdge
from consumers.service.restore import iter_partition, read_latest_by_key
from schemas import Event, RunStatus
from schemas.errors import KafkaSetupError, RunfoldError

__all__ = [
    "ReplayedRun",
    "RunNotFound",
    "TimelineEntry",
    "find_run",
    "list_runs",
    "murmur2",
    "partition_for",
    "replay_run",
    "topic_partitions",
]


class RunNotFound(RunfoldError, LookupError):
    """No run with that id in the topic read."""


def murmur2(data: bytes) -> int:
    """The Java client's ``Utils.murmur2`` (signed 32-bit result), as librdkafka's
    ``murmur2_random`` partitioner computes it."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    mask = 0xFFFFFFFF
    h = (seed ^ length) & mask
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    tail = length % 4
    base = n4 * 4
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition a non-null key goes to: ``toPositive(murmur2(key)) % partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def topic_partitions(config: Mapping[str, Any], topic: str, timeout: float = 10.0) -> int:
    """How many partitions ``topic`` has; :class:`KafkaSetupError` if it does not exist."""
    consumer = Consumer({**config, "group.id": "runfold-query"})
    try:
        meta = consumer.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise KafkaSetupError(f"cannot read metadata of topic {topic!r}: {exc}") from exc
    finally:
        consumer.close()
    found = meta.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise KafkaSetupError(
            f"topic {topic!r} does not exist on {config.get('bootstrap.servers')}; "
            "create it with `runfold topics create` or check the name"
        )
    return len(found.partitions)


def list_runs(
    config: Mapping[str, Any],
    runs_topic: str,
    read_run: Callable[[bytes], RunView],
    *,
    status: RunStatus | None = None,
) -> list[RunView]:
    """Every run's latest record in ``runs_topic`` as ``read_run`` reads it
    (:meth:`FoldEdge.read_run`; optionally only those with ``status``), ordered by
    ``started_at`` then run id."""
    count = topic_partitions(config, runs_topic)
    restored = read_latest_by_key(config, runs_topic, list(range(count)))
    views = [read_run(value) for part in restored.values() for value in part.latest.values()]
    if status is not None:
        views = [v for v in views if v.state.status is status]
    views.sort(key=lambda v: (int(v.state.started_at), str(v.state.run_id)))
    return views


def find_run(
    config: Mapping[str, Any],
    runs_topic: str,
    run_id: str,
    read_run: Callable[[bytes], RunView],
) -> RunView:
    """The latest record of ``run_id``, read from its partition of ``runs_topic``."""
    key = run_id.encode()
    partition = partition_for(key, topic_partitions(config, runs_topic))
    restored = read_latest_by_key(config, runs_topic, [partition])
    value = restored[partition].latest.get(key)
    if value is None:
        raise RunNotFound(f"no run {run_id} in {runs_topic} (partition {partition})")
    return read_run(value)


@dataclass(frozen=True)
class TimelineEntry:
    """One record of a replayed run: where it was, what it said, what the fold made of it."""

    offset: int
    event: Event | None
    """``None`` for a record that could not be decoded (it is in the DLQ)."""
    outcome: str
    """``applied``, ``duplicate``, ``violation``, ``buffered`` or ``dlq``; a buffered
    event released later shows ``buffered`` here and appears in ``applied``."""
    violations: tuple[str, ...] = ()


@dataclass
class ReplayedRun:
    """A run's records as read back from the events topic, refolded."""

    run_id: str
    partition: int
    timeline: list[TimelineEntry]
    applied: list[Event]
    """The events the fold applied, in the order it applied them (the run's ledger)."""
    digest: str
    """The origin ledger's replay digest of ``applied``
    (:func:`schemas.ledger.replay_digest`)."""
    state: Any


def replay_run(
    config: Mapping[str, Any],
    events_topic: str,
    run_id: str,
    edge: FoldEdge,
) -> ReplayedRun:
    """Read ``run_id``'s records from its partition of ``events_topic`` and fold them again.

    The timeline has every record with the run's key, in offset order (duplicates,
    conflicts, undecodable ones included); ``applied`` and ``digest`` cover what
    the fold applied, which is what the origin's ledger would hold.
    """
    from schemas.ledger import replay_digest

    key = run_id.encode()
    partition = partition_for(key, topic_partitions(config, events_topic))
    timeline: list[TimelineEntry] = []
    applied: list[Event] = []
    state: Any = None
    for msg in iter_partition(config, events_topic, partition):
        if msg.key() != key:
            continue
        offset = msg.offset() or 0
        value = msg.value() or b""
        try:
            event = edge.decode_event(value, events_topic, partition, offset)
        except RunfoldError as exc:
            timeline.append(TimelineEntry(offset, None, "dlq", (str(exc),)))
            continue
        # The service's digest, so duplicates and conflicts are told apart as it did.
        state, outcomes = edge.apply(state, event)
        own = outcomes[0]
        timeline.append(
            TimelineEntry(
                offset,
                event,
                own.kind.value,
                tuple(f"{v.kind.value} {v.first_seq}..{v.last_seq}" for v in own.violations),
            )
        )
        for outcome in outcomes:
            if outcome.kind.value == "applied":
                applied.append(_event_at(state, event, outcome.seq, timeline))
    if not timeline:
        raise RunNotFound(f"no events of run {run_id} in {events_topic} (partition {partition})")
    return ReplayedRun(
        run_id=run_id,
        partition=partition,
        timeline=timeline,
        applied=applied,
        digest=replay_digest(applied),
        state=state,
    )


def _event_at(state: Any, current: Event, seq: int, timeline: list[TimelineEntry]) -> Event:
    """The event applied at ``seq``: the current one, or a buffered one released now."""
    if current.seq == seq:
        return current
    for entry in reversed(timeline):
        if entry.event is not None and entry.event.seq == seq and entry.outcome == "buffered":
            return entry.event
    raise RunfoldError(f"run {state.run_id}: released seq {seq} was never buffered")
