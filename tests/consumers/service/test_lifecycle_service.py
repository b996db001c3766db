"""The service's run lifecycle and bounds, offline (no broker): markers after the grace,
tombstones after the retention, restore of marker records, and the bounds' behaviour."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from confluent_kafka import Message
from service_fixtures import offline_service

from consumers.lifecycle import Marker
from consumers.service import FoldEdge, FoldService, ServiceConfig
from consumers.service import store as store_module
from consumers.service.restore import RestoredPartition
from consumers.state import FoldConfig
from consumers.state_bytes import MARKER_HEADER, pack_stored, read_marker, write_marker
from schemas import EVENT_KINDS, Event, RunStatus, Timestamp, ViolationKind
from schemas.codec import decode_violation, encode_event
from schemas.errors import ConfigError

pytestmark = pytest.mark.unit

T0 = Timestamp.parse("2024-05-01T12:00:00Z")
S = 10**9
GRACE_S = 300.0
RETENTION_S = 3600.0


def _event(run: uuid.UUID, seq: int, kind: str, at: int, **fields: Any) -> Event:
    defaults = {
        "graph_completed": {"iterations": 1, "duration_ms": 2},
        "tool_called": {"tool_name": "search"},
    }
    return Event(
        run_id=run,
        seq=seq,
        timestamp=Timestamp(at),
        kind=EVENT_KINDS[kind](**{**defaults.get(kind, {}), **fields}),
        payload={},
    )


class Feed:
    """Hands events to an offline service as consumed records, offsets counting up."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("finished_grace_s", GRACE_S)
        options.setdefault("finished_retention_s", RETENTION_S)
        self.service, self.producer = offline_service(FoldEdge(FoldConfig()), **options)
        self.offset = 0

    def __call__(self, *events: Event, partition: int = 0) -> None:
        msgs = []
        for event in events:
            msgs.append(
                Message(
                    topic="ev",
                    partition=partition,
                    offset=self.offset,
                    key=str(event.run_id).encode(),
                    value=encode_event(event),
                )
            )
            self.offset += 1
        self.service._fold_batch(msgs)

    def commit(self) -> list[tuple[int, bytes, bytes | None]]:
        """What a commit does to the state, without a broker: expire, bound, and the
        changelog records, as ``(partition, key, value)`` (None: a tombstone)."""
        service = self.service
        service._expire_buffers()
        records = [(r.partition, r.key, r.changelog) for r in service._state_records()]
        service.stats.merge(service._txn_stats)
        service._txn_stats = type(service._txn_stats)()
        service._dirty = {}
        service.gauges = service._store.gauges()
        return records

    def violations(self, run: uuid.UUID) -> list[ViolationKind]:
        return [
            decode_violation(kwargs["value"]).kind
            for topic, kwargs in self.producer.sent
            if topic == "viol" and kwargs["key"] == str(run).encode()
        ]


def _finish(feed: Feed, run: uuid.UUID, at: int) -> None:
    feed(
        _event(run, 1, "graph_started", at),
        _event(run, 2, "tool_called", at + 1),
        _event(run, 3, "graph_completed", at + 2),
    )


def test_a_finished_run_becomes_a_marker_record_after_the_grace() -> None:
    feed, done, other = Feed(), uuid.uuid4(), uuid.uuid4()
    key = str(done).encode()
    _finish(feed, done, T0)
    records = feed.commit()
    assert [r[1] for r in records] == [key]
    assert not records[0][2].startswith(MARKER_HEADER)  # whole within the grace
    feed(_event(other, 1, "graph_started", T0 + 2 + int(GRACE_S * S)))
    records = feed.commit()
    assert feed.service._store.marker(0, done) is None  # exactly the grace: still whole
    feed(_event(other, 2, "tool_called", T0 + 3 + int(GRACE_S * S)))
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
    feed, done, other = Feed(), uuid.uuid4(), uuid.uuid4()
    _finish(feed, done, T0)
    feed(_event(other, 1, "graph_started", T0 + 10 * int(GRACE_S * S)))
    feed.commit()
    feed(
        _event(done, 4, "tool_called", T0 + 3),  # after the end
        _event(done, 3, "graph_completed", T0 + 2),  # the same last event again
        _event(done, 3, "graph_failed", T0 + 2, error="x"),  # another at its seq
    )
    stats = feed.service._txn_stats
    assert feed.violations(done) == [ViolationKind.AFTER_TERMINAL, ViolationKind.CONFLICT]
    assert (stats.duplicate, stats.violation, stats.marker_events) == (1, 2, 3)
    assert stats.balanced(0)
    assert str(done).encode() not in feed.service._store.runs[0]  # never a new run
    assert feed.commit() == []  # nothing to write for it


def test_after_the_retention_a_tombstone_and_old_events_are_forgotten_run() -> None:
    feed, done, other = Feed(), uuid.uuid4(), uuid.uuid4()
    _finish(feed, done, T0)
    feed(_event(other, 1, "graph_started", T0 + 2 * int(GRACE_S * S)))
    feed.commit()
    feed(_event(other, 2, "tool_called", T0 + 3 + int(RETENTION_S * S)))
    records = feed.commit()
    assert (0, str(done).encode(), None) in records
    assert feed.service._store.marker(0, done) is None
    assert feed.service.stats.markers_forgotten == 1
    feed(_event(done, 3, "graph_completed", T0 + 2))
    assert feed.violations(done) == [ViolationKind.FORGOTTEN_RUN]
    assert feed.service._txn_stats.forgotten_run_events == 1
    assert str(done).encode() not in feed.service._store.runs[0]


def test_markers_over_the_bound_are_shed_oldest_first_with_a_tombstone() -> None:
    feed = Feed(max_markers=2)
    runs = [uuid.uuid4() for _ in range(3)]
    for n, run in enumerate(runs):
        _finish(feed, run, T0 + n * 10)
    feed(_event(uuid.uuid4(), 1, "graph_started", T0 + 2 * int(GRACE_S * S)))
    records = feed.commit()
    tombstones = [key for _, key, value in records if value is None]
    assert tombstones == [str(runs[0]).encode()]
    assert feed.service.stats.markers_shed == 1 and feed.service._store.marker_count() == 2


def test_runs_tombstones_also_deletes_the_agent_runs_record() -> None:
    feed = Feed(runs_tombstones=True)
    done = uuid.uuid4()
    _finish(feed, done, T0)
    feed(_event(uuid.uuid4(), 1, "graph_started", T0 + 2 * int(RETENTION_S * S)))
    service = feed.service
    service._eos = False
    service._flush_outputs = lambda: None  # type: ignore[method-assign]
    service._consumer = _NoCommit()  # type: ignore[assignment]
    service._next_offsets = {}
    service._commit()
    deleted = [
        topic
        for topic, kw in feed.producer.sent
        if kw["key"] == str(done).encode() and kw["value"] is None
    ]
    assert sorted(deleted) == ["changelog", "runs"]  # the changelog's, and agent-runs' too


class _NoCommit:
    def commit(self, **_: Any) -> None:
        return None


def test_restore_rebuilds_markers_and_queues_restored_finished_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feed, done, running = Feed(), uuid.uuid4(), uuid.uuid4()
    _finish(feed, done, T0)
    feed(_event(running, 1, "graph_started", T0))
    states = {key: value for _, key, value in feed.commit() if value is not None}
    marked = uuid.uuid4()
    marker = Marker(7, RunStatus.FAILED, T0 - 5 * S, 99)
    latest = {key: pack_stored(key, value) for key, value in states.items()}
    latest[str(marked).encode()] = write_marker(marked, marker)

    def read(*_: Any, **__: Any) -> dict[int, RestoredPartition]:
        return {0: RestoredPartition(0, latest=dict(latest))}

    monkeypatch.setattr(store_module, "read_latest_by_key", read)
    service, _ = offline_service(finished_grace_s=GRACE_S, finished_retention_s=RETENTION_S)
    store = service._store
    total, empty = store.restore({}, "runs", [0], timeout=1)
    assert (total, empty) == (3, [])
    assert store.marker(0, marked) == marker
    assert str(marked).encode() not in store._stored[0]
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
        store_module,
        "read_latest_by_key",
        lambda *_, **__: {0: RestoredPartition(0, latest={str(uuid.uuid4()).encode(): value})},
    )
    service, _ = offline_service()
    with pytest.raises(ValueError, match="stored under key"):
        service._store.restore({}, "runs", [0], timeout=1)


def test_buffers_over_the_bound_are_flushed_oldest_first_with_a_gap() -> None:
    feed = Feed(max_buffered_events=2)
    old, new = uuid.uuid4(), uuid.uuid4()
    feed(
        _event(old, 1, "graph_started", T0),
        _event(old, 3, "tool_called", T0 + 1),  # waits for seq 2
        _event(new, 1, "graph_started", T0 + 10),
        _event(new, 3, "tool_called", T0 + 11),
        _event(new, 4, "tool_called", T0 + 12),
    )
    feed.commit()
    store = feed.service._store
    assert not store.runs[0][str(old).encode()].pending_events
    assert len(store.runs[0][str(new).encode()].pending_events) == 2
    assert feed.violations(old) == [ViolationKind.GAP] and feed.violations(new) == []
    assert feed.service.stats.forced_flushes == 1 and feed.service.stats.balanced(2)
    assert feed.service.gauges["buffered_events"] == 2


def test_idle_runs_over_the_bound_are_paged_out_never_dropped() -> None:
    feed = Feed(max_active_runs=1)
    runs = [uuid.uuid4() for _ in range(3)]
    for n, run in enumerate(runs):
        feed(_event(run, 1, "graph_started", T0 + n))
    feed.commit()  # all three changed in the open transaction: none paged out
    store = feed.service._store
    assert len(store.runs[0]) == 3
    feed(_event(runs[2], 2, "tool_called", T0 + 10))
    feed.commit()
    assert list(store.runs[0]) == [str(runs[2]).encode()]  # two idle ones paged out
    assert set(store._stored[0]) == {str(run).encode() for run in runs[:2]}
    assert feed.service.stats.runs_paged_out == 2
    assert feed.service.gauges["active_runs"] == 3 and feed.service.gauges["decoded_runs"] == 1
    feed(_event(runs[0], 2, "tool_called", T0 + 11))  # thawed, applied in order
    state = store.runs[0][str(runs[0]).encode()]
    assert (state.last_seq, state.events_applied, state.status) == (2, 2, RunStatus.RUNNING)
    assert feed.service._txn_stats.applied == 1


def test_max_run_bytes_shrinks_a_state_before_it_is_written() -> None:
    feed = Feed(max_run_bytes=4096)
    run = uuid.uuid4()
    big = Event(
        run_id=run,
        seq=1,
        timestamp=Timestamp(T0),
        kind=EVENT_KINDS["graph_started"](),
        payload={"inputs": "x" * 20_000},
    )
    feed(big)
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
    feed = Feed(finished_retention_s=30 * 86400)
    runs = [uuid.uuid4() for _ in range(50)]
    hour = 3600 * S
    for n, run in enumerate(runs):
        _finish(feed, run, T0 + n * hour // 10)
    feed.commit()
    last_end = T0 + 49 * hour // 10 + 2
    feed(_event(uuid.uuid4(), 1, "graph_started", last_end + int(GRACE_S * S) - hour // 10))
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
    feed, done, waiting, ahead, new = Feed(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    _finish(feed, done, T0)
    feed(_event(waiting, 1, "graph_started", T0), _event(waiting, 3, "tool_called", T0 + 5))
    feed.commit()
    feed(_event(ahead, 1, "graph_started", 2**63 - 1))
    feed.commit()
    store = feed.service._store
    assert store.stream_time[0] == T0 + 5
    assert str(ahead).encode() in store.runs[0]  # folded all the same
    assert str(done).encode() in store.runs[0]  # still whole: no grace has passed
    assert store.runs[0][str(waiting).encode()].pending_events  # still waiting for seq 2
    feed(_event(new, 1, "graph_started", T0 + 10))
    assert feed.violations(new) == []
    assert str(new).encode() in store.runs[0]
    assert feed.service.stats.markers_forgotten == 0


def test_a_finished_run_seen_again_within_its_grace_becomes_one_marker() -> None:
    # A late duplicate within the grace queues the finished run again: it must still make
    # one marker record (found by two consumers sharing a group: the service crashed on it).
    feed, done, other = Feed(), uuid.uuid4(), uuid.uuid4()
    _finish(feed, done, T0)
    feed.commit()
    feed(_event(done, 3, "graph_completed", T0 + 2))  # a redelivery: a duplicate
    feed.commit()
    feed(_event(other, 1, "graph_started", T0 + 3 + int(GRACE_S * S)))
    records = feed.commit()
    key = str(done).encode()
    assert [value is not None for _, k, value in records if k == key] == [True]
    assert feed.service.stats.markers_made == 1
