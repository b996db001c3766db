"""The service's fast lane folds exactly what the general path folds, and nothing it refuses.

The same records go through :meth:`FoldService._fold_batch` with the fast lane and
without it (every record decoded into an ``Event`` and given to ``apply_event``);
states, counts and every record produced must be the same. Damaged records must
never be taken by the lane where the general path would refuse them.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from confluent_kafka import Message

from consumers.edge import FoldEdge, body_digest
from consumers.fastlane import fast_lane
from consumers.fold import apply_event
from consumers.sequence import COUNTED_KINDS
from consumers.service import FoldService, ServiceConfig
from consumers.state import RunState
from producers import FaultRates, Fleet, FleetConfig
from schemas import fastpath
from schemas.codec import EventCodec, decode_event
from schemas.errors import RunfoldError
from schemas.model import EVENT_KINDS

pytestmark = pytest.mark.unit


class _RecordingProducer:
    """Stands in for the transactional producer: keeps what the service would send."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.sent.append((topic, kwargs))

    def poll(self, timeout: float = 0) -> int:
        return 0


def _fold_all(
    records: list[tuple[int, bytes | None, bytes | None]], *, lane: bool, batch: int = 500
) -> tuple[FoldService, _RecordingProducer]:
    edge = FoldEdge.default()
    if not lane:
        # The lane off: every record goes down the general path.
        edge = dataclasses.replace(edge, batch_lane=None)
    service = FoldService(
        ServiceConfig(
            kafka={}, events_topic="ev", dlq_topic="dlq", violations_topic="viol", runs_topic="runs"
        ),
        edge=edge,
    )
    producer = _RecordingProducer()
    service._producer = producer  # type: ignore[assignment]
    service._in_txn = True
    msgs = [
        Message(topic="ev", partition=partition, offset=offset, key=key, value=value)
        for offset, (partition, key, value) in enumerate(records)
    ]
    for start in range(0, len(msgs), batch):
        service._fold_batch(msgs[start : start + batch])
    return service, producer


def _fleet_records(runs: int, seed: int) -> list[tuple[int, bytes | None, bytes | None]]:
    rates = FaultRates(gap=0.1, dup=0.1, reorder=0.1, after_end=0.1, conflict=0.1, corrupt=0.1)
    fleet = Fleet(FleetConfig(runs=runs, agents=6, seed=seed, faults=rates))
    return [(hash(key) % 3, key, value) for key, value, _ in fleet.records()]


def _assert_same(
    lane: FoldService,
    general: FoldService,
    lane_out: _RecordingProducer,
    general_out: _RecordingProducer,
) -> None:
    assert lane._txn_stats == general._txn_stats
    assert lane._txn_stats.balanced()
    assert lane._runs.keys() == general._runs.keys()
    for partition, runs in general._runs.items():
        assert lane._runs[partition].keys() == runs.keys()
        for key, state in runs.items():
            other = lane._runs[partition][key]
            assert other == state, key
            assert lane.edge.encode_state(other) == general.edge.encode_state(state)
    assert lane._dirty == general._dirty
    assert lane._next_offsets == general._next_offsets
    assert lane_out.sent == general_out.sent


@pytest.mark.parametrize("seed", [1, 2])
def test_a_fleet_with_every_fault_folds_the_same_with_and_without_the_lane(seed: int) -> None:
    records = _fleet_records(150, seed)
    with_lane, lane_out = _fold_all(records, lane=True)
    general, general_out = _fold_all(records, lane=False)
    _assert_same(with_lane, general, lane_out, general_out)
    # The lane did take most records (else this test proves little).
    taken = with_lane._txn_stats.applied - sum(
        1 for _, _, value in records if value is not None and _first_of_run(value)
    )
    assert taken > len(records) // 2


def _first_of_run(value: bytes) -> bool:
    try:
        return decode_event(value).seq == 1
    except RunfoldError:
        return False


def test_the_service_digest_is_the_body_digest_in_both_paths() -> None:
    records = _fleet_records(20, 3)
    with_lane, _ = _fold_all(records, lane=True)
    for _, key, value in records:
        if value is None or key is None:
            continue
        try:
            event = decode_event(value)
        except RunfoldError:
            continue
        state = with_lane._runs[hash(key) % 3][key]
        window = state.digests
        slot = window[event.seq % len(window)]
        in_window = state.last_seq - len(window) < event.seq <= state.last_seq
        conflicting = event.kind.type == "tool_called" and "conflict" in str(event.payload)
        if slot and in_window and not conflicting:
            assert slot == body_digest(value)


# --- damaged records -------------------------------------------------------------------


def _general_outcome(state: RunState, key: bytes, value: bytes) -> RunState | None:
    """What the general path makes of ``value`` for a copy of ``state`` (None: refused)."""
    try:
        event = decode_event(value)
    except RunfoldError:
        return None
    if str(event.run_id).encode() != key:
        return None
    copy = state.copy()
    try:
        apply_event(copy, event, digest=body_digest(value))
    except RunfoldError:
        return None
    return copy


def _prepared_runs() -> list[tuple[RunState, bytes, bytes]]:
    """(state before, key, the next record) for lane-eligible records of a small fleet."""
    fleet = Fleet(FleetConfig(runs=40, agents=4, seed=9))
    states: dict[bytes, RunState] = {}
    out = []
    for offset, (key, value, meta) in enumerate(fleet.records()):
        if meta.fault is not None:
            continue
        event = decode_event(value)
        state = states.get(key)
        if state is not None and event.kind.type in COUNTED_KINDS:
            out.append((state.copy(), key, value))
        state, _ = apply_event(state, event, digest=body_digest(value))
        state.source_offset = offset
        states[key] = state
    return out


def _mutations(value: bytes, rng: random.Random) -> list[bytes]:
    body = 10 + 37  # header and run_id: the lane compares those bytes exactly
    out = [value[:-1], value + b"\x00", value[: body + 3]]
    for _ in range(12):
        at = rng.randrange(body, len(value))
        out.append(value[:at] + bytes([rng.randrange(256)]) + value[at + 1 :])
        out.append(value[:at] + bytes([value[at] ^ (1 << rng.randrange(8))]) + value[at + 1 :])
        out.append(value[:at] + value[at + 1 :])
        out.append(value[:at] + bytes([rng.randrange(256)]) + value[at:])
    return out


def test_the_lane_takes_no_damaged_record_the_general_path_refuses() -> None:
    lane = fast_lane()
    assert lane is not None
    rng = random.Random(5)
    taken = refused = 0
    for state, key, value in _prepared_runs()[:400]:
        offset = state.source_offset + 1
        for damaged in [value, *_mutations(value, rng)]:
            expected = _general_outcome(state, key, damaged)
            copy = state.copy()
            if lane(copy, key, damaged, offset):
                taken += 1
                assert expected is not None, damaged.hex()
                copy.source_offset = state.source_offset
                assert copy == expected, damaged.hex()
            else:
                refused += 1
                assert copy == state  # a refusal changes nothing
    assert taken > 400 and refused > 400


@pytest.mark.parametrize(
    ("tag", "fields", "payload"),
    [
        ("node_entered", {"node_id": "n", "iteration": 2**32}, "{}"),  # u32 overflow
        ("node_entered", {"node_id": "n", "iteration": -1}, "{}"),
        ("node_retrying", {"node_id": "n", "attempt": 1, "delay_ms": -5}, "{}"),  # u64 < 0
        ("node_exited", {"node_id": "é" * 40, "next_node": None, "duration_ms": 1}, "{}"),
        ("tool_called", {"tool_name": "t"}, '{"a": NaN}'),
        ("tool_called", {"tool_name": "t"}, "{} x"),
        ("tool_called", {"tool_name": "t"}, '"\\ud800"'),
        ("state_updated", {"node_id": "n", "keys_changed": ["a", "b"]}, "[1, 2.5, null]"),
    ],
)
def test_edge_values_go_where_the_general_path_puts_them(
    tag: str, fields: dict[str, Any], payload: str
) -> None:
    lane = fast_lane()
    assert lane is not None
    state, key, value = _prepared_runs()[0]
    body = bytearray(value[: 10 + 37])
    seq = state.last_seq + 1
    body += fastpath._long(seq) + fastpath._long(state.stream_time + 5)
    index = list(EVENT_KINDS).index(tag)
    body += fastpath._long(index)
    for name, field in EVENT_KINDS[tag].model_fields.items():
        if name == "type":
            continue
        item = fields[name]
        if field.annotation is int:
            body += _raw_long(item)
        elif field.annotation is str:
            body += _raw_string(item)
        elif item is None:
            body += b"\x00"
        elif isinstance(item, str):
            body += b"\x02" + _raw_string(item)
        else:
            body += _raw_long(len(item)) + b"".join(map(_raw_string, item)) + b"\x00"
    body += _raw_string(payload)
    damaged = bytes(body)
    expected = _general_outcome(state, key, damaged)
    copy = state.copy()
    took = lane(copy, key, damaged, state.source_offset + 1)
    assert took == (expected is not None)
    if took:
        copy.source_offset = state.source_offset
        assert copy == expected


def _raw_long(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63) if n >= -(2**63) else 0
    out = bytearray()
    while True:
        if z < 0x80:
            out.append(z)
            return bytes(out)
        out.append(z & 0x7F | 0x80)
        z >>= 7


def _raw_string(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return _raw_long(len(data)) + data


def test_the_lane_is_off_for_a_schema_version_it_was_not_written_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert EventCodec().current.fingerprint == fastpath.PINNED["Event"]
    monkeypatch.setitem(fastpath.PINNED, "Event", b"\x00" * 8)
    assert fast_lane() is None
