"""The batch lane (C and Python) folds exactly what the per-record lane and the general path fold.

:func:`consumers.fastlane.batch_lane` walks consumed messages and stops at the first
record it does not take. Here the same record streams go through the service's own
``_fold_batch`` on the C lane, on the Python batch lane, and on the general path alone;
states, counts, offsets, dirty sets, records produced and every stop must agree.
Damaged records must stop the C lane exactly where the Python lane stops.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message
from test_fastlane import (
    _assert_same,
    _general_outcome,
    _mutations,
    _RecordingProducer,
)
from test_fastlane import _prepared_runs as _build_prepared_runs

from consumers import fastlane
from consumers.edge import FoldEdge
from consumers.fastlane import BatchLane, batch_lane, compiled_lane_available
from consumers.service import FoldService, ServiceConfig
from consumers.state import RunState
from producers import FaultRates, Fleet, FleetConfig

pytestmark = pytest.mark.unit

needs_c = pytest.mark.skipif(
    not compiled_lane_available(), reason="consumers._fastlane is not built or turned off"
)
Record = tuple[int, bytes | None, bytes | None]


@functools.cache
def _prepared_runs() -> list[tuple[RunState, bytes, bytes]]:
    """test_fastlane's prepared runs, built once (every use folds copies of the states)."""
    return _build_prepared_runs()


@functools.cache
def _lane(compiled: bool) -> BatchLane:
    """One lane of each kind for the module (building one compiles the Python scanners)."""
    lane = batch_lane(compiled=compiled)
    assert lane is not None
    return lane


def test_the_compiled_lane_is_built_on_this_machine() -> None:
    # CI installs with a compiler: the C lane must be there, or the speed goal is lost
    # silently (the install treats the extension as optional).
    if os.environ.get("RUNFOLD_PURE_PYTHON", "") not in ("", "0"):
        pytest.skip("RUNFOLD_PURE_PYTHON is set: the Python lane is wanted")
    import consumers._fastlane

    assert compiled_lane_available()
    assert batch_lane().__self__.__class__ is consumers._fastlane.Lane  # type: ignore[union-attr]


# --- a service folding through the batch lane -------------------------------------------


Stops = list[tuple[int, int, int]]
"""Each call of the lane: (start index, stop index, records folded)."""


def _recording(lane: BatchLane, stops: Stops) -> BatchLane:
    """``lane``, remembering where each of its calls started and stopped."""

    def record(msgs: list[Message], start: int, *rest: Any) -> tuple[int, int]:
        index, folded = lane(msgs, start, *rest)
        stops.append((start, index, folded))
        return index, folded

    return record


def _service(
    batch: BatchLane | None, unchecked: set[bytes]
) -> tuple[FoldService, Any, Stops]:
    """The real service, on ``batch`` (None: the general path alone), recording its stops."""
    stops: Stops = []
    lane = _recording(batch, stops) if batch is not None else None
    service = FoldService(
        ServiceConfig(
            kafka={}, events_topic="ev", dlq_topic="dlq", violations_topic="viol", runs_topic="runs"
        ),
        edge=dataclasses.replace(FoldEdge.default(), batch_lane=lane),
    )
    producer = _RecordingProducer()
    service._producer = producer  # type: ignore[assignment]
    service._in_txn = True
    service._unchecked = set(unchecked)
    return service, producer, stops


def _messages(records: list[Record], rng: random.Random) -> list[Message]:
    """Messages of the records, with consumer error events (partition EOF) among them."""
    msgs = []
    for offset, (partition, key, value) in enumerate(records):
        if rng.random() < 0.01:
            eof = KafkaError(KafkaError._PARTITION_EOF)
            msgs.append(Message(topic="ev", partition=partition, error=eof))
        msgs.append(Message(topic="ev", partition=partition, offset=offset, key=key, value=value))
    return msgs


def _fold(
    msgs: list[Message], batch: BatchLane | None, unchecked: set[bytes], size: int = 500
) -> tuple[FoldService, Any, Stops]:
    service, producer, stops = _service(batch, unchecked)
    for start in range(0, len(msgs), size):
        service._fold_batch(msgs[start : start + size])
    return service, producer, stops


def _fleet(runs: int, seed: int) -> list[Record]:
    rates = FaultRates(gap=0.1, dup=0.1, reorder=0.1, after_end=0.1, conflict=0.1, corrupt=0.1)
    fleet = Fleet(FleetConfig(runs=runs, agents=6, seed=seed, faults=rates))
    return [(hash(key) % 3, key, value) for key, value, _ in fleet.records()]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_fleet_with_every_fault_folds_the_same_through_every_lane(seed: int) -> None:
    records = _fleet(120, seed)
    rng = random.Random(seed)
    keys = sorted({key for _, key, _ in records if key is not None})
    unchecked = set(rng.sample(keys, 5))
    msgs = _messages(records, rng)
    general, general_out, _ = _fold(msgs, None, unchecked)
    py_lane, py_out, py_stops = _fold(msgs, batch_lane(compiled=False), unchecked)
    _assert_same(py_lane, general, py_out, general_out)
    folded = sum(folded for _, _, folded in py_stops)
    assert folded > len(records) // 2  # else this proves little
    assert len(py_stops) > 50
    if compiled_lane_available():
        c_lane, c_out, c_stops = _fold(msgs, batch_lane(compiled=True), unchecked)
        _assert_same(c_lane, general, c_out, general_out)
        # Both lanes stopped at the same records and folded the same runs of records.
        assert c_stops == py_stops


@needs_c
def test_small_batches_and_a_tiny_payload_cache_change_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fastlane, "_PAYLOAD_CACHE_SIZE", 3)  # cleared again and again
    records = _fleet(60, 7)
    msgs = _messages(records, random.Random(7))
    c_lane, c_out, _ = _fold(msgs, batch_lane(compiled=True), set(), size=7)
    general, general_out, _ = _fold(msgs, None, set(), size=7)
    _assert_same(c_lane, general, c_out, general_out)


# --- one record at a time: the lanes agree on every damaged record ------------------------


def _one(
    lane: BatchLane, state: RunState, key: bytes | None, value: bytes | None, offset: int, **kw: Any
) -> tuple[tuple[int, int], RunState, dict[int, int], dict[int, set[bytes]]]:
    """Offer one message to ``lane`` for a copy of ``state``; what it did."""
    unchecked = kw.pop("unchecked", set())
    copy = state.copy()
    runs_of: dict[int, dict[bytes, Any]] = {4: {key: copy} if key is not None else {}}
    next_offsets: dict[int, int] = {}
    dirty_of: dict[int, set[bytes]] = {}
    msg = Message(topic="ev", partition=4, offset=offset, key=key, value=value, **kw)
    result = lane([msg], 0, runs_of, dirty_of, next_offsets, unchecked)
    return result, copy, next_offsets, dirty_of


def _agree(state: RunState, key: bytes, value: bytes, offset: int | None = None) -> bool:
    """Both lanes do the same with the record; returns whether they folded it."""
    at = state.source_offset + 1 if offset is None else offset
    c = _one(_lane(True), state, key, value, at)
    py = _one(_lane(False), state, key, value, at)
    assert c[0] == py[0], value.hex()
    assert c[1] == py[1], value.hex()
    assert c[2:] == py[2:]
    folded = c[0] == (1, 1)
    if folded:
        assert c[2] == {4: at + 1} and c[3] == {4: {key}}
        expected = _general_outcome(state, key, value)
        assert expected is not None, value.hex()
        c[1].source_offset = state.source_offset
        assert c[1] == expected
    else:
        assert c[0] == (0, 0) and c[1] == state and not c[2] and not c[3]
    return folded


@needs_c
def test_damaged_records_stop_both_lanes_alike() -> None:
    rng = random.Random(11)
    taken = refused = 0
    for state, key, value in _prepared_runs()[:300]:
        for damaged in [value, *_mutations(value, rng)]:
            if _agree(state, key, damaged):
                taken += 1
            else:
                refused += 1
    assert taken > 300 and refused > 300


def _with(state: RunState, change: Callable[[RunState], None]) -> RunState:
    copy = state.copy()
    change(copy)
    return copy


@needs_c
@pytest.mark.parametrize(
    "case",
    [
        "as is",
        "not running",
        "pending",
        "nothing applied",
        "replayed offset",
        "same offset",
        "seq ahead",
        "seq repeated",
        "key of another run",
        "short key",
        "no key",
        "no value",
        "error",
        "unchecked",
        "no state",
        "truncated header",
        "other fingerprint",
    ],
)
def test_each_condition_stops_both_lanes_alike(case: str) -> None:
    from schemas import RunStatus

    state, key, value = _prepared_runs()[3]
    offset = state.source_offset + 1
    other_key = _prepared_runs()[-1][1]
    assert other_key != key
    kw: dict[str, Any] = {}
    runs_key: bytes | None = key
    if case == "not running":
        state = _with(state, lambda s: setattr(s, "status", RunStatus.FAILED))
    elif case == "pending":
        state = _with(state, lambda s: s.pending_events.update({s.last_seq + 5: (None, 1)}))
    elif case == "nothing applied":
        state = _with(state, lambda s: setattr(s, "events_applied", 0))
    elif case == "replayed offset":
        offset = state.source_offset - 1
    elif case == "same offset":
        offset = state.source_offset
    elif case == "seq ahead":
        state = _with(state, lambda s: setattr(s, "last_seq", s.last_seq - 1))
    elif case == "seq repeated":
        state = _with(state, lambda s: setattr(s, "last_seq", s.last_seq + 1))
    elif case == "key of another run":
        key = runs_key = other_key
    elif case == "short key":
        key = runs_key = key[:-1]
    elif case == "no key":
        key = runs_key = None  # type: ignore[assignment]
    elif case == "no value":
        value = None  # type: ignore[assignment]
    elif case == "error":
        kw["error"] = KafkaError(KafkaError._PARTITION_EOF)
    elif case == "unchecked":
        kw["unchecked"] = {key}
    elif case == "truncated header":
        value = value[:30]
    elif case == "other fingerprint":
        value = value[:2] + bytes(8) + value[10:]
    unchecked = kw.pop("unchecked", set())
    results = []
    for compiled in (True, False):
        lane = _lane(compiled)
        copy = state.copy()
        runs = {} if case == "no state" or runs_key is None else {runs_key: copy}
        next_offsets: dict[int, int] = {}
        dirty_of: dict[int, set[bytes]] = {}
        msg = Message(topic="ev", partition=2, offset=offset, key=key, value=value, **kw)
        got = lane([msg], 0, {2: runs}, dirty_of, next_offsets, unchecked)
        results.append((got, copy == state, next_offsets, dirty_of))
    assert results[0] == results[1]
    if case == "as is":
        assert results[0][0] == (1, 1) and not results[0][1]
    else:
        assert results[0] == ((0, 0), True, {}, {})
