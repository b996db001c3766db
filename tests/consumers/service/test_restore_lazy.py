"""Lazy restore on a real broker: restored runs are decoded on their first record.

A fleet is folded in two halves by two service instances; the second restores every
run of the first from the changelog and decodes only the runs its half touches. The
result must equal the fleet's ground truth, as with the eager restore before. A
damaged state stops the service with the error decoding it gives (when its run is
touched); a state stored under another key is decoded at assignment, as before, and so
is a run whose reorder buffer holds events, whose gap is then declared once its partition
moves on, with no record of its own.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer
from fold_events import make_event
from service_fixtures import (
    ALL_FAULTS,
    committed_total,
    edge_with,
    mismatches,
    read_output,
    total_records,
)

from clients.settings import TopicNames
from consumers.service import FoldService, ServiceConfig
from consumers.service.edge import FoldEdge
from consumers.service.restore import read_latest_by_key
from producers import FaultRates, Fleet, FleetConfig
from producers.kafka import DEFAULT_PRODUCER_CONFIG
from schemas import Event
from schemas.codec import encode_event
from schemas.errors import RunfoldError
from schemas.model import MAX_REORDER_DELAY_NS

pytestmark = pytest.mark.integration


def _produce(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], **where: int
) -> None:
    producer = Producer({**DEFAULT_PRODUCER_CONFIG, "bootstrap.servers": bootstrap})
    for key, value in records:
        producer.produce(topic, value, key=key, **where)
        producer.poll(0)
    assert producer.flush(60) == 0


_Records = list[tuple[bytes, bytes]]


def _halves(runs: int, seed: int) -> tuple[_Records, _Records, dict[str, Any]]:
    fleet = Fleet(
        FleetConfig(runs=runs, seed=seed, faults=FaultRates.parse(ALL_FAULTS)),
        encode=lambda event: encode_event(event),
    )
    records = [(key, value) for key, value, _ in fleet.records()]
    half = len(records) // 2
    return records[:half], records[half:], fleet.manifest()


def _config(bootstrap: str, topics: TopicNames, group: str) -> ServiceConfig:
    return ServiceConfig.on_topics(
        {"bootstrap.servers": bootstrap},
        topics,
        group=group,
        until_idle=2,
        batch_size=500,
        # Lazy decoding is the subject: no finished run of the fleet (20 minutes of event
        # time) becomes a marker here (test_lifecycle_service.py covers that).
        finished_grace_s=30 * 86400,
        finished_retention_s=60 * 86400,
    )


def _stored_runs(bootstrap: str, topics: TopicNames) -> dict[bytes, bytes]:
    restored = read_latest_by_key({"bootstrap.servers": bootstrap}, topics.changelog, [0, 1, 2])
    return {key: value for part in restored.values() for key, value in part.latest.items()}


def test_restored_runs_touched_or_not_fold_to_the_ground_truth(
    kafka_bootstrap: str, unique_topics: TopicNames
) -> None:
    first, second, manifest = _halves(160, seed=81)
    _produce(kafka_bootstrap, unique_topics.events, first)
    config = _config(kafka_bootstrap, unique_topics, "lazy")
    FoldService(config).run()
    before = _stored_runs(kafka_bootstrap, unique_topics)
    touched = {key for key, _ in second} & set(before)
    assert 0 < len(touched) < len(before)  # some restored runs see events again, some not

    _produce(kafka_bootstrap, unique_topics.events, second)
    edge = FoldEdge.default()
    decoded: list[bytes] = []

    def counting_decode(value: bytes) -> Any:
        decoded.append(value)
        return edge.decode_state(value)

    stats = FoldService(config, edge=edge_with(decode_state=counting_decode)).run()

    assert stats.restored_runs == len(before)
    # Only the runs the second half touched were decoded, each once, from its exact bytes.
    assert len(decoded) == len(touched)
    assert set(decoded) == {before[key] for key in touched}
    assert stats.balanced()
    assert mismatches(read_output(kafka_bootstrap, unique_topics), manifest) == []
    after = _stored_runs(kafka_bootstrap, unique_topics)
    # A run not touched again is not written again: its record is the first one's.
    assert all(after[key] == value for key, value in before.items() if key not in touched)
    assert total_records(manifest) == len(first) + len(second)


def test_a_damaged_state_stops_the_service_when_its_run_is_touched(
    kafka_bootstrap: str, unique_topics: TopicNames
) -> None:
    first, second, _ = _halves(60, seed=82)
    _produce(kafka_bootstrap, unique_topics.events, first)
    config = _config(kafka_bootstrap, unique_topics, "lazy-damaged")
    FoldService(config).run()
    before = _stored_runs(kafka_bootstrap, unique_topics)
    victim = next(key for key, _ in second if key in before)
    # Same header and run_id (so kept packed, not decoded at assignment); body cut short.
    damaged = before[victim][:120]
    _produce(kafka_bootstrap, unique_topics.changelog, [(victim, damaged)])
    with pytest.raises(RunfoldError) as expected:
        FoldEdge.default().decode_state(damaged)
    _produce(kafka_bootstrap, unique_topics.events, second)

    with pytest.raises(RunfoldError) as stopped:
        FoldService(config).run()

    assert type(stopped.value) is type(expected.value)
    assert str(stopped.value) == str(expected.value)
    # Nothing after the last good commit: the damaged state is still the latest.
    assert _stored_runs(kafka_bootstrap, unique_topics)[victim] == damaged


def test_states_of_another_shape_are_decoded_at_assignment_as_before(
    kafka_bootstrap: str, unique_topics: TopicNames
) -> None:
    first, second, _ = _halves(40, seed=83)
    _produce(kafka_bootstrap, unique_topics.events, first)
    config = _config(kafka_bootstrap, unique_topics, "lazy-shape")
    FoldService(config).run()
    before = _stored_runs(kafka_bootstrap, unique_topics)
    # A run's state stored under another key too: decoded at assignment, and that key
    # stays off the fast lane (its run_id is not the key).
    some_key, some_state = next(iter(before.items()))
    stranger = b"00000000-0000-4000-8000-000000000001"
    _produce(kafka_bootstrap, unique_topics.changelog, [(stranger, some_state)])
    edge = FoldEdge.default()
    decoded: list[bytes] = []

    def counting_decode(value: bytes) -> Any:
        decoded.append(value)
        return edge.decode_state(value)

    service = FoldService(config, edge=edge_with(decode_state=counting_decode))
    # No new events: nothing is touched, and only the odd state is decoded.
    stats = service.run()
    assert stats.restored_runs == len(before) + 1
    assert decoded == [some_state]

    # Garbage under a key (no RunState header) stops the assignment, as it always did.
    _produce(kafka_bootstrap, unique_topics.changelog, [(b"some-run", b"\xc3\x01garbage-state")])
    _produce(kafka_bootstrap, unique_topics.events, second)
    committed = committed_total(kafka_bootstrap, unique_topics, "lazy-shape")
    with pytest.raises(RunfoldError, match="unknown schema fingerprint"):
        FoldService(config).run()
    assert committed_total(kafka_bootstrap, unique_topics, "lazy-shape") == committed == len(first)
    assert _stored_runs(kafka_bootstrap, unique_topics)[some_key] == some_state


def test_a_restored_buffer_is_declared_when_its_partition_moves_on(
    kafka_bootstrap: str, unique_topics: TopicNames
) -> None:
    # A run waits for seq 2 with seq 3 buffered when the service stops. Its agent sends
    # nothing more; another run of the partition does, past the buffer's bound: the next
    # instance declares the gap from the restored buffer (no record of the run's own).
    waiting, other = uuid.uuid4(), uuid.uuid4()
    t0 = time.time_ns() - 600 * 10**9
    step = 10**9

    def records(*events: Event) -> _Records:
        return [(str(e.run_id).encode(), encode_event(e)) for e in events]

    first = records(
        make_event(1, "graph_started", run_id=waiting, at=t0),
        make_event(3, run_id=waiting, at=t0 + step),
        make_event(1, "graph_started", run_id=other, at=t0),
    )
    _produce(kafka_bootstrap, unique_topics.events, first, partition=0)
    config = _config(kafka_bootstrap, unique_topics, "lazy-buffer")
    FoldService(config).run()
    held = _stored_runs(kafka_bootstrap, unique_topics)[str(waiting).encode()]
    assert FoldEdge.default().decode_state(held).pending_events  # restored with its buffer

    later = t0 + step + MAX_REORDER_DELAY_NS + step
    _produce(
        kafka_bootstrap,
        unique_topics.events,
        records(make_event(2, run_id=other, at=later)),
        partition=0,
    )
    stats = FoldService(config).run()

    assert stats.consumed == 1
    folded = read_output(kafka_bootstrap, unique_topics)
    gaps = [v for v in folded.violations if v.kind == "gap"]
    assert [(v.run_id, v.first_seq, v.last_seq) for v in gaps] == [(waiting, 2, 2)]
    state = folded.changelog[str(waiting)]
    assert state.last_seq == 3 and not state.pending_events
