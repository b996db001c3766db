"""Pending events (buffered - released) and the age of the oldest, in the metrics and in top.

The service's gauges are read from its partition store after each commit: events held in
the reorder buffers per partition and, in event time, the partition's stream time minus
the oldest pending event's timestamp. ``runfold top`` shows the same from ``agent-runs``.
"""

from __future__ import annotations

from uuid import UUID

import pytest
from fold_events import make_event
from prometheus_client import CollectorRegistry
from service_fixtures import OfflineService

from clients.settings import RunfoldSettings
from consumers import apply_event
from consumers.service.edge import FoldEdge
from runfold.live import FleetReader
from runfold.metrics import instrument_service

pytestmark = pytest.mark.unit

S = 1_000_000_000
T0 = 1_700_000_000 * S
RUN_A = UUID("aaaaaaaa-0000-4000-8000-000000000001")
RUN_B = UUID("bbbbbbbb-0000-4000-8000-000000000002")


def _samples(registry: CollectorRegistry, name: str) -> dict[str, float]:
    return {
        s.labels["partition"]: s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == name
    }


def test_the_gauges_are_the_buffers_after_a_commit() -> None:
    offline = OfflineService(FoldEdge(lane=False))
    service = offline.service
    registry = CollectorRegistry()
    collector = instrument_service(service, registry)
    events = [
        (0, make_event(1, "graph_started", run_id=RUN_A, at=T0)),
        (0, make_event(3, run_id=RUN_A, at=T0 + 1 * S)),  # seq 2 missing: buffered
        (0, make_event(4, run_id=RUN_A, at=T0 + 2 * S)),  # buffered too
        # the partition's clock moves on
        (0, make_event(1, "graph_started", run_id=RUN_B, at=T0 + 5 * S)),
        (1, make_event(1, "graph_started", run_id=RUN_B, at=T0)),  # nothing pending on partition 1
    ]
    offline.fold_batch(events)
    service._expire_buffers()  # what a commit does first: observe, hold to the bound
    collector.note_pending(service._store)
    stats = service._txn_stats
    pending = _samples(registry, "runfold_consumer_pending_events")
    assert pending == {"0": 2.0, "1": 0.0}
    assert sum(pending.values()) == stats.buffered - stats.released == 2
    assert stats.as_dict()["pending"] == 2  # what --stats-json prints
    age = _samples(registry, "runfold_consumer_pending_oldest_age_seconds")
    assert age == {"0": 4.0, "1": 0.0}  # T0+5s (stream time) - T0+1s (oldest pending)
    # seq 2 arrives: nothing pending any more.
    offline.fold(make_event(2, run_id=RUN_A, at=T0 + 6 * S))
    service._expire_buffers()
    collector.note_pending(service._store)
    assert _samples(registry, "runfold_consumer_pending_events") == {"0": 0.0, "1": 0.0}
    assert stats.buffered - stats.released == 0


def test_top_sums_pending_and_ages_the_oldest_in_event_time() -> None:
    reader = FleetReader(RunfoldSettings())
    reader._read_run = FoldEdge(lane=False).read_run
    state_a = None
    for event in (
        make_event(1, "graph_started", run_id=RUN_A, at=T0),
        make_event(3, run_id=RUN_A, at=T0 + 3 * S),
        make_event(5, run_id=RUN_A, at=T0 + S),
    ):
        state_a, _ = apply_event(state_a, event)
    state_b, _ = apply_event(None, make_event(1, "graph_started", run_id=RUN_B, at=T0 + 10 * S))
    edge = FoldEdge(lane=False)
    for state in (state_a, state_b):
        assert state is not None
        summary = edge.encode_records(state)[1]  # what the service writes to agent-runs
        reader._take(reader.topics.runs, str(state.run_id).encode(), summary)
    snapshot = reader.snapshot()
    assert snapshot.pending_events == 2
    assert snapshot.pending_oldest_age_ns == 9 * S  # T0+10s (newest) - T0+1s (oldest pending)
