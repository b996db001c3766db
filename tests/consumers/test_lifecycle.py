"""The run lifecycle (consumers.lifecycle): grace, marker rule, retention, the packed table."""

from __future__ import annotations

import os
import random
from uuid import UUID

import pytest
from fold_events import MS, RUN_ID, T0, EventFactory

from consumers import FoldConfig, FoldResult, OutcomeKind
from consumers.digest import content_digest
from consumers.lifecycle import (
    Marker,
    MarkerTable,
    due_marker,
    forgotten,
    judge,
    marker_of,
)
from consumers.state import FoldError
from consumers.state_bytes import MARKER_HEADER, read_marker, write_marker
from schemas import RunStatus, codec
from schemas.avro_binary import Overflow

MINUTE = 60 * 1000 * MS
DAY = 24 * 60 * MINUTE
CONFIG = FoldConfig(marker_grace_ns=5 * MINUTE, marker_retention_ns=7 * DAY)


def _finished(event_factory: EventFactory, run_id: UUID = RUN_ID) -> FoldResult:
    result = FoldResult(CONFIG)
    for seq, kind in enumerate(("graph_started", "tool_called", "graph_completed"), start=1):
        result.apply(event_factory(seq, kind, run_id=run_id))
    return result


def test_a_finished_run_stays_whole_for_the_grace_then_shrinks_to_a_marker(
    event_factory: EventFactory,
) -> None:
    result = _finished(event_factory)
    ended = int(result.runs[RUN_ID].finished_at)  # type: ignore[arg-type]
    assert not due_marker(result.runs[RUN_ID], ended + 5 * MINUTE, CONFIG.marker_grace_ns)
    assert result.age(ended + 5 * MINUTE) == []
    assert RUN_ID in result.runs and len(result.markers) == 0
    result.age(ended + 5 * MINUTE + 1)
    assert RUN_ID not in result.runs
    marker = result.markers.get(RUN_ID.bytes)
    assert marker == Marker(3, RunStatus.COMPLETED, ended, marker.digest if marker else 0)
    assert marker is not None and marker.digest == content_digest(
        event_factory(3, "graph_completed")
    )
    assert result.stats.markers_made == 1


def test_a_running_run_never_becomes_a_marker(event_factory: EventFactory) -> None:
    result = FoldResult(CONFIG)
    result.apply(event_factory(1, "graph_started"))
    result.age(T0 + 30 * DAY)
    assert RUN_ID in result.runs and len(result.markers) == 0


@pytest.mark.parametrize(
    ("seq", "kind", "outcome", "violation"),
    [
        (4, "tool_called", "violation", "after_terminal"),  # seq > last_seq
        (3, "graph_completed", "duplicate", None),  # same content at last_seq
        (3, "graph_failed", "violation", "conflict"),  # other content at last_seq
        (2, "tool_returned", "duplicate", None),  # older: content not kept, unverified
    ],
)
def test_the_marker_rule(
    event_factory: EventFactory, seq: int, kind: str, outcome: str, violation: str | None
) -> None:
    result = _finished(event_factory)
    result.age(T0 + DAY)
    outcomes = result.apply(event_factory(seq, kind))
    assert [o.kind.value for o in outcomes] == [outcome]
    assert [v.kind.value for v in outcomes[0].violations] == ([violation] if violation else [])
    assert RUN_ID not in result.runs  # never applied, never a new run
    assert result.tally.balanced(0)


def test_judge_without_a_digest_calls_the_last_seq_a_duplicate() -> None:
    marker = Marker(7, RunStatus.FAILED, T0, 0)
    assert judge(marker, RUN_ID, 7, 12345).kind is OutcomeKind.DUPLICATE
    assert "FAILED since seq 7" in judge(marker, RUN_ID, 8, 1).violations[0].message


def test_after_the_retention_the_marker_is_forgotten_and_old_events_are_forgotten_run(
    event_factory: EventFactory,
) -> None:
    result = _finished(event_factory)
    ended = T0 + 3 * MS
    result.age(ended + DAY)
    assert result.age(ended + 7 * DAY) == []  # not before its time
    assert result.age(ended + 7 * DAY + 1) == [RUN_ID]
    assert len(result.markers) == 0 and result.stats.markers_forgotten == 1
    late = result.apply(event_factory(3, "graph_completed"))
    assert [(o.kind.value, o.violations[0].kind.value) for o in late] == [
        ("violation", "forgotten_run")
    ]
    assert RUN_ID not in result.runs and result.stats.forgotten_run_events == 1
    # A new run stamped within the retention is a new run, whatever the stream time.
    fresh = UUID(int=99, version=4)
    applied = result.apply(event_factory(1, "graph_started", run_id=fresh, at=ended + 7 * DAY))
    assert applied[0].kind is OutcomeKind.APPLIED and fresh in result.runs


def test_forgotten_is_a_rule_on_time() -> None:
    assert not forgotten(T0, None)  # nothing forgotten yet: nothing judged forgotten
    assert not forgotten(T0, T0)
    assert forgotten(T0 - 1, T0)


def test_a_fold_that_never_aged_judges_no_run_forgotten(event_factory: EventFactory) -> None:
    result = FoldResult(CONFIG)
    result.apply(event_factory(1, "graph_started", at=T0 + 30 * DAY))
    old = UUID(int=7, version=4)
    applied = result.apply(event_factory(1, "graph_started", run_id=old, at=T0))
    assert applied[0].kind is OutcomeKind.APPLIED and old in result.runs


def test_markers_over_the_bound_are_shed_oldest_first(event_factory: EventFactory) -> None:
    result = FoldResult(FoldConfig(max_markers=2, marker_grace_ns=1, marker_retention_ns=DAY))
    ids = [UUID(int=n, version=4) for n in range(1, 4)]
    for run_id in ids:
        for seq, kind in enumerate(("graph_started", "graph_failed"), start=1):
            result.apply(event_factory(seq, kind, run_id=run_id))
        result.age(T0 + MINUTE)
    assert [UUID(bytes=key) for key, _ in result.markers] == ids[1:]
    assert result.stats.markers_shed == 1


def test_a_restored_whole_state_replaces_its_marker(event_factory: EventFactory) -> None:
    result = _finished(event_factory)
    state = result.runs[RUN_ID].copy()
    result.age(T0 + DAY)
    result.add(state)
    assert RUN_ID in result.runs and RUN_ID.bytes not in result.markers
    assert marker_of(state).last_seq == 3


def test_retention_shorter_than_the_grace_is_refused() -> None:
    with pytest.raises(FoldError, match="marker_retention_ns"):
        FoldConfig(marker_grace_ns=10, marker_retention_ns=5)


def test_the_table_against_a_dict_under_churn() -> None:
    """Adds, removes, shedding and forgetting, checked against a plain dict (the oracle),
    across index rebuilds and compactions."""
    rng = random.Random(7)
    table, oracle = MarkerTable(), {}
    order: list[bytes] = []
    for step in range(20_000):
        action = rng.random()
        if action < 0.6 or not order:
            key = os.urandom(16) if rng.random() < 0.9 or not order else rng.choice(order)
            marker = Marker(rng.randrange(2**64), RunStatus.COMPLETED, step, rng.randrange(2**64))
            table.add(key, marker)
            if key in oracle:
                order.remove(key)
            oracle[key] = marker
            order.append(key)
        elif action < 0.75:
            key = rng.choice(order)
            assert table.remove(key)
            del oracle[key]
            order.remove(key)
        elif action < 0.9:
            popped = table.pop_oldest()
            assert popped is not None and popped[0] == order[0]
            del oracle[order.pop(0)]
        else:
            cutoff = step - rng.randrange(1, 500)
            gone = table.forget_before(cutoff)
            expected = []
            while order and oracle[order[0]].finished_at < cutoff:
                expected.append(order.pop(0))
            assert gone == expected
            for key in gone:
                del oracle[key]
        assert len(table) == len(oracle)
    assert dict(table) == oracle
    assert all(table.get(key) == marker for key, marker in oracle.items())
    assert table.get(os.urandom(16)) is None
    assert table.nbytes() < 100 * max(len(table), 1000)


def test_a_key_that_is_not_a_run_id_is_refused() -> None:
    with pytest.raises(ValueError, match="16-byte"):
        MarkerTable().add(b"short", Marker(1, RunStatus.COMPLETED, 0, 0))


@pytest.mark.parametrize(
    "marker",
    [
        Marker(3, RunStatus.COMPLETED, T0, 0x0102030405060708),
        Marker(2**63 - 1, RunStatus.CANCELLED, -(2**62), 0),
        Marker(1, RunStatus.FAILED, 0, 2**64 - 1),
    ],
)
def test_a_marker_record_is_the_bytes_fastavro_writes_and_reads(marker: Marker) -> None:
    value = write_marker(RUN_ID, marker)
    record = {
        "run_id": str(RUN_ID),
        "last_seq": marker.last_seq,
        "status": marker.status.value,
        "finished_at": marker.finished_at,
        "last_digest": marker.digest.to_bytes(8, "little"),
    }
    assert value == codec.encode_record("RunMarker", record)
    assert read_marker(value) == (RUN_ID, marker)
    decoded = codec.decode_record("RunMarker", value)
    assert decoded["last_digest"] == record["last_digest"]


@pytest.mark.parametrize(
    "value",
    [
        b"",
        MARKER_HEADER,
        MARKER_HEADER + b"\x48" + b"x" * 36 + b"\x02\x02\x02" + bytes(8),  # not a UUID
        write_marker(RUN_ID, Marker(3, RunStatus.FAILED, 0, 1)) + b"\x00",  # trailing byte
        write_marker(RUN_ID, Marker(3, RunStatus.FAILED, 0, 1))[:-1],  # truncated
    ],
)
def test_a_damaged_marker_record_is_refused(value: bytes) -> None:
    with pytest.raises(Exception):  # noqa: B017, PT011 - any refusal; the store fails the restore
        read_marker(value)


def test_a_marker_of_a_seq_an_avro_long_cannot_hold_is_refused() -> None:
    with pytest.raises(Overflow):
        write_marker(RUN_ID, Marker(2**63, RunStatus.FAILED, 0, 1))


@pytest.mark.parametrize(
    "kinds",
    [
        ("graph_started", "tool_called", "graph_completed"),
        ("graph_started", "graph_failed"),
        ("tool_called", "tool_called"),  # RUNNING, no graph_started
        ("graph_started",) + ("tool_called",) * 70 + ("graph_completed",),  # window wrapped
    ],
)
def test_the_head_of_a_packed_state_is_its_marker_without_decoding(
    event_factory: EventFactory, kinds: tuple[str, ...]
) -> None:
    from consumers.service.edge import FoldEdge
    from consumers.state_bytes import pack_stored, packed_head

    result = FoldResult(CONFIG)
    for seq, kind in enumerate(kinds, start=1):
        payload = {"inputs": {"q": "x" * 300}} if kind == "graph_started" else None
        result.apply(event_factory(seq, kind, payload))
    state = result.runs[RUN_ID]
    state.outputs = {"answer": 42}
    state.final_state_digest = "sha256:abc"
    key = str(RUN_ID).encode()
    head = packed_head(key, pack_stored(key, FoldEdge.default().encode_state(state)))
    assert head is not None
    assert (head.started_at, head.status, head.last_seq) == (
        int(state.started_at),
        state.status,
        state.last_seq,
    )
    if state.status is RunStatus.RUNNING:
        assert head.finished_at is None
    else:
        marker = marker_of(state)
        assert (head.last_seq, head.status, head.finished_at) == marker[:3]
        # The digest is in the head when the ring has all 64 slots; else the store decodes.
        assert head.last_digest == (marker.digest if len(state.digests) == 64 else None)


def test_a_value_that_is_not_a_packed_state_has_no_head() -> None:
    from consumers.state_bytes import packed_head

    assert packed_head(b"k", b"\xc3\x01whatever") is None


def test_a_packed_state_damaged_in_its_head_has_none(event_factory: EventFactory) -> None:
    """It is decoded (and refused, loudly) when its run is touched, not read here. (Damage
    after the head is not seen by a marker made from it: a marker needs only the head.)"""
    from consumers.service.edge import FoldEdge
    from consumers.state_bytes import pack_stored, packed_head

    result = _finished(event_factory)
    key = str(RUN_ID).encode()
    value = FoldEdge.default().encode_state(result.runs[RUN_ID])
    for cut in (50, 60, 70, 80):  # within the Run record or last_seq
        assert packed_head(key, pack_stored(key, value[:cut])) is None
