"""RunState's direct Avro writer and reader equal the general path (record dict + fastavro).

States come from folding fleets with every fault, cut at many points (so reorder
buffers, declared gaps, violations, terminal and running runs all occur); the bytes
must equal fastavro's and the states read back must equal ``from_record``'s. Damaged
bytes must be refused as the general path refuses them.
"""

from __future__ import annotations

import random

import pytest

from consumers import apply_event
from consumers.service.edge import FoldEdge
from consumers.state import FoldConfig, RunState
from consumers.state_bytes import state_reader, state_writer
from consumers.state_codec import from_record, to_record
from producers import FaultRates, Fleet, FleetConfig
from schemas import codec
from schemas.codec import decode_event
from schemas.errors import RunfoldError

pytestmark = pytest.mark.unit

_ALL_FAULTS = FaultRates(gap=0.2, dup=0.2, reorder=0.3, after_end=0.2, conflict=0.2, corrupt=0.1)


def _states(seed: int, runs: int, config: FoldConfig) -> list[RunState]:
    """Copies of every run's state after each of its events, a few per run."""
    fleet = Fleet(FleetConfig(runs=runs, agents=5, seed=seed, faults=_ALL_FAULTS))
    rng = random.Random(seed)
    states: dict[bytes, RunState] = {}
    taken: list[RunState] = []
    for offset, (key, value, _meta) in enumerate(fleet.records()):
        try:
            event = decode_event(value)
        except RunfoldError:
            continue
        state, _ = apply_event(states.get(key), event, config)
        state.source_offset = offset
        states[key] = state
        if state.pending_events or rng.random() < 0.1:
            taken.append(state.copy())
    taken.extend(states.values())
    return taken


def _general(state: RunState) -> bytes:
    return codec.encode_record("RunState", to_record(state))


@pytest.mark.parametrize("seed", [1, 2])
def test_written_bytes_equal_fastavros_and_read_back_equal(seed: int) -> None:
    write, read = state_writer(), state_reader()
    assert write is not None and read is not None
    states = _states(seed, 120, FoldConfig())
    assert any(s.pending_events for s in states) and any(s.missing for s in states)
    assert any(s.recent_violations for s in states) and any(s.is_terminal for s in states)
    for state in states:
        data = write(state)
        assert data == _general(state)
        back = read(data)
        assert back == from_record(codec.decode_record("RunState", data))
        assert back == state


def test_a_state_with_odd_values_round_trips_the_same_way() -> None:
    write, read = state_writer(), state_reader()
    assert write is not None and read is not None
    state = _states(3, 10, FoldConfig(max_recent_violations=2))[-1]
    state.agent_spec_digest = "é" * 70  # a string whose length takes two bytes
    state.inputs = {"k": [1, 2.5, None, True, "\u2603"], "big": 2**70}
    state.outputs = None
    state.final_state_digest = None
    state.nodes_entered = 10**12
    state.source_offset = -1
    for data in (write(state), _general(state)):
        assert data == _general(state)
        assert read(data) == from_record(codec.decode_record("RunState", data))


def test_the_edge_refuses_damaged_states_as_the_general_path_does() -> None:
    edge = FoldEdge.default()
    rng = random.Random(4)
    states = _states(5, 30, FoldConfig())
    checked = 0
    for state in states[:150]:
        data = edge.encode_state(state)
        for _ in range(6):
            at = rng.randrange(10, len(data))
            damaged = data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :]
            for candidate in (damaged, data[:at], data + b"\x00"):
                try:
                    expected: object = from_record(codec.decode_record("RunState", candidate))
                except Exception as exc:  # noqa: BLE001 - compared below
                    expected = type(exc)
                try:
                    got: object = edge.decode_state(candidate)
                except Exception as exc:  # noqa: BLE001
                    got = type(exc)
                assert got == expected, candidate.hex()
                checked += 1
    assert checked > 1000


def test_a_state_the_writer_cannot_write_gets_the_general_paths_error() -> None:
    edge = FoldEdge.default()
    state = _states(6, 3, FoldConfig())[-1]
    state.last_seq = 2**63
    with pytest.raises(RunfoldError, match="last_seq"):
        edge.encode_state(state)


def test_the_state_counters_are_the_records_counters_in_order() -> None:
    """StateRecord.counters is written in LAYOUTS order from RunState's COUNTER_NAMES."""
    from consumers.state import COUNTER_NAMES
    from schemas.avro_binary import LAYOUTS

    assert tuple(name for name, _ in LAYOUTS["RunCounters"]) == COUNTER_NAMES
