"""The state store's lifecycle without a broker: a run restored finished and never touched
becomes a marker from its packed bytes, with the digest of its last event (from the packed
head when its digest ring has all its slots, decoded when it is a short run's); a RUNNING run
idle for ``page_idle_ns`` is paged out to packed bytes and thawed whole; a RUNNING run
restored with buffered events is watched from the restore on, so that its gap is declared
when the partition's clock moves on, with no new record of its own."""

from __future__ import annotations

import sys
import uuid
from collections import OrderedDict

import pytest
from fold_events import make_event

from consumers.lifecycle import marker_of
from consumers.service.config import Lifecycle
from consumers.service.edge import FoldEdge
from consumers.service.store import MarkerReader, PartitionStore
from consumers.state import RunState
from consumers.state_bytes import pack_stored, packed_head, write_marker
from schemas import RunStatus

pytestmark = pytest.mark.unit

T0 = 1_780_000_000 * 10**9
MINUTE = 60 * 10**9


def _finished(run: uuid.UUID, last: int) -> RunState:
    """A run of ``last`` events, the last of them graph_completed."""
    edge, state = FoldEdge.default(), None
    for seq in range(1, last + 1):
        kind = {1: "graph_started", last: "graph_completed"}.get(seq, "tool_called")
        state, _ = edge.apply(state, make_event(seq, kind, run_id=run, at=T0 + seq * 10**6))
    assert state is not None and state.is_terminal
    return state


@pytest.mark.parametrize("events", [3, 100])
def test_a_restored_finished_run_never_touched_becomes_its_marker(events: int) -> None:
    edge = FoldEdge.default()
    run = uuid.uuid4()
    key = str(run).encode()
    state = _finished(run, events)
    packed = pack_stored(key, edge.encode_state(state))
    head = packed_head(key, packed)
    assert head is not None
    assert (head.last_digest is None) == (len(state.digests) < 64)  # both forms are seen

    store = PartitionStore(edge, Lifecycle(grace_ns=MINUTE), wall_clock=lambda: T0)
    store.hold_restored(0, {key: packed}, MarkerReader(0))
    assert store.seed() == 1  # its head read: queued for its marker
    store.stream_time[0] = T0 + 2 * MINUTE  # the partition moved past the run's grace
    [(partition, written_key, value)] = store.age(0)
    assert (partition, written_key) == (0, key) and value is not None
    assert store.marker(0, run) == marker_of(state)
    assert store.untouched(0) == []


@pytest.mark.parametrize("violations", [0, 2])
def test_a_run_restored_with_buffered_events_is_watched_and_its_gap_declared(
    violations: int,
) -> None:
    edge = FoldEdge.default()
    waiting, other = uuid.uuid4(), uuid.uuid4()
    state, _ = edge.apply(None, make_event(1, "graph_started", run_id=waiting, at=T0))
    for _ in range(violations):  # recent violations lie between the head and the buffer
        state, _ = edge.apply(state, make_event(1, "tool_called", run_id=waiting, at=T0))
    state, outcomes = edge.apply(state, make_event(3, run_id=waiting, at=T0 + 10**9))
    assert state.pending_events and len(state.recent_violations) == violations
    restored = {
        str(run).encode(): pack_stored(str(run).encode(), edge.encode_state(held))
        for run, held in ((waiting, state), (other, _running(other)))
    }
    heads = {key: packed_head(key, value) for key, value in restored.items()}
    assert [head.buffering for head in heads.values() if head] == [True, False]

    store = PartitionStore(edge, Lifecycle(), wall_clock=lambda: T0 + 60 * MINUTE)
    store.hold_restored(0, restored, MarkerReader(0))
    key = str(waiting).encode()
    assert len(store.untouched(0)) == 2 and store.pending()[0][0] == 0  # heads not read yet
    assert store.seed() == 2
    assert store.untouched(0) == [str(other).encode()]  # only the waiting run decoded
    assert store.pending()[0][0] == 1
    assert list(store.expire(edge.config)) == []  # the partition has not moved on yet

    store.stream_time[0] = T0 + 10**9 + edge.config.max_delay_ns + 1
    [(partition, expired, outcomes)] = store.expire(edge.config)
    assert (partition, expired) == (0, key)
    assert [v.kind for o in outcomes for v in o.violations] == ["gap"]
    assert store.runs[0][key].last_seq == 3 and store.pending()[0][0] == 0


def test_markers_are_read_into_their_table_and_the_last_record_of_a_run_counts() -> None:
    edge = FoldEdge.default()
    runs = [uuid.uuid4() for _ in range(4)]
    keys = [str(run).encode() for run in runs]
    markers = [marker_of(_finished(run, 3)) for run in runs]
    reader = MarkerReader(0)
    # The changelog of one partition: markers as they were made, a run that was known
    # whole again afterwards (its state), a run forgotten (tombstone), one marked again.
    assert reader.take(keys[0], write_marker(runs[0], markers[0]))
    assert reader.take(keys[1], write_marker(runs[1], markers[1]))
    assert reader.take(keys[2], write_marker(runs[2], markers[2]))
    state = edge.encode_state(_finished(runs[1], 3))
    assert not reader.take(keys[1], state)
    assert not reader.take(keys[2], None)
    assert not reader.take(b"not a run id", b"any value")
    assert not reader.take(b"not a run id", None)
    assert reader.take(keys[3], write_marker(runs[3], markers[3]))
    assert reader.take(keys[0], write_marker(runs[0], markers[0]))
    reader.drop_superseded({keys[1]: state, b"not a run id": b"any value"})  # the latest

    assert [key for key, _ in reader.table] == [runs[3].bytes, runs[0].bytes]
    assert reader.table.get(runs[0].bytes) == markers[0]
    assert reader.latest_end == max(marker.finished_at for marker in markers)
    with pytest.raises(ValueError, match="stored under key"):
        reader.take(keys[1], write_marker(runs[0], markers[0]))


def test_restored_heads_are_read_a_batch_a_call() -> None:
    edge = FoldEdge.default()
    runs = [uuid.uuid4() for _ in range(5)]
    stored = {
        str(run).encode(): pack_stored(str(run).encode(), edge.encode_state(_finished(run, 3)))
        for run in runs
    }
    store = PartitionStore(edge, Lifecycle(grace_ns=MINUTE), wall_clock=lambda: T0 + MINUTE)
    store.hold_restored(0, dict(stored), MarkerReader(0))
    assert store.stream_time.get(0) is None  # no marker, no head read: no clock yet
    touched = str(runs[0]).encode()
    assert store.get(0, touched) is not None  # decoded by its run's record meanwhile
    assert [store.seed(limit=2) for _ in range(4)] == [2, 2, 1, 0]
    assert store.stream_time[0] == max(int(_finished(run, 3).finished_at) for run in runs)
    store.stream_time[0] += 2 * MINUTE
    made = {key for _, key, value in store.age(0) if value is not None}
    assert made == set(stored) - {touched}  # each untouched finished run, queued once


def _running(run: uuid.UUID) -> RunState:
    state = _finished(run, 3)
    state.status, state.finished_at = RunStatus.RUNNING, None  # as if still under way
    return state


def test_a_running_run_idle_for_page_idle_is_paged_out_and_thawed_whole() -> None:
    clock = [T0]
    store = PartitionStore(
        FoldEdge.default(), Lifecycle(page_idle_ns=MINUTE), wall_clock=lambda: clock[0]
    )
    idle, busy, done = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    keys = {run: str(run).encode() for run in (idle, busy, done)}
    for run in (idle, busy):
        store.put(0, keys[run], _running(run))
    store.put(0, keys[done], _finished(done, 3))
    store.observe(0, keys.values())
    before = store.runs[0][keys[idle]].copy()

    clock[0] += MINUTE // 2
    assert list(store.bound({})) == []
    assert store.untouched(0) == []  # not idle long enough yet

    clock[0] += MINUTE
    assert list(store.bound({0: {keys[busy]}})) == []
    assert store.untouched(0) == [keys[idle]]  # the busy run and the finished one stay
    assert set(store.runs[0]) == {keys[busy], keys[done]}
    assert store.take_counts().runs_paged_out == 1
    assert store.get(0, keys[idle]) == before  # thawed by its next event, whole


def test_idle_runs_are_paged_a_batch_a_call(monkeypatch: pytest.MonkeyPatch) -> None:
    from consumers.service import lifecycle

    monkeypatch.setattr(lifecycle, "PAGE_IDLE_BATCH", 3)
    clock = [T0]
    store = PartitionStore(
        FoldEdge.default(), Lifecycle(page_idle_ns=MINUTE), wall_clock=lambda: clock[0]
    )
    runs = [uuid.uuid4() for _ in range(7)]
    for run in runs:
        store.put(run.int % 2, str(run).encode(), _running(run))
    for partition in (0, 1):
        store.observe(partition, list(store.runs.get(partition, {})))
    clock[0] += 2 * MINUTE
    assert [store.page_out({}) for _ in range(4)] == [3, 3, 1, 0]
    assert sum(map(len, store.runs.values())) == 0


def test_the_paging_order_of_a_partition_paged_empty_gives_its_table_back() -> None:
    """A burst of runs gone quiet, all paged out: the partition's paging order (an ordered
    dict, which keeps its table when emptied) starts afresh rather than stay sized for
    the burst; the next run under way is watched in it as before."""
    clock = [T0]
    store = PartitionStore(
        FoldEdge.default(), Lifecycle(page_idle_ns=MINUTE), wall_clock=lambda: clock[0]
    )
    empty = sys.getsizeof(OrderedDict())
    runs = [uuid.uuid4() for _ in range(2_000)]
    for run in runs:
        store.put(0, str(run).encode(), _running(run))
    store.observe(0, list(store.runs[0]))
    clock[0] += 2 * MINUTE
    while store.page_out({}):
        pass
    assert store.untouched(0) and not store.runs[0]
    assert sys.getsizeof(store._recent[0]) == empty
    late = uuid.uuid4()
    store.put(0, str(late).encode(), _running(late))
    store.observe(0, [str(late).encode()])
    clock[0] += 2 * MINUTE
    assert store.page_out({}) == 1
