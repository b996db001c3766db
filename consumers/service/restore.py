"""Restore: read the latest value of every key in some partitions of a topic.

The folding service owns a set of input partitions; on assignment it rebuilds
the runs of those partitions from the co-partitioned state topic
(``agent-runs``). This module reads a topic's partitions from the beginning to
their end with a plain ``assign()``-ed consumer (no group, nothing committed)
and keeps the last value per key, as a compacted topic means it.

"The end" needs care under transactions. A ``read_committed`` consumer stops at
the last stable offset (LSO); a transaction still open when the read starts
(the previous owner's last commit whose markers are still being written, or a
killed instance's transaction waiting for ``transaction.timeout.ms``) holds the
LSO back. Stopping at that LSO would miss a transaction that is about to
commit. So the target is the *uncommitted* high watermark at the start: the
read ends once the consumer has passed it, which happens only after every
transaction open at the start has committed or aborted (bounded by the
transaction timeout). Records of aborted transactions are filtered out by the
consumer and never seen here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from consumers.service.edge import FoldEdge
from consumers.service.memory import release_freed_memory
from schemas.errors import RunfoldError

__all__ = [
    "RestoreError",
    "RestoredPartition",
    "high_watermarks",
    "iter_partition",
    "position",
    "read_latest_by_key",
    "rebuild_partition",
]


_RESTORE_BATCH = 10_000
"""Records per consume call while restoring."""
_READ_TO_END = {
    # librdkafka stops fetching for fetch.queue.backoff.ms (default 1 s) each time its
    # queue of fetched records is full; reading a topic as fast as it can be folded into
    # a dict, the queue is full all the time, and those pauses were two thirds of a
    # 1M-run restore (12.6 -> 4.7 s with 1 ms). A smaller queue (16 MiB, not 64) keeps
    # fewer fetched bytes alive at once and read as fast.
    "fetch.queue.backoff.ms": 1,
    "queued.max.messages.kbytes": 16_384,
}


class RestoreError(RunfoldError):
    """A state topic could not be read to its end in time."""


@dataclass(slots=True)
class RestoredPartition:
    """The latest raw value per key of one partition, and how much was read."""

    partition: int
    latest: dict[bytes, bytes] = field(default_factory=dict)
    records: int = 0
    end_offset: int = 0


def position(msg: Message) -> tuple[int, int]:
    """``(partition, offset)`` of a consumed record (always set for a fetched one)."""
    partition, offset = msg.partition(), msg.offset()
    if partition is None or offset is None:
        raise RestoreError(f"record of {msg.topic()} has no partition/offset")
    return partition, offset


def high_watermarks(
    config: Mapping[str, object], topic: str, partitions: list[int], timeout: float = 10.0
) -> dict[int, tuple[int, int]]:
    """``(low, high)`` watermarks per partition, *uncommitted* (the log end offset)."""
    consumer = Consumer(
        {
            **config,
            "group.id": "runfold-watermarks",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        return {p: _watermarks(consumer, TopicPartition(topic, p), timeout) for p in partitions}
    finally:
        consumer.close()


# Right after a topic is created (or a leader moves) the broker answers these for a
# while; they heal by themselves, so they are waited out rather than stopping the service.
_TRANSIENT = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)


def _watermarks(consumer: Consumer, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    deadline = time.monotonic() + max(timeout, 30.0)
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0]
            transient = error.retriable() or error.code() in _TRANSIENT
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_latest_by_key(
    config: Mapping[str, object],
    topic: str,
    partitions: list[int],
    *,
    timeout: float = 60.0,
    stop_at: Mapping[int, int] | None = None,
    pack: Callable[[bytes, bytes], bytes] | None = None,
    take: Callable[[int, bytes, bytes | None], bool] | None = None,
) -> dict[int, RestoredPartition]:
    """Read ``partitions`` of ``topic`` (read_committed) and keep the last value per key.

    ``config`` holds the connection settings (``bootstrap.servers``, security).
    Reading stops at the uncommitted high watermark taken at the start, or at
    ``stop_at[p]`` (exclusive) when given. Records without a key are skipped; a
    null value (tombstone) removes its key. ``pack(key, value)``, when given, is
    what is kept of each value (the service keeps them compact until used).
    ``take(partition, key, value)``, when given, sees every keyed record first, in
    order (``value`` None for a tombstone); when it returns True the caller keeps the
    record elsewhere and the key leaves ``latest`` (the service's markers go straight
    into their table: no dict of a hundred thousand small values on the way).
    Raises :class:`RestoreError` after ``timeout`` seconds.
    """
    result = {p: RestoredPartition(partition=p) for p in partitions}
    if not partitions:
        return result
    marks = high_watermarks(config, topic, partitions)
    targets: dict[int, int] = {}
    for p in partitions:
        low, high = marks[p]
        target = high if stop_at is None or p not in stop_at else min(high, stop_at[p])
        result[p].end_offset = target
        if target > low:
            targets[p] = target
    if not targets:
        return result
    consumer = Consumer(
        {
            **config,
            "group.id": "runfold-restore",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            **_READ_TO_END,
        }
    )
    deadline = time.monotonic() + timeout
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in targets])
        pending = dict(targets)
        latest_of = {p: result[p].latest for p in targets}
        counts = dict.fromkeys(targets, 0)
        while pending:
            if time.monotonic() > deadline:
                raise RestoreError(
                    f"restoring {topic} partitions {sorted(pending)} did not reach offsets "
                    f"{pending} within {timeout:.0f}s; is a transaction stuck open?"
                )
            # The loop body runs once per record of the whole topic (a million for a
            # million runs): what it asks of each message is kept to the minimum.
            for msg in consumer.consume(num_messages=_RESTORE_BATCH, timeout=0.5):
                err = msg.error()
                if err is not None:
                    p, offset = position(msg)
                    if err.code() == KafkaError._PARTITION_EOF:
                        if p in pending and offset >= pending[p]:
                            del pending[p]
                        continue
                    if err.fatal():
                        raise KafkaException(err)
                    continue  # transient: librdkafka retries the fetch itself
                partition = msg.partition()
                at = msg.offset()
                end = pending.get(partition)  # type: ignore[arg-type]
                if end is None or at is None:
                    continue
                if at >= end:
                    del pending[partition]  # type: ignore[arg-type]
                    continue
                key = msg.key()
                if key is not None:
                    value = msg.value()
                    counts[partition] += 1  # type: ignore[index]
                    latest = latest_of[partition]  # type: ignore[index]
                    taken = take is not None and take(partition, key, value)  # type: ignore[arg-type]
                    if taken or value is None:
                        latest.pop(key, None)
                    elif pack is None:
                        latest[key] = value
                    else:
                        latest[key] = pack(key, value)
                if at + 1 >= end:
                    del pending[partition]  # type: ignore[arg-type]
    finally:
        consumer.close()
        release_freed_memory()
    for p, count in counts.items():
        result[p].records = count
    return result


def iter_partition(
    config: Mapping[str, object],
    topic: str,
    partition: int,
    *,
    stop: int | None = None,
    timeout: float = 60.0,
) -> Iterator[Message]:
    """Yield the committed records of one partition from its beginning, in order.

    Stops before offset ``stop`` when given, else at the uncommitted high
    watermark taken at the start (see the module docstring for why).
    """
    low, high = high_watermarks(config, topic, [partition])[partition]
    target = high if stop is None else min(stop, high)
    if target <= low:
        return
    consumer = Consumer(
        {
            **config,
            "group.id": "runfold-restore",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            **_READ_TO_END,
        }
    )
    deadline = time.monotonic() + timeout
    try:
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        while True:
            if time.monotonic() > deadline:
                raise RestoreError(
                    f"reading {topic}[{partition}] did not reach offset {target} "
                    f"within {timeout:.0f}s"
                )
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                err = msg.error()
                offset = position(msg)[1]
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if offset >= target:
                            return
                        continue
                    if err.fatal():
                        raise KafkaException(err)
                    continue
                if offset >= target:
                    return
                yield msg
                if offset + 1 >= target:
                    return
    finally:
        consumer.close()


def rebuild_partition(
    config: Mapping[str, object],
    events_topic: str,
    partition: int,
    stop: int,
    edge: FoldEdge,
) -> dict[bytes, Any]:
    """Fold one events partition again from its beginning up to ``stop`` (exclusive).

    For a state topic that lost a partition's data: the runs are rebuilt from their
    events. Records that cannot be decoded, have the wrong key or are rejected by
    the fold are skipped (they went to the DLQ the first time); nothing is emitted.
    """
    runs: dict[bytes, Any] = {}
    for msg in iter_partition(config, events_topic, partition, stop=stop):
        offset = position(msg)[1]
        value = msg.value() or b""
        try:
            event = edge.decode_event(value, events_topic, partition, offset)
        except RunfoldError:
            continue
        key = str(event.run_id).encode()
        if msg.key() != key:
            continue
        try:
            # The same digest as the service's: these states are written and restored.
            state, _ = edge.apply(runs.get(key), event)
        except RunfoldError:
            continue
        state.source_offset = offset
        runs[key] = state
    return runs
