"""The service's run lifecycle and bounds, offline (no broker): markers after the grace,
tombstones after the retention, restore of marker records, and the bounds' behaviour."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fold_events import T0, make_event
from service_fixtures import OfflineService

from consumers.lifecycle import Marker
from consumers.service import FoldService, ServiceConfig
from consumers.service import store as store_module
from consumers.service.restore import RestoredPartition
from consumers.state_bytes import MARKER_HEADER, pack_stored, read_marker, write_marker
from schemas import RunStatus, ViolationKind
from schemas.errors import ConfigError

pytestmark = pytest.mark.unit

S = 10**9
GRACE_S = 300.0
RETENTION_S = 3600.0


def _feed(**options: Any) -> OfflineService:
    """An offline service with this module's grace and retention, unless told others."""
    lifecycle = {"finished_grace_s": GRACE_S, "finished_retention_s": RETENTION_S}
    return OfflineService(**{**lifecycle, **options})


def _finish(feed: OfflineService, run: uuid.UUID, at: int) -> None:
    feed.fold(
        make_event(1, "graph_started", run_id=run, at=at),
        make_event(2, "tool_called", run_id=run, at=at + 1),
        make_event(3, "graph_completed", run_id=run, at=at + 2),
    )


def test_a_finished_run_becomes_a_marker_record_after_the_grace() -> None:
    feed, done, other = _feed(), uuid.uuid4(), uuid.uuid4()
    key = str(done).encode()
    _finish(feed, done, T0)
    records = feed.commit()
    assert [r[1] for r in records] == [key]
    assert not records[0][2].startswith(MARKER_HEADER)  # whole within the grace
    feed.fold(make_event(1, "graph_started", run_id=other, at=T0 + 2 + int(GRACE_S * S)))
    records = feed.commit()
    assert feed.service._store.marker(0, done) is None  # exactly the grace: still whole
    feed.fold(make_event(2, "tool_called", run_id=other, at=T0 + 3 + int(GRACE_S * S)))
    records = feed.commit()
    markers = [(k, v) for _, k, v in records if k == key]
    assert len(markers) == 1 and markers[0][1] is not None
    run_id, marker = read_marker(markers[0][1])
    assert run_id == done and (marker.last_seq, marker.status) == (3, RunStatus.COMPLETED)
    assert marker.finished_at == T0 + 2 and marker.digest != 0
    store = feed.service._store
    assert key not in store.runs[0] and store.marker(0, done) == marker
    assert feed.service.stats.markers_made == 1 and feed.service.gauges["markers"] == 1


def test_events_of_a_marked_run_are_judged_by_the_marker_rule() -> None:
    feed, done, other = _feed(), uuid.uuid4(), uuid.uuid4()
    _finish(feed, done, T0)
    feed.fold(make_event(1, "graph_started", run_id=other, at=T0 + 10 * int(GRACE_S * S)))
    feed.commit()
    feed.fold(
        make_event(4, "tool_called", run_id=done, at=T0 + 3),  # after the end
        make_event(3, "graph_completed", run_id=done, at=T0 + 2),  # the same last event again
        make_event(3, "graph_failed", run_id=done, at=T0 + 2, error="x"),  # another at its seq
    )
    stats = feed.service._txn_stats
    assert feed.violation_kinds(done) == [ViolationKind.AFTER_TERMINAL, ViolationKind.CONFLICT]
    assert (stats.duplicate, stats.violation, stats.marker_events) == (1, 2, 3)
    assert stats.balanced(0)
    assert str(done).encode() not in feed.service._store.runs[0]  # never a new run
    assert feed.commit() == []  # nothing to write for it


def test_after_the_retention_a_tombstone_and_old_events_are_forgotten_run() -> None:
    feed, done, other = _feed(), uuid.uuid4(), uuid.uuid4()
    _finish(feed, done, T0)
    feed.fold(make_event(1, "graph_started", run_id=other, at=T0 + 2 * int(GRACE_S * S)))
    feed.commit()
    feed.fold(make_event(2, "tool_called", run_id=other, at=T0 + 3 + int(RETENTION_S * S)))
    records = feed.commit()
    assert (0, str(done).encode(), None) in records
    assert feed.service._store.marker(0, done) is None
    assert feed.service.stats.markers_forgotten == 1
    feed.fold(make_event(3, "graph_completed", run_id=done, at=T0 + 2))
    assert feed.violation_kinds(done) == [ViolationKind.FORGOTTEN_RUN]
    assert feed.service._txn_stats.forgotten_run_events == 1
    assert str(done).encode() not in feed.service._store.runs[0]


def test_markers_over_the_bound_are_shed_oldest_first_with_a_tombstone() -> None:
    feed = _feed(max_markers=2)
    runs = [uuid.uuid4() for _ in range(3)]
    for n, run in enumerate(runs):
        _finish(feed, run, T0 + n * 10)
    feed.fold(make_event(1, "graph_started", run_id=uuid.uuid4(), at=T0 + 2 * int(GRACE_S * S)))
    records = feed.commit()
    tombstones = [key for _, key, value in records if value is None]
    assert tombstones == [str(runs[0]).encode()]
    assert feed.service.stats.markers_shed == 1 and feed.service._store.marker_count() == 2


def test_runs_tombstones_also_deletes_the_agent_runs_record() -> None:
    feed = _feed(runs_tombstones=True)
    done = uuid.uuid4()
    _finish(feed, done, T0)
    feed.fold(make_event(1, "graph_started", run_id=uuid.uuid4(), at=T0 + 2 * int(RETENTION_S * S)))
    feed.commit()
    deleted = [
        topic
        for topic in ("changelog", "runs")
        for kw in feed.records(topic, done)
        if kw["value"] is None
    ]
    assert sorted(deleted) == ["changelog", "runs"]  # the changelog's, and agent-runs' too


def _reading(records: dict[bytes, bytes]) -> Any:
    """A stand-in for ``read_latest_by_key`` over one partition holding ``records``: as it
    does, each record is shown to ``take`` first, and what it does not take is kept."""

    def read(*_: Any, take: Any = None, **__: Any) -> dict[int, RestoredPartition]:
        latest = {key: value for key, value in records.items() if not take(0, key, value)}
        return {0: RestoredPartition(0, latest=latest)}

    return read


def test_restore_rebuilds_markers_and_queues_restored_finished_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feed, done, running = _feed(), uuid.uuid4(), uuid.uuid4()
    _finish(feed, done, T0)
    feed.fold(make_event(1, "graph_started", run_id=running, at=T0))
    states = {key: value for _, key, value in feed.commit() if value is not None}
    marked = uuid.uuid4()
    marker = Marker(7, RunStatus.FAILED, T0 - 5 * S, 99)
    latest = {key: pack_stored(key, value) for key, value in states.items()}
    latest[str(marked).encode()] = write_marker(marked, marker)

    monkeypatch.setattr(store_module, "read_latest_by_key", _reading(latest))
    store = _feed().service._store
    total, empty = store.restore({}, "runs", [0], timeout=1)
    assert (total, empty) == (3, [])
    assert store.marker(0, marked) == marker
    assert str(marked).encode() not in store._stored[0]
    assert store.seed() == 2  # the heads of the two states (the commits and idle turns ask)
    # The finished run restored whole becomes a marker once its partition moves on,
    # without ever being touched.
    assert [key for _, key in store._finishing[0]] == [str(done).encode()]
    # The clock starts at the latest start or end restored: a lower bound of the old one.
    assert store.stream_time[0] == T0 + 2
    store.stream_time[0] = T0 + 2 * int(GRACE_S * S)
    records = store.age(0)
    assert [(k, read_marker(v)[1].last_seq) for _, k, v in records if v] == [
        (str(done).encode(), 3)
    ]


def test_a_marker_under_another_key_fails_the_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    value = write_marker(uuid.uuid4(), Marker(1, RunStatus.FAILED, T0, 1))
    monkeypatch.setattr(
        store_module, "read_latest_by_key", _reading({str(uuid.uuid4()).encode(): value})
    )
    store = OfflineService().service._store
    with pytest.raises(ValueError, match="stored under key"):
        store.restore({}, "runs", [0], timeout=1)


def test_buffers_over_the_bound_are_flushed_oldest_first_with_a_gap() -> None:
    feed = _feed(max_buffered_events=2)
    old, new = uuid.uuid4(), uuid.uuid4()
    feed.fold(
        make_event(1, "graph_started", run_id=old, at=T0),
        make_event(3, "tool_called", run_id=old, at=T0 + 1),  # waits for seq 2
        make_event(1, "graph_started", run_id=new, at=T0 + 10),
        make_event(3, "tool_called", run_id=new, at=T0 + 11),
        make_event(4, "tool_called", run_id=new, at=T0 + 12),
    )
    feed.commit()
    store = feed.service._store
    assert not store.runs[0][str(old).encode()].pending_events
    assert len(store.runs[0][str(new).encode()].pending_events) == 2
    assert feed.violation_kinds(old) == [ViolationKind.GAP] and feed.violation_kinds(new) == []
    assert feed.service.stats.forced_flushes == 1 and feed.service.stats.balanced(2)
    assert feed.service.gauges["buffered_events"] == 2


def test_idle_runs_over_the_bound_are_paged_out_never_dropped() -> None:
    feed = _feed(max_active_runs=1)
    runs = [uuid.uuid4() for _ in range(3)]
    for n, run in enumerate(runs):
        feed.fold(make_event(1, "graph_started", run_id=run, at=T0 + n))
    feed.commit()  # all three changed in the open transaction: none paged out
    store = feed.service._store
    assert len(store.runs[0]) == 3
    feed.fold(make_event(2, "tool_called", run_id=runs[2], at=T0 + 10))
    feed.commit()
    assert list(store.runs[0]) == [str(runs[2]).encode()]  # two idle ones paged out
    assert set(store._stored[0]) == {str(run).encode() for run in runs[:2]}
    assert feed.service.stats.runs_paged_out == 2
    assert feed.service.gauges["active_runs"] == 3 and feed.service.gauges["decoded_runs"] == 1
    feed.fold(make_event(2, "tool_called", run_id=runs[0], at=T0 + 11))  # thawed, applied in order
    state = store.runs[0][str(runs[0]).encode()]
    assert (state.last_seq, state.events_applied, state.status) == (2, 2, RunStatus.RUNNING)
    assert feed.service._txn_stats.applied == 1


def test_max_run_bytes_shrinks_a_state_before_it_is_written() -> None:
    feed = _feed(max_run_bytes=4096)
    run = uuid.uuid4()
    big = make_event(1, "graph_started", {"inputs": "x" * 20_000}, run_id=run, at=T0)
    feed.fold(big)
    (record,) = feed.commit()
    assert record[2] is not None and len(record[2]) <= 4096


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"finished_grace_s": 0}, "finished_grace_s"),
        ({"finished_grace_s": 10, "finished_retention_s": 5}, "must not be shorter"),
        ({"max_markers": 0}, "max_markers"),
        ({"max_active_runs": -1}, "max_active_runs"),
        ({"max_buffered_events": True}, "max_buffered_events"),
        ({"max_run_bytes": 100}, "max_run_bytes"),
    ],
)
def test_lifecycle_settings_are_validated(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ServiceConfig(kafka={}, **options)


def test_the_lifecycle_in_the_store_is_the_config_in_ns() -> None:
    config = ServiceConfig(kafka={}, finished_grace_s=1.5, finished_retention_s=60)
    assert (config.lifecycle.grace_ns, config.lifecycle.retention_ns) == (1_500_000_000, 60 * S)
    service = FoldService(config)
    assert service._store.lifecycle == config.lifecycle


def test_every_run_past_its_grace_becomes_a_marker_whatever_order_it_was_seen_in() -> None:
    """Runs that finished over hours, seen in one commit (a set, in no order): at the next
    commit every one past its grace is a marker, and only those."""
    feed = _feed(finished_retention_s=30 * 86400)
    runs = [uuid.uuid4() for _ in range(50)]
    hour = 3600 * S
    for n, run in enumerate(runs):
        _finish(feed, run, T0 + n * hour // 10)
    feed.commit()
    last_end = T0 + 49 * hour // 10 + 2
    feed.fold(
        make_event(
            1, "graph_started", run_id=uuid.uuid4(), at=last_end + int(GRACE_S * S) - hour // 10
        )
    )
    feed.commit()
    store = feed.service._store
    whole = {key for key, state in store.runs[0].items() if state.status is RunStatus.COMPLETED}
    assert whole == {str(runs[-1]).encode()}  # within its grace; every other one a marker
    assert store.marker_count() == 49


def test_an_event_stamped_far_ahead_moves_no_partition_clock() -> None:
    # One graph_started stamped in 2262: valid Avro, from a broken or hostile agent clock.
    # Folded as usual, it must not move its partition's clock (wall clock + max_clock_skew):
    # else every buffer of the partition expires, every finished run is forgotten, and
    # every new run's first event looks forgotten_run.
    feed = _feed()
    done, waiting, ahead, new = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    _finish(feed, done, T0)
    feed.fold(
        make_event(1, "graph_started", run_id=waiting, at=T0),
        make_event(3, "tool_called", run_id=waiting, at=T0 + 5),
    )
    feed.commit()
    feed.fold(make_event(1, "graph_started", run_id=ahead, at=2**63 - 1))
    feed.commit()
    store = feed.service._store
    assert store.stream_time[0] == T0 + 5
    assert str(ahead).encode() in store.runs[0]  # folded all the same
    assert str(done).encode() in store.runs[0]  # still whole: no grace has passed
    assert store.runs[0][str(waiting).encode()].pending_events  # still waiting for seq 2
    feed.fold(make_event(1, "graph_started", run_id=new, at=T0 + 10))
    assert feed.violation_kinds(new) == []
    assert str(new).encode() in store.runs[0]
    assert feed.service.stats.markers_forgotten == 0


def test_a_finished_run_seen_again_within_its_grace_becomes_one_marker() -> None:
    # A late duplicate within the grace queues the finished run again: it must still make
    # one marker record (found by two consumers sharing a group: the service crashed on it).
    feed, done, other = _feed(), uuid.uuid4(), uuid.uuid4()
    _finish(feed, done, T0)
    feed.commit()
    feed.fold(make_event(3, "graph_completed", run_id=done, at=T0 + 2))  # a redelivery: a duplicate
    feed.commit()
    feed.fold(make_event(1, "graph_started", run_id=other, at=T0 + 3 + int(GRACE_S * S)))
    records = feed.commit()
    key = str(done).encode()
    assert [value is not None for _, k, value in records if k == key] == [True]
    assert feed.service.stats.markers_made == 1
