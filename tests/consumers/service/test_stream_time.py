"""The service holds reorder buffers to their bound against the partition's stream time.

A run whose lost event is followed by nothing of its own (its ``graph_completed``
buffered behind seq n-1) is declared and completed once other runs of the partition
move the stream ``max_delay_ns`` past it; other partitions' clocks do not count.
"""

from __future__ import annotations

import uuid

import pytest
from fold_events import MS, T0, make_event
from service_fixtures import OfflineService

from consumers.service import FoldEdge
from consumers.state import FoldConfig
from schemas import RunStatus, ViolationKind

pytestmark = pytest.mark.unit

DELAY = 1_000 * MS


def _service() -> OfflineService:
    return OfflineService(FoldEdge(FoldConfig(max_delay_ns=DELAY)))


def test_a_lost_second_to_last_event_is_declared_when_the_partition_moves_on() -> None:
    lost, other, elsewhere = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    offline = _service()
    service = offline.service
    offline.fold_batch(
        [
            (0, make_event(1, "graph_started", run_id=lost, at=T0)),
            (0, make_event(3, "graph_completed", run_id=lost, at=T0 + 3 * MS)),  # seq 2 never comes
            (0, make_event(1, "graph_started", run_id=other, at=T0 + 10 * MS)),
            # Another partition far ahead: not this partition's clock.
            (1, make_event(1, "graph_started", run_id=elsewhere, at=T0 + 10 * DELAY)),
        ]
    )
    service._expire_buffers()
    state = service._store.runs[0][str(lost).encode()]
    assert state.status is RunStatus.RUNNING and state.pending_events

    offline.fold(make_event(2, "tool_called", run_id=other, at=T0 + 3 * MS + DELAY + 1))
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
    offline.fold(make_event(1, "graph_started", run_id=run, at=T0 + DELAY))
    service._expire_buffers()
    assert service._store.stream_time[0] == T0 + DELAY
    service._store.clear()
    assert service._store.stream_time == {}
