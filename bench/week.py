"""A week of a fleet in event time, folded through Kafka: memory and restore over months.

The other stages fold short bursts; this one asks what a service that has run for a week
holds. The stream is ``runs`` short runs (``graph_started``, a node entered and exited,
``graph_completed``), their starts spread evenly over ``days`` of event time, in time order,
then ``active`` runs started in the last minutes that never end. After the fold every
finished run but the last few minutes' is past its grace period, so the service holds
``active`` whole runs and about ``runs`` finished-run markers (fewer when the retention is
shorter than the week: those are forgotten and tombstoned).

Two sizes are folded, each by a fresh service, then restored by a second instance of the
same group (everything is committed, so it restores and consumes nothing):

- the RSS the week left, ``RSS a minute after all is committed - RSS of the same service
  idle before the first event`` (both after the service gave freed memory back),
  against the issue's budget: 1 KiB per active run plus 100 B per finished-run marker
  held (the markers are the second instance's restored runs less the active ones);
- the restore's own timing at both sizes: with a retention shorter than the week (a day,
  :data:`RETENTION`, unless the options give one), the larger fleet has four times the
  runs ever finished of the smaller but the same markers within the retention; the
  changelog is compacted by the broker (:data:`_CHANGELOG_CLEANING`) before the restore.

Records are spliced from templates (the run id, seq and timestamp written into the
encoded bytes of four template events), not built as models: a million runs are four
million records, and building each as a pydantic model would take longer than the fold.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

from bench.kafka_env import BenchError, create_topic, end_offsets, rss_bytes, wait_committed
from bench.results import Measurement
from bench.runfold_stages import ServiceTopics, start_service
from producers import Fleet, FleetConfig
from producers.kafka import DEFAULT_PRODUCER_CONFIG
from schemas.avro_binary import encode_event
from schemas.avro_binary.primitives import write_long
from schemas.framing import SINGLE_OBJECT_MAGIC

__all__ = ["STAGE_WEEK", "WeekFleet", "measure_week"]

STAGE_WEEK = "week"
_NS = 1_000_000_000
_DAY_NS = 86_400 * _NS
_RUN_NS = 4 * _NS
"""Event time from a run's first event to its last."""
_KINDS = ("GraphStarted", "NodeEntered", "NodeExited", "GraphCompleted")
RETENTION = "--finished-retention=1d"
"""The stage's retention unless its consume options give one: a day of a week, so that the
larger week has four times the runs ever finished of the smaller but the same markers."""
_CHANGELOG_CLEANING = {
    # The broker's log cleaner compacts only closed segments whose dirty share exceeds the
    # ratio, and keeps a tombstone delete.retention.ms after that: small segments and no
    # lag, so that the forgotten runs' records are gone before the restore reads the topic.
    "cleanup.policy": "compact",
    "segment.bytes": str(4 * 2**20),
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "1000",
}
_QUIET = 3.0
"""Seconds of no records before the idle reading that starts the week: the service gives
freed memory back after one (``consumers.service.loop``)."""
_SETTLED = 65.0
"""Seconds of no records before the reading that ends it: a minute of quiet, so that every
run left open has waited past ``--page-idle-after`` (a minute by default) and is held
packed, as a week's waiting runs are, and the memory that freed is given back."""
_CLEANER_WAIT = 35.0
"""Seconds between the fold and the restore: two passes of the cleaner (15 s apart by
default), the second removing the tombstones the first kept. Not for small weeks (the
``--quick`` run), whose restore takes a second either way."""


def _templates() -> dict[str, bytes]:
    """The encoded kind-and-payload tail of one event of each kind :data:`_KINDS` needs."""
    found: dict[str, Any] = {}

    def keep(event: Any) -> bytes:
        found.setdefault(type(event.kind).__name__, event)
        return b""

    for _ in Fleet(
        FleetConfig(runs=20, agents=1, seed=7, fail_rate=0.0, cancel_rate=0.0, interrupt_rate=0.0),
        encode=keep,
    ).records():
        pass
    tails = {}
    for name in _KINDS:
        event = found[name]
        body = encode_event(event)
        head = 1 + 36 + len(write_long(event.seq)) + len(write_long(int(event.timestamp)))
        tails[name] = body[head:]
    return tails


@dataclass(frozen=True)
class WeekFleet:
    """``runs`` finished runs over ``days`` of event time, then ``active`` open ones."""

    runs: int
    active: int
    days: float = 7.0
    seed: int = 2026
    start_ns: int = 1_780_000_000 * _NS

    @property
    def end_ns(self) -> int:
        """Event time of the last finished run's start."""
        return self.start_ns + int(self.days * _DAY_NS)

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        """``(key, value)`` in event-time order (single-object framing, Event's pinned version)."""
        tails = _templates()
        from schemas.avro_binary import PINNED

        header = SINGLE_OBJECT_MAGIC + PINNED["Event"] + b"\x48"  # the run id's length, 36
        rng = random.Random(self.seed)
        step = int(self.days * _DAY_NS) // max(1, self.runs)
        finished = [tails[name] for name in _KINDS]
        for index in range(self.runs):
            key = str(uuid.UUID(int=rng.getrandbits(128), version=4)).encode()
            at = self.start_ns + index * step
            for seq, tail in enumerate(finished, 1):
                stamp = at + (seq - 1) * (_RUN_NS // 3)
                yield key, b"".join((header, key, write_long(seq), write_long(stamp), tail))
        opened = finished[:2]
        for index in range(self.active):
            key = str(uuid.UUID(int=rng.getrandbits(128), version=4)).encode()
            at = self.end_ns + index * (60 * _NS) // max(1, self.active)
            for seq, tail in enumerate(opened, 1):
                yield key, b"".join((header, key, write_long(seq), write_long(at + seq), tail))

    @property
    def events(self) -> int:
        return 4 * self.runs + 2 * self.active


def _load(bootstrap: str, topic: str, fleet: WeekFleet) -> None:
    producer = Producer(
        {
            **DEFAULT_PRODUCER_CONFIG,
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
        }
    )
    for count, (key, value) in enumerate(fleet.records()):
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        if count % 10_000 == 0:
            producer.poll(0)
    if producer.flush(600):
        raise BenchError(f"could not write the week's {fleet.events:,} events to {topic}")


@dataclass
class _Folded:
    fleet: WeekFleet
    fold_seconds: float
    growth: int | None
    restore_seconds: float
    restored: int
    restore_rss: int | None


def _fold_and_restore(
    bootstrap: str,
    admin: Any,
    partitions: int,
    prefix: str,
    fleet: WeekFleet,
    consume_args: list[str],
    timeout: float,
    cleaner_wait: float,
) -> _Folded:
    events_topic = f"{prefix}events"
    create_topic(admin, events_topic, partitions)
    topics = ServiceTopics.own(events_topic, prefix)
    topics.create(admin, partitions, changelog=_CHANGELOG_CLEANING)
    group = f"{prefix}group"
    service = start_service(
        bootstrap, topics, group, "exactly-once", until_idle=600.0, extra=consume_args
    )
    try:
        service.wait_mark("restored", 120)
        time.sleep(_QUIET)
        before = rss_bytes(service.pid)  # idle, nothing folded, freed memory given back
        started = time.monotonic()
        _load(bootstrap, events_topic, fleet)
        targets = end_offsets(bootstrap, events_topic, partitions)
        done = wait_committed(
            bootstrap, group, events_topic, targets, timeout=timeout, alive=service.alive
        )
        time.sleep(_SETTLED)
        after = rss_bytes(service.pid)
        service.proc.terminate()
        service.finish(timeout=60)
    finally:
        service.stop()
    growth = after - before if after is not None and before is not None else None
    time.sleep(cleaner_wait)
    again = start_service(
        bootstrap, topics, group, "exactly-once", until_idle=3.0, extra=consume_args
    )
    try:
        again.wait_mark("restored", timeout)
        time.sleep(1.0)
        restore_rss = rss_bytes(again.pid)
    finally:
        again.stop()
    found = again.match("restored")
    if found is None:
        raise BenchError(f"the second instance did not restore: {again.tail()}")
    return _Folded(
        fleet, done - started, growth, float(found.group(2)), int(found.group(1)), restore_rss
    )


def measure_week(
    bootstrap: str,
    admin: Any,
    partitions: int,
    prefix: str,
    *,
    runs: int,
    active: int,
    days: float = 7.0,
    consume_args: tuple[str, ...] = (),
    timeout: float = 1800.0,
) -> list[Measurement]:
    """The week at ``runs // 4`` and ``runs`` finished runs, ``active`` open ones at both."""
    if not any(arg.startswith("--finished-retention") for arg in consume_args):
        consume_args = (*consume_args, RETENTION)
    small, large = (
        _fold_and_restore(
            bootstrap,
            admin,
            partitions,
            f"{prefix}week{size}-",
            WeekFleet(n, active, days * n / runs),
            list(consume_args),
            timeout,
            _CLEANER_WAIT if runs >= 100_000 else 0.0,
        )
        for size, n in (("s", runs // 4), ("l", runs))
    )
    detail = (
        f"{small.fleet.runs:,} and {large.fleet.runs:,} finished runs over "
        f"{small.fleet.days:g} and {large.fleet.days:g} days of event time, {active:,} "
        f"open; {partitions} partitions; `runfold consume {' '.join(consume_args)}`"
    )
    rows = []
    for name, folded in (("small", small), ("large", large)):
        markers = max(0, folded.restored - active)
        budget = active * 1024 + markers * 100
        held = active + markers
        rows.append(
            Measurement(
                f"week.rss.{name}",
                STAGE_WEEK,
                f"RSS the week left, {folded.fleet.runs:,} runs finished",
                None if folded.growth is None else folded.growth / 2**20,
                "MiB",
                detail=f"{detail}. {active:,} active runs + {markers:,} markers held: "
                f"{(folded.growth or 0) / max(1, held):,.0f} B per run held; budget "
                f"{budget / 2**20:,.1f} MiB (1 KiB per active run + 100 B per marker); "
                "RSS a minute after the fold - RSS idle before it",
                valid=folded.growth is not None,
                extra={"growth": folded.growth, "budget": budget, "markers": markers},
            )
        )
    return [
        *rows,
        *(
            Measurement(
                f"week.restore_seconds.{name}",
                STAGE_WEEK,
                f"restore after a week, {folded.fleet.runs:,} runs finished",
                folded.restore_seconds,
                "s",
                detail=f"{folded.restored:,} runs or markers restored; "
                f"fold took {folded.fold_seconds:.1f}s; RSS after restore "
                f"{(folded.restore_rss or 0) / 2**20:.0f} MiB",
                extra={"restored": folded.restored},
            )
            for name, folded in (("small", small), ("large", large))
        ),
    ]
