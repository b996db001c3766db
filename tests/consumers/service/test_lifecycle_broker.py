"""The run lifecycle through a real broker: markers and tombstones in the state topic,
and a second instance that restores them and judges late events by them."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import Producer
from fold_events import T0, make_event

from clients.settings import TopicNames
from consumers.service import FoldService, ServiceConfig
from consumers.service.restore import iter_partition, read_latest_by_key
from consumers.state_bytes import MARKER_HEADER, read_marker
from producers.kafka import DEFAULT_PRODUCER_CONFIG
from schemas import Event, RunStatus, ViolationKind
from schemas.codec import decode_violation, encode_event

pytestmark = pytest.mark.integration

S = 10**9


def _produce(bootstrap: str, topic: str, events: list[Event]) -> None:
    """All on partition 0: one partition's stream time moves them all."""
    producer = Producer({**DEFAULT_PRODUCER_CONFIG, "bootstrap.servers": bootstrap})
    for event in events:
        producer.produce(topic, encode_event(event), key=str(event.run_id).encode(), partition=0)
    assert producer.flush(60) == 0


def _finished(run: uuid.UUID, at: int) -> list[Event]:
    return [
        make_event(1, "graph_started", run_id=run, at=at),
        make_event(2, "tool_called", run_id=run, at=at + 1),
        make_event(3, "graph_completed", run_id=run, at=at + 2),
    ]


def test_markers_and_tombstones_are_written_restored_and_judged_by(
    kafka_bootstrap: str, unique_topics: TopicNames
) -> None:
    config = ServiceConfig.on_topics(
        {"bootstrap.servers": kafka_bootstrap},
        unique_topics,
        group="lifecycle",
        until_idle=2,
        finished_grace_s=1,
        finished_retention_s=10,
    )
    marked, forgotten, filler = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    _produce(
        kafka_bootstrap,
        unique_topics.events,
        [
            *_finished(forgotten, T0),
            *_finished(marked, T0 + 5 * S),
            make_event(1, "graph_started", run_id=filler, at=T0 + 7 * S),  # both past the grace
        ],
    )
    first = FoldService(config).run()
    assert first.markers_made == 2 and first.balanced()
    latest = read_latest_by_key(config.kafka, unique_topics.changelog, [0])[0].latest
    for run in (marked, forgotten):
        value = latest[str(run).encode()]
        assert value.startswith(MARKER_HEADER)
        run_id, marker = read_marker(value)
        assert (run_id, marker.last_seq, marker.status) == (run, 3, RunStatus.COMPLETED)

    # A second instance restores the markers and judges the marked run's events by its
    # marker; its first commit moves the partition's clock past the first run's retention.
    _produce(
        kafka_bootstrap,
        unique_topics.events,
        [
            make_event(2, "tool_called", run_id=filler, at=T0 + 12 * S),
            make_event(4, "tool_called", run_id=marked, at=T0 + 12 * S),  # after its end
            # the same last event
            make_event(3, "graph_completed", run_id=marked, at=T0 + 5 * S + 2),
        ],
    )
    service = FoldService(config)
    worker = threading.Thread(target=service.run)
    worker.start()
    deadline = time.monotonic() + 60
    while service.stats.consumed < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    # Now an event of the first run, stamped long before the clock less the retention.
    _produce(
        kafka_bootstrap,
        unique_topics.events,
        [make_event(3, "graph_completed", run_id=forgotten, at=T0)],
    )
    worker.join(120)
    second = service.stats
    assert second.restored_runs == 3 and second.consumed == 4
    assert (second.marker_events, second.forgotten_run_events) == (2, 1)
    assert second.markers_forgotten == 1 and second.duplicate == 1 and second.balanced()
    latest = read_latest_by_key(config.kafka, unique_topics.changelog, [0])[0].latest
    assert str(forgotten).encode() not in latest  # its tombstone
    assert latest[str(marked).encode()].startswith(MARKER_HEADER)
    # agent-runs keeps both runs' summaries (runs_tombstones is off).
    summaries = read_latest_by_key(config.kafka, unique_topics.runs, [0])[0].latest
    assert {str(forgotten).encode(), str(marked).encode()} <= set(summaries)
    violations = [
        decode_violation(msg.value() or b"")
        for partition in range(3)  # violations are partitioned by their key
        for msg in iter_partition(config.kafka, unique_topics.violations, partition)
    ]
    kinds = {(v.run_id, v.kind) for v in violations}
    assert kinds == {
        (marked, ViolationKind.AFTER_TERMINAL),
        (forgotten, ViolationKind.FORGOTTEN_RUN),
    }


def test_an_idle_service_pages_out_its_waiting_runs_and_folds_their_next_events(
    kafka_bootstrap: str, unique_topics: TopicNames
) -> None:
    """--page-idle-after: with no record coming, the idle service turns its RUNNING runs
    into packed bytes (no commit needed); a later instance folds their next events on top."""
    config = ServiceConfig.on_topics(
        {"bootstrap.servers": kafka_bootstrap},
        unique_topics,
        group="paging",
        until_idle=3,
        page_idle_after_s=0.5,
    )
    runs = [uuid.uuid4() for _ in range(5)]
    _produce(
        kafka_bootstrap,
        unique_topics.events,
        [make_event(1, "graph_started", run_id=run, at=T0 + i * S) for i, run in enumerate(runs)],
    )
    service = FoldService(config)
    stats = service.run()
    assert stats.runs_paged_out == len(runs), stats
    assert service.gauges["decoded_runs"] == 0 and service.gauges["active_runs"] == len(runs)

    _produce(
        kafka_bootstrap,
        unique_topics.events,
        [make_event(2, "tool_called", run_id=run, at=T0 + 10 * S) for run in runs],
    )
    again = FoldService(config).run()
    assert again.consumed == len(runs) and again.balanced()
    latest = read_latest_by_key(config.kafka, unique_topics.changelog, [0])[0].latest
    edge = FoldService(config).edge
    for run in runs:
        state = edge.decode_state(latest[str(run).encode()])
        assert (state.last_seq, state.events_applied, state.tool_calls) == (2, 2, 1)
