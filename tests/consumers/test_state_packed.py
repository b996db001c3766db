"""Restored states kept packed until their run is touched: packing loses nothing.

``unpack_stored(key, pack_stored(key, value)) == value`` for any bytes at all; the
states the service writes (folded fleets with every fault) take the short forms, and
values of other shapes are kept whole.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.service.edge import FoldEdge
from consumers.state import FoldConfig, RunState
from consumers.state_bytes import PACKED_STATES, pack_stored, unpack_stored
from tests.consumers.test_state_bytes import _states

pytestmark = pytest.mark.unit

_EDGE = FoldEdge.default()


def _key(state: RunState) -> bytes:
    return str(state.run_id).encode()


@pytest.mark.parametrize("seed", [3, 4])
def test_folded_states_pack_small_and_unpack_to_the_same_bytes(seed: int) -> None:
    states = _states(seed, 80, FoldConfig())
    forms: set[bytes] = set()
    for state in states:
        value = _EDGE.encode_state(state)
        packed = pack_stored(_key(state), value)
        forms.add(packed[:1])
        assert packed[:1] in PACKED_STATES
        assert len(packed) < len(value) - 40  # header and run_id at least
        assert unpack_stored(_key(state), packed) == value
        assert _EDGE.decode_state(unpack_stored(_key(state), packed)) == state
    # Both short forms occur: with the digest window compacted and (a missing range
    # kept after it) without.
    assert forms == PACKED_STATES


def test_a_typical_state_loses_its_header_id_and_a_quarter_of_its_window() -> None:
    state = next(s for s in _states(5, 20, FoldConfig()) if s.last_seq >= 64 and not s.missing)
    value = _EDGE.encode_state(state)
    packed = pack_stored(_key(state), value)
    assert packed[:1] == b"\x02"
    # Header, id length and id (10 + 1 + 36) out, a marker byte in, the window's two top
    # bytes of 64 digests and the empty ``missing`` array's byte (implied) out.
    assert len(value) - len(packed) == 10 + 1 + 36 - 1 + 64 * 2 + 1


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"k", b""),
        (b"k", b"\x00"),
        (b"k", b"\x01abc"),
        (b"k", b"\x02" + bytes(600)),
        (b"k", b"\xc3\x01garbage"),
    ],
)
def test_other_values_are_kept_whole(key: bytes, value: bytes) -> None:
    packed = pack_stored(key, value)
    assert packed[:1] not in PACKED_STATES
    assert unpack_stored(key, packed) == value


def test_a_state_under_another_key_is_kept_whole() -> None:
    state = _states(6, 3, FoldConfig())[-1]
    value = _EDGE.encode_state(state)
    other = b"00000000-0000-4000-8000-000000000000"
    assert pack_stored(other, value) == value
    assert unpack_stored(other, value) == value


def test_a_window_whose_digests_use_the_top_bytes_keeps_them() -> None:
    state = next(s for s in _states(7, 20, FoldConfig()) if not s.missing)
    state.digests[3] = 2**63 + 5
    value = _EDGE.encode_state(state)
    packed = pack_stored(_key(state), value)
    assert packed[:1] == b"\x01"
    assert unpack_stored(_key(state), packed) == value


_PREFIX = bytes.fromhex("c3017feade7acdfc298848")


@given(
    key=st.binary(max_size=40),
    body=st.binary(max_size=700),
    window=st.lists(st.integers(0, 2**48 - 1), min_size=64, max_size=64),
    shape=st.sampled_from(["raw", "id", "id+window"]),
)
def test_any_bytes_round_trip(key: bytes, body: bytes, window: list[int], shape: str) -> None:
    if shape == "raw":
        value = body
    else:
        value = _PREFIX + key + body
        if shape == "id+window":
            value += b"\x80\x08" + b"".join(d.to_bytes(8, "little") for d in window) + b"\x00"
    assert unpack_stored(key, pack_stored(key, value)) == value
