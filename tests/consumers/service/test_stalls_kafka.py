"""Stalled runs through a real broker: an idle service flags a silent run (stall_after 1 s),
writes stalled_since and the violation in a committed transaction; a later event clears it."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer
from fold_events import make_event
from service_fixtures import read_output

from clients.settings import TopicNames
from consumers.service import FoldService, ServiceConfig
from producers.kafka import DEFAULT_PRODUCER_CONFIG
from schemas import Event, RunStatus, ViolationKind
from schemas.codec import encode_event

pytestmark = pytest.mark.integration


def _send(bootstrap: str, topic: str, events: list[Event]) -> None:
    producer = Producer({**DEFAULT_PRODUCER_CONFIG, "bootstrap.servers": bootstrap})
    for event in events:
        producer.produce(topic, encode_event(event), key=str(event.run_id).encode())
    assert producer.flush(30) == 0


def _fold(bootstrap: str, topics: TopicNames, group: str, stall_after_s: float) -> FoldService:
    config = ServiceConfig.on_topics(
        {"bootstrap.servers": bootstrap},
        topics,
        group=group,
        until_idle=3.0,
        stall_after_s=stall_after_s,
        consumer_overrides={"log_level": 2},
        producer_overrides={"log_level": 2},
    )
    service = FoldService(config)
    service.run()
    return service


def test_an_idle_service_flags_a_silent_run_and_its_next_event_clears_it(
    kafka_bootstrap: str, unique_topics: TopicNames
) -> None:
    silent, finished = uuid.uuid4(), uuid.uuid4()
    _send(
        kafka_bootstrap,
        unique_topics.events,
        [
            make_event(1, "graph_started", run_id=silent),
            make_event(2, "tool_called", run_id=silent),
            make_event(1, "graph_started", run_id=finished),
            make_event(2, "graph_completed", run_id=finished),
        ],
    )
    group = f"test-stall-{uuid.uuid4().hex[:8]}"
    service = _fold(kafka_bootstrap, unique_topics, group, stall_after_s=1.0)
    assert service.stats.stalled_flagged == 1
    assert service.stats.balanced(0)

    folded = read_output(kafka_bootstrap, unique_topics)
    stalled = [v for v in folded.violations if v.kind is ViolationKind.STALLED]
    assert [(v.run_id, v.last_seq) for v in stalled] == [(silent, 2)]
    state = folded.runs[str(silent)]
    assert state.stalled_since is not None and state.status is RunStatus.RUNNING
    assert folded.runs[str(finished)].stalled_since is None

    # The agent was only slow: its next event clears the flag (a long stall_after now, so
    # the restarted service does not flag it again while it waits to go idle).
    _send(kafka_bootstrap, unique_topics.events, [make_event(3, "tool_called", run_id=silent)])
    service = _fold(kafka_bootstrap, unique_topics, group, stall_after_s=1800.0)
    assert service.stats.stalled_flagged == 0
    folded = read_output(kafka_bootstrap, unique_topics)
    state = folded.runs[str(silent)]
    assert state.stalled_since is None and state.last_seq == 3
    assert state.violation_counts[ViolationKind.STALLED] == 1
