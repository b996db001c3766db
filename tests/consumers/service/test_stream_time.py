"""The service holds reorder buffers to their bound against the partition's stream time.

A run whose lost event is followed by nothing of its own (its ``graph_completed``
buffered behind seq n-1) is declared and completed once other runs of the partition
move the stream ``max_delay_ns`` past it; other partitions' clocks do not count.
"""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Message
from service_fixtures import RecordingProducer, offline_service

from consumers.service import FoldEdge, FoldService
from consumers.state import FoldConfig
from schemas import EVENT_KINDS, Event, RunStatus, Timestamp, ViolationKind
from schemas.codec import decode_violation, encode_event

pytestmark = pytest.mark.unit

T0 = Timestamp.parse("2024-05-01T12:00:00Z")
MS = 1_000_000
DELAY = 1_000 * MS


def _event(run: uuid.UUID, seq: int, kind: str, at: int) -> Event:
    fields = {"graph_completed": {"iterations": 1, "duration_ms": 2}}.get(kind, {})
    if kind == "tool_called":
        fields = {"tool_name": "search"}
    return Event(
        run_id=run, seq=seq, timestamp=Timestamp(at), kind=EVENT_KINDS[kind](**fields), payload={}
    )


def _service() -> tuple[FoldService, RecordingProducer]:
    return offline_service(FoldEdge(FoldConfig(max_delay_ns=DELAY)))


def _messages(events: list[tuple[int, Event]], first: int = 0) -> list[Message]:
    """Consumed messages of ``events`` at offsets from ``first`` on."""
    return [
        Message(
            topic="ev",
            partition=partition,
            offset=offset,
            key=str(event.run_id).encode(),
            value=encode_event(event),
        )
        for offset, (partition, event) in enumerate(events, first)
    ]


def test_a_lost_second_to_last_event_is_declared_when_the_partition_moves_on() -> None:
    lost, other, elsewhere = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    service, producer = _service()
    service._fold_batch(
        _messages(
            [
                (0, _event(lost, 1, "graph_started", T0)),
                (0, _event(lost, 3, "graph_completed", T0 + 3 * MS)),  # seq 2 never comes
                (0, _event(other, 1, "graph_started", T0 + 10 * MS)),
                # Another partition far ahead: not this partition's clock.
                (1, _event(elsewhere, 1, "graph_started", T0 + 10 * DELAY)),
            ]
        )
    )
    service._expire_buffers()
    state = service._store.runs[0][str(lost).encode()]
    assert state.status is RunStatus.RUNNING and state.pending_events

    service._fold_batch(
        _messages([(0, _event(other, 2, "tool_called", T0 + 3 * MS + DELAY + 1))], first=4)
    )
    service._expire_buffers()
    assert state.status is RunStatus.COMPLETED and state.missing == [(2, 2)]
    assert not state.pending_events
    gaps = [
        decode_violation(kwargs["value"])
        for topic, kwargs in producer.sent
        if topic == "viol" and kwargs["key"] == str(lost).encode()
    ]
    assert [(v.kind, v.first_seq, v.last_seq) for v in gaps] == [(ViolationKind.GAP, 2, 2)]
    assert str(lost).encode() in service._dirty[0]  # written with the transaction
    stats = service._txn_stats
    assert stats.released == 1 and stats.balanced(0)


def test_a_state_cleared_on_revoke_forgets_its_clock() -> None:
    run = uuid.uuid4()
    service, _ = _service()
    service._fold_batch(_messages([(0, _event(run, 1, "graph_started", T0 + DELAY))]))
    service._expire_buffers()
    assert service._store.stream_time[0] == T0 + DELAY
    service._store.clear()
    assert service._store.stream_time == {}
