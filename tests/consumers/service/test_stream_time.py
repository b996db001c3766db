"""The service holds reorder buffers to their bound against the partition's stream time.

A run whose lost event is followed by nothing of its own (its ``graph_completed``
buffered behind seq n-1) is declared and completed once other runs of the partition
move the stream ``max_delay_ns`` past it; other partitions' clocks do not count.
"""

from __future__ import annotations

import uuid

import pytest
from service_fixtures import OfflineService

from consumers.service import FoldEdge
from consumers.state import FoldConfig
from schemas import EVENT_KINDS, Event, RunStatus, Timestamp, ViolationKind

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


def _service() -> OfflineService:
    return OfflineService(FoldEdge(FoldConfig(max_delay_ns=DELAY)))


def test_a_lost_second_to_last_event_is_declared_when_the_partition_moves_on() -> None:
    lost, other, elsewhere = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    offline = _service()
    service = offline.service
    offline.fold_batch(
        [
            (0, _event(lost, 1, "graph_started", T0)),
            (0, _event(lost, 3, "graph_completed", T0 + 3 * MS)),  # seq 2 never comes
            (0, _event(other, 1, "graph_started", T0 + 10 * MS)),
            # Another partition far ahead: not this partition's clock.
            (1, _event(elsewhere, 1, "graph_started", T0 + 10 * DELAY)),
        ]
    )
    service._expire_buffers()
    state = service._store.runs[0][str(lost).encode()]
    assert state.status is RunStatus.RUNNING and state.pending_events

    offline.fold(_event(other, 2, "tool_called", T0 + 3 * MS + DELAY + 1))
    service._expire_buffers()
    assert state.status is RunStatus.COMPLETED and state.missing == [(2, 2)]
    assert not state.pending_events
    gaps = offline.violations(lost)
    assert [(v.kind, v.first_seq, v.last_seq) for v in gaps] == [(ViolationKind.GAP, 2, 2)]
    assert str(lost).encode() in service._dirty[0]  # written with the transaction
    stats = service._txn_stats
    assert stats.released == 1 and stats.balanced(0)


def test_a_state_cleared_on_revoke_forgets_its_clock() -> None:
    run = uuid.uuid4()
    offline = _service()
    service = offline.service
    offline.fold(_event(run, 1, "graph_started", T0 + DELAY))
    service._expire_buffers()
    assert service._store.stream_time[0] == T0 + DELAY
    service._store.clear()
    assert service._store.stream_time == {}
