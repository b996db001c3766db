"""A changed run writes two records in one commit, and restore reads the changelog.

Offline (no broker; :func:`service_fixtures.offline_service`): every changed run's whole
state goes to the changelog and its summary to ``agent-runs``, same key, same partition
as its events, before the transaction commits; what the store restores is the
changelog's; a changelog partition that never had a record is restored once from the
whole states an older deployment left in ``agent-runs`` (summaries there are skipped),
and the next commit copies those runs to the changelog. The real-broker side is in
``test_changelog_broker.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from confluent_kafka import Message
from service_fixtures import RecordingProducer, offline_service

from consumers.service import FoldEdge, FoldService
from consumers.service import store as store_module
from consumers.service.restore import RestoredPartition
from consumers.state import RunState
from consumers.state_bytes import pack_stored
from schemas import EVENT_KINDS, Event, Timestamp
from schemas.codec import encode_event

pytestmark = pytest.mark.unit

T0 = Timestamp.parse("2024-05-01T12:00:00Z")
MS = 1_000_000


class _Committing(RecordingProducer):
    """The recording producer, with the calls of a commit recorded in order too."""

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self.sent.append(("<offsets>", {"offsets": offsets}))

    def commit_transaction(self, timeout: float) -> None:
        self.sent.append(("<commit>", {}))


class _Consumer:
    def consumer_group_metadata(self) -> object:
        return object()


def _service() -> tuple[FoldService, _Committing]:
    service, _ = offline_service()
    producer = _Committing()
    service._producer = producer  # type: ignore[assignment]
    service._consumer = _Consumer()  # type: ignore[assignment]
    return service, producer


def _event(run: uuid.UUID, seq: int, kind: str = "tool_called") -> Event:
    fields: dict[str, Any] = {"tool_name": "search"} if kind == "tool_called" else {}
    return Event(
        run_id=run,
        seq=seq,
        timestamp=Timestamp(T0 + seq * MS),
        kind=EVENT_KINDS[kind](**fields),
        payload={},
    )


def _messages(events: list[tuple[int, Event]], first: int = 0) -> list[Message]:
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


def _written(producer: RecordingProducer, topic: str) -> dict[bytes, tuple[int, bytes | None]]:
    return {
        kw["key"]: (kw["partition"], kw["value"]) for name, kw in producer.sent if name == topic
    }


def test_each_changed_run_writes_its_state_and_its_summary_before_the_commit() -> None:
    service, producer = _service()
    a, b = uuid.uuid4(), uuid.uuid4()
    service._fold_batch(
        _messages(
            [
                (0, _event(a, 1, "graph_started")),
                (0, _event(a, 2)),
                (2, _event(b, 1, "graph_started")),
                (2, _event(b, 3)),  # seq 2 not yet: buffered
            ]
        )
    )
    service._commit()

    edge = service.edge
    changelog, runs = _written(producer, "changelog"), _written(producer, "runs")
    assert set(changelog) == set(runs) == {str(a).encode(), str(b).encode()}
    for key, (partition, value) in changelog.items():
        assert runs[key][0] == partition == (0 if key == str(a).encode() else 2)
        state = edge.decode_state(value or b"")
        assert state == service._store.runs[partition][key]  # the whole state
        view = edge.read_run(runs[key][1] or b"")
        assert view.state.run == state.run and view.state.counters() == state.counters()
        assert view.pending == len(state.pending_events)
    assert edge.read_run(runs[str(b).encode()][1] or b"").pending == 1
    assert edge.read_run(runs[str(b).encode()][1] or b"").oldest_pending_at == T0 + 3 * MS
    # Both records of every run are produced before the offsets and the commit.
    order = [name for name, _ in producer.sent]
    assert order[-2:] == ["<offsets>", "<commit>"]
    assert order.count("changelog") == order.count("runs") == 2


def _fake_reads(
    monkeypatch: pytest.MonkeyPatch, topics: Mapping[str, Mapping[int, list[tuple[bytes, bytes]]]]
) -> list[str]:
    """``read_latest_by_key`` over in-memory topics (the records of each partition, in
    order); returns the topics read, in order."""
    read: list[str] = []

    def fake(
        kafka: Mapping[str, object],
        topic: str,
        partitions: list[int],
        *,
        timeout: float = 60.0,
        pack: Any = None,
        **_: Any,
    ) -> dict[int, RestoredPartition]:
        read.append(topic)
        out = {}
        for p in partitions:
            records = topics.get(topic, {}).get(p, [])
            latest = {k: (pack(k, v) if pack else v) for k, v in records}
            out[p] = RestoredPartition(partition=p, latest=latest, records=len(records))
        return out

    monkeypatch.setattr(store_module, "read_latest_by_key", fake)
    return read


def _folded_state(run: uuid.UUID, last: int) -> RunState:
    edge = FoldEdge.default()
    state = None
    for seq in range(1, last + 1):
        state, _ = edge.apply(
            state, _event(run, seq, "graph_started" if seq == 1 else "tool_called")
        )
    assert state is not None
    return state


def test_restore_reads_the_changelog_not_agent_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    run = uuid.uuid4()
    key = str(run).encode()
    edge = FoldEdge.default()
    newer, older = _folded_state(run, 3), _folded_state(run, 2)
    changelog_value, summary = edge.encode_records(newer)
    read = _fake_reads(
        monkeypatch,
        {
            "changelog": {1: [(key, changelog_value)]},
            "runs": {1: [(key, edge.encode_state(older))]},  # would be a step back
        },
    )
    service, _ = _service()
    total, empty = service._store.restore({}, "changelog", [1], 10, runs_topic="runs")
    assert (total, empty) == (1, [])
    assert read == ["changelog"]  # agent-runs is not read when the changelog has records
    assert service._store.get(1, key) == newer
    assert list(service._store.take_copies()) == []


def test_an_unwritten_changelog_partition_is_restored_from_agent_runs_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Moving over: partition 0's changelog never had a record; agent-runs holds old
    whole states there. They are restored, and the next commit copies them to the
    changelog; partition 1 had changelog records. Partition 2's agent-runs holds a
    summary next to an old state: moved over before and its changelog lost since (the
    old state is stale): nothing restored, left to the rebuild from the events."""
    edge = FoldEdge.default()
    old_a, old_b, summarized = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    state_a, state_b = _folded_state(old_a, 2), _folded_state(old_b, 4)
    _, summary = edge.encode_records(_folded_state(summarized, 1))
    other = uuid.uuid4()
    read = _fake_reads(
        monkeypatch,
        {
            "changelog": {1: [(str(other).encode(), edge.encode_state(_folded_state(other, 1)))]},
            "runs": {
                0: [
                    (str(old_a).encode(), edge.encode_state(state_a)),
                    (str(old_b).encode(), edge.encode_state(state_b)),
                ],
                2: [
                    (str(uuid.uuid4()).encode(), edge.encode_state(state_a)),
                    (str(summarized).encode(), summary),
                ],
            },
        },
    )
    service, producer = _service()
    with caplog.at_level("INFO", logger="runfold.consume"):
        total, empty = service._store.restore({}, "changelog", [0, 1, 2], 10, runs_topic="runs")
    assert read == ["changelog", "runs"]
    assert (total, empty) == (3, [2])
    assert any("[2] has no record but runs[2] holds summaries" in r.message for r in caplog.records)
    assert any(
        "[0] has no record yet" in r.message and " 2 runs " in r.message for r in caplog.records
    )
    assert service._store.get(0, str(old_a).encode()) == state_a
    assert service._store.get(2, str(summarized).encode()) is None

    # Run b gets an event; a does not: both reach the changelog in the next commit.
    service._ensure_txn()
    service._fold_batch(_messages([(0, _event(old_b, 5))]))
    service._commit()
    changelog, runs = _written(producer, "changelog"), _written(producer, "runs")
    assert set(changelog) == {str(old_a).encode(), str(old_b).encode()}
    assert edge.decode_state(changelog[str(old_a).encode()][1] or b"") == state_a
    assert edge.decode_state(changelog[str(old_b).encode()][1] or b"").last_seq == 5
    assert set(runs) == {str(old_b).encode()}  # a's old agent-runs record stays as it is
    assert [name for name, _ in producer.sent].count("changelog") == 2
    # Copied once: the next commit has nothing more to copy.
    assert list(service._store.take_copies()) == []


def test_an_untouched_migrated_run_is_copied_as_the_bytes_read() -> None:
    """A packed restored run not decoded since is copied byte for byte."""
    service, _ = _service()
    run = uuid.uuid4()
    key = str(run).encode()
    value = FoldEdge.default().encode_state(_folded_state(run, 2))
    store = service._store
    store.runs[0] = {}
    store._stored[0] = {key: pack_stored(key, value)}
    store._copies[0] = {key}
    assert list(store.take_copies()) == [(0, key, value)]
