"""A changed run writes two records in one commit, and restore reads the changelog.

Offline (no broker; :class:`service_fixtures.OfflineService`): every changed run's whole
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
from fold_events import MS, T0, make_event
from service_fixtures import OfflineService

from consumers.service import FoldEdge
from consumers.service import store as store_module
from consumers.service.restore import RestoredPartition
from consumers.state import RunState
from consumers.state_bytes import pack_stored

pytestmark = pytest.mark.unit


def _written(offline: OfflineService, topic: str) -> dict[bytes, tuple[int, bytes | None]]:
    return {kw["key"]: (kw["partition"], kw["value"]) for kw in offline.records(topic)}


def test_each_changed_run_writes_its_state_and_its_summary_before_the_commit() -> None:
    offline = OfflineService()
    service = offline.service
    a, b = uuid.uuid4(), uuid.uuid4()
    offline.fold_batch(
        [
            (0, make_event(1, "graph_started", run_id=a)),
            (0, make_event(2, run_id=a)),
            (2, make_event(1, "graph_started", run_id=b)),
            (2, make_event(3, run_id=b)),  # seq 2 not yet: buffered
        ]
    )
    offline.commit()

    edge = service.edge
    changelog, runs = _written(offline, "changelog"), _written(offline, "runs")
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
    order = [name for name, _ in offline.producer.sent]
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
            state, make_event(seq, "graph_started" if seq == 1 else "tool_called", run_id=run)
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
    service = OfflineService().service
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
    offline = OfflineService()
    service = offline.service
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
    offline.fold(make_event(5, run_id=old_b))
    offline.commit()
    changelog, runs = _written(offline, "changelog"), _written(offline, "runs")
    assert set(changelog) == {str(old_a).encode(), str(old_b).encode()}
    assert edge.decode_state(changelog[str(old_a).encode()][1] or b"") == state_a
    assert edge.decode_state(changelog[str(old_b).encode()][1] or b"").last_seq == 5
    assert set(runs) == {str(old_b).encode()}  # a's old agent-runs record stays as it is
    assert len(offline.records("changelog")) == 2
    # Copied once: the next commit has nothing more to copy.
    assert list(service._store.take_copies()) == []


def test_an_untouched_migrated_run_is_copied_as_the_bytes_read() -> None:
    """A packed restored run not decoded since is copied byte for byte."""
    service = OfflineService().service
    run = uuid.uuid4()
    key = str(run).encode()
    value = FoldEdge.default().encode_state(_folded_state(run, 2))
    store = service._store
    store.runs[0] = {}
    store._stored[0] = {key: pack_stored(key, value)}
    store._copies[0] = {key}
    assert list(store.take_copies()) == [(0, key, value)]
