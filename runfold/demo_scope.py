"""Which records in the shared topics are this demo's: positions captured before it sends.

``runfold demo`` uses the standard topics and the folding group ``runfold`` on purpose:
afterwards ``runfold top``, ``runfold sql`` and ``runfold runs show`` see its runs without
extra options, and records that an earlier demo left unfolded (it crashed, or was
interrupted) are folded by this one, as the folding service owes them. So the topics can
hold more than this demo's records, and the service's counters can include records of
earlier runs. The summary therefore counts only this demo's own:

- runs, statuses, violations and events applied: the states in ``agent-runs`` of this
  fleet's run ids (run ids come from the seed; ``runfold demo`` refuses a seed whose runs
  are already there before sending anything);
- dead letters: DLQ records whose source offset (header ``runfold.source.offset``) is at
  or past where the events topic ended when the demo started, read from where the DLQ
  ended then;
- leftovers: records the group had not folded when the demo started (end minus committed
  offset per partition), shown beside the service's consumed count.

The alternatives were topics of its own per demo (a prefix per run), which leaves the
default topics and ``runfold top`` empty after a demo and piles up topics, and a group of
its own per demo, which leaves an earlier demo's unfolded records unfolded and the
``runfold`` group's lag at their number for ever.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from schemas.errors import KafkaSetupError

__all__ = ["DemoScope", "capture_scope", "count_dead_letters"]


@dataclass(frozen=True)
class DemoScope:
    """Where the shared topics ended, and how far the group had folded, at the demo's start."""

    events_topic: str
    dlq_topic: str
    events_start: dict[int, int]
    """Events partition -> its end offset: this demo's records are at or past it."""
    dlq_start: dict[int, int]
    """DLQ partition -> its end offset: this demo's dead letters are at or past it."""
    leftover: int
    """Records of the events topic the group had not folded yet (earlier runs')."""


def _consumer(config: Mapping[str, Any], group: str) -> Consumer:
    # The group's id only to read its committed offsets: it never subscribes (so never
    # joins the group) and never commits. log_level 3 keeps a fresh broker's retries quiet.
    return Consumer({
        **config, "group.id": group, "enable.auto.commit": False,
        "enable.auto.offset.store": False, "enable.partition.eof": True,
        "isolation.level": "read_committed", "log_level": 3,
    })


def _partitions(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    meta = consumer.list_topics(topic, timeout=timeout)
    found = meta.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise KafkaSetupError(f"topic {topic!r} has no partitions on the cluster")
    return sorted(found.partitions)


def _watermarks(consumer: Consumer, topic: str, partitions: list[int],
                deadline: float) -> dict[int, tuple[int, int]]:
    """``partition -> (low, high)``, retried while a fresh partition has no leader yet."""
    marks: dict[int, tuple[int, int]] = {}
    for p in partitions:
        while True:
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
                marks[p] = (int(low), int(high))
                break
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
    return marks


def capture_scope(config: Mapping[str, Any], group: str, events_topic: str, dlq_topic: str,
                  *, timeout: float = 60.0) -> DemoScope:
    """Where ``events_topic`` and ``dlq_topic`` end now, and what ``group`` has not folded.

    ``config`` holds the connection keys (librdkafka's). Call it before anything of the
    demo is sent.
    """
    deadline = time.monotonic() + timeout
    consumer = _consumer(config, group)
    try:
        events = _watermarks(consumer, events_topic,
                             _partitions(consumer, events_topic, timeout), deadline)
        dlq = _watermarks(consumer, dlq_topic, _partitions(consumer, dlq_topic, timeout),
                          deadline)
        tps = [TopicPartition(events_topic, p) for p in events]
        while True:
            try:
                committed = consumer.committed(tps, timeout=10)
                break
            except KafkaException:
                # The group coordinator may not be there yet on a fresh broker.
                if time.monotonic() > deadline:
                    raise
        folded = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
    finally:
        consumer.close()
    leftover = sum(high - max(low, folded.get(p, low)) for p, (low, high) in events.items())
    return DemoScope(
        events_topic=events_topic,
        dlq_topic=dlq_topic,
        events_start={p: high for p, (_low, high) in events.items()},
        dlq_start={p: high for p, (_low, high) in dlq.items()},
        leftover=max(0, leftover),
    )


def count_dead_letters(config: Mapping[str, Any], scope: DemoScope, *,
                       timeout: float = 30.0) -> tuple[int, int]:
    """``(this demo's, earlier runs')`` dead letters written since the demo started.

    Reads the DLQ (``read_committed``) from ``scope.dlq_start`` to its end; call it after
    the folding service has stopped. A record is this demo's when its source offset is at
    or past ``scope.events_start`` of its source partition.
    """
    from consumers.service.dlq import parse_dead_letter_headers

    consumer = _consumer(config, f"runfold-demo-dlq-{time.time_ns()}")
    ours = earlier = 0
    try:
        consumer.assign([TopicPartition(scope.dlq_topic, p, offset)
                         for p, offset in scope.dlq_start.items()])
        behind = set(scope.dlq_start)
        deadline = time.monotonic() + timeout
        while behind:
            if time.monotonic() > deadline:
                raise KafkaSetupError(
                    f"could not read {scope.dlq_topic} to its end within {timeout:g}s "
                    f"(partitions {sorted(behind)} still behind)")
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        behind.discard(msg.partition() or 0)
                    elif err.fatal():
                        raise KafkaException(err)
                    continue
                try:
                    letter = parse_dead_letter_headers(msg.headers())  # type: ignore[arg-type]
                except (KeyError, ValueError):
                    earlier += 1  # not written by runfold's service; not this demo's
                    continue
                start = scope.events_start.get(letter.source_partition)
                if (letter.source_topic == scope.events_topic and start is not None
                        and letter.source_offset >= start):
                    ours += 1
                else:
                    earlier += 1
    finally:
        consumer.close()
    return ours, earlier
