"""RunState straight to and from its Avro bytes (``runfold.RunState`` v1, single-object).

The general codec path builds the record dict (:mod:`consumers.state_codec`) and has
fastavro walk the schema: about 80 µs per state each way, paid for every run a
transaction changed and for every run restored on assignment. These functions write
and read the same bytes directly, for the one schema version they were written for
(pinned by fingerprint). The service uses them through
:meth:`~consumers.service.edge.FoldEdge.default`, falling back to the general path whenever
they decline (another version, another framing) or fail (a value out of range,
damaged bytes), so that errors keep their precise messages.

Tests (``tests/consumers/test_state_bytes.py``) check the bytes equal fastavro's and
the states equal :func:`~consumers.state_codec.from_record`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any
from uuid import UUID

from consumers.state import COUNTER_NAMES, DEFAULT_CONFIG, FoldConfig, RunState
from consumers.state_codec import _restore_window, _ring_bytes, _ring_from
from schemas import Event, RunStatus, Timestamp, ViolationKind, fastpath, serde
from schemas.framing import SINGLE_OBJECT_MAGIC

__all__ = [
    "PACKED_STATES",
    "PINNED_RUN_STATE",
    "pack_stored",
    "state_reader",
    "state_writer",
    "unpack_stored",
]

PINNED_RUN_STATE = bytes.fromhex("7feade7acdfc2988")
"""Fingerprint of the ``runfold.RunState`` version written and read here (v1)."""

_UUID_LENGTH = b"\x48"  # zigzag(36): str(UUID) is 36 ASCII characters
_STATUSES = list(RunStatus)
_KINDS = list(ViolationKind)


def _schemas_pinned() -> bool:
    """True when the current RunState, Run and Violation are the versions written for."""
    from schemas.codec import RecordCodec

    catalog = RecordCodec("RunState").catalog
    return (
        catalog.current("RunState").fingerprint == PINNED_RUN_STATE
        and catalog.current("Run").fingerprint == fastpath.PINNED["Run"]
        and catalog.current("Violation").fingerprint == fastpath.PINNED["Violation"]
        # The order the Avro enums and records list them in, as this module assumes.
        and [s.value for s in _STATUSES] == ["RUNNING", "COMPLETED", "FAILED", "CANCELLED"]
        and [k.value for k in _KINDS]
        == ["gap", "duplicate", "conflict", "after_terminal", "missing_start"]
    )


def state_writer() -> Callable[[RunState], bytes] | None:
    """``state -> bytes`` equal to ``encode_record("RunState", to_record(state))``.

    None when the schemas are not the pinned versions. The function raises (any
    exception) where it cannot write a state; the caller then takes the general path.
    """
    if not _schemas_pinned():
        return None
    header = SINGLE_OBJECT_MAGIC + PINNED_RUN_STATE
    long_ = fastpath._long
    string = fastpath._string
    optional_string = fastpath._optional_string
    status_index = fastpath._STATUS_INDEX
    encode_violation = fastpath.encode_violation
    dumps = serde.dumps
    counters = attrgetter(*COUNTER_NAMES)
    small = [long_(n) for n in range(64)]

    def longs(values: tuple[int, ...] | list[int]) -> bytes:
        return b"".join([small[v] if 0 <= v < 64 else long_(v) for v in values])

    def write(state: RunState) -> bytes:
        finished = state.finished_at
        outputs = state.outputs
        recent = state.recent_violations
        pending = state.pending_events
        missing = state.missing
        window = _ring_bytes(state.digests)
        counts = state.violation_counts
        parts = [
            header,
            _UUID_LENGTH,
            str(state.run_id).encode(),
            string(state.agent_spec_digest),
            string(state.git_sha),
            long_(int(state.started_at)),
            b"\x00" if finished is None else b"\x02" + long_(int(finished)),
            status_index[state.status],
            string(dumps(state.inputs)),
            b"\x00" if outputs is None else b"\x02" + string(dumps(outputs)),
            optional_string(state.final_state_digest),
            long_(state.last_seq),
            longs(counters(state)),
            longs([counts[kind] for kind in _KINDS]),
        ]
        if recent:
            parts.append(long_(len(recent)))
            parts.extend(map(encode_violation, recent))
        parts.append(b"\x00")
        parts.append(long_(state.source_offset))
        parts.append(b"\x01" if state.has_identity else b"\x00")
        parts.append(long_(int(state.stream_time)))
        if pending:
            parts.append(long_(len(pending)))
            for seq in sorted(pending):
                event, digest = pending[seq]
                parts.append(long_(seq))
                parts.append(digest.to_bytes(8, "little"))
                parts.append(string(event.to_json()))
        parts.append(b"\x00")
        parts.append(long_(len(window)))
        parts.append(window)
        if missing:
            parts.append(long_(len(missing)))
            for first, last in missing:
                parts.append(long_(first))
                parts.append(long_(last))
        parts.append(b"\x00")
        return b"".join(parts)

    return write


def state_reader(
    config: FoldConfig = DEFAULT_CONFIG,
) -> Callable[[bytes], RunState | None] | None:
    """``bytes -> state`` equal to ``from_record(decode_record("RunState", bytes), config)``.

    None when the schemas are not the pinned versions. The function returns None
    for bytes it does not read (another framing or version) and raises (any
    exception) on damaged ones; the caller then takes the general path, which
    says precisely what is wrong.
    """
    if not _schemas_pinned():
        return None
    header = SINGLE_OBJECT_MAGIC + PINNED_RUN_STATE
    start = len(header)
    read_long = fastpath._read_long
    read_string = fastpath._read_string
    decode_violation = fastpath.decode_violation
    loads = serde.loads
    from_json = Event.from_json
    # One generated function sets every counter (a setattr loop costs several times more).
    env: dict[str, Callable[[RunState, list[int]], None]] = {}
    source = (
        "def set_counters(state, values):\n    ("
        + ", ".join(f"state.{name}" for name in COUNTER_NAMES)
        + ",) = values\n"
    )
    exec(source, env)  # noqa: S102
    set_counters = env["set_counters"]
    n_counters = len(COUNTER_NAMES)

    def longs(value: bytes, pos: int, count: int) -> tuple[list[int], int]:
        out = []
        for _ in range(count):
            byte = value[pos]
            if byte < 0x80:
                out.append((byte >> 1) ^ -(byte & 1))
                pos += 1
            else:
                number, pos = read_long(value, pos)
                out.append(number)
        return out, pos

    def branch(value: bytes, pos: int) -> bool:
        byte = value[pos]
        if byte not in (0, 2):
            raise ValueError(f"union branch byte {byte}")
        return byte == 2

    def array(
        value: bytes, pos: int, item: Callable[[bytes, int], tuple[Any, int]]
    ) -> tuple[list[Any], int]:
        """An Avro array: blocks of ``count`` items, ended by a zero count."""
        items: list[Any] = []
        while True:
            count, pos = read_long(value, pos)
            if count == 0:
                return items, pos
            if count < 0:
                raise ValueError("array block with a byte size")
            for _ in range(count):
                element, pos = item(value, pos)
                items.append(element)

    def pending_item(value: bytes, pos: int) -> tuple[tuple[int, bytes, str], int]:
        seq, pos = read_long(value, pos)
        digest = value[pos : pos + 8]
        if len(digest) != 8:
            raise ValueError("truncated digest")
        event_json, pos = read_string(value, pos + 8)
        return (seq, digest, event_json), pos

    def missing_item(value: bytes, pos: int) -> tuple[tuple[int, int], int]:
        first, pos = read_long(value, pos)
        last, pos = read_long(value, pos)
        return (first, last), pos

    def read(value: bytes) -> RunState | None:
        if not value.startswith(header):
            return None
        run_id_text, pos = read_string(value, start)
        if len(run_id_text) != 36:
            raise ValueError("run_id is not 36 characters")
        run_id = UUID(run_id_text)
        agent_spec_digest, pos = read_string(value, pos)
        git_sha, pos = read_string(value, pos)
        started_at, pos = read_long(value, pos)
        finished_at = None
        if branch(value, pos):
            finished_at, pos = read_long(value, pos + 1)
        else:
            pos += 1
        status_index, pos = read_long(value, pos)
        status = _STATUSES[status_index] if 0 <= status_index < len(_STATUSES) else None
        if status is None:
            raise ValueError(f"status index {status_index}")
        inputs_text, pos = read_string(value, pos)
        outputs_text = None
        if branch(value, pos):
            outputs_text, pos = read_string(value, pos + 1)
        else:
            pos += 1
        final_state_digest = None
        if branch(value, pos):
            final_state_digest, pos = read_string(value, pos + 1)
        else:
            pos += 1
        last_seq, pos = read_long(value, pos)
        counter_values, pos = longs(value, pos, n_counters)
        violation_values, pos = longs(value, pos, len(_KINDS))
        violations, pos = array(value, pos, decode_violation)
        source_offset, pos = read_long(value, pos)
        flag = value[pos]
        if flag > 1:
            raise ValueError(f"boolean byte {flag}")
        has_identity = flag == 1
        stream_time, pos = read_long(value, pos + 1)
        pending, pos = array(value, pos, pending_item)
        size, pos = read_long(value, pos)
        end = pos + size
        if size < 0 or end > len(value):
            raise ValueError("digest window runs past the end")
        window = value[pos:end]
        pos = end
        missing, pos = array(value, pos, missing_item)
        if pos != len(value):
            raise ValueError("bytes left after the record")
        # What consumers.state_codec.from_record does with the record.
        state = RunState.new(run_id, Timestamp(started_at), config)
        state.agent_spec_digest = agent_spec_digest
        state.git_sha = git_sha
        state.finished_at = None if finished_at is None else Timestamp(finished_at)
        state.status = status
        state.inputs = loads(inputs_text)
        state.outputs = None if outputs_text is None else loads(outputs_text)
        state.final_state_digest = final_state_digest
        state.last_seq = last_seq
        set_counters(state, counter_values)
        state.violation_counts = dict(zip(_KINDS, violation_values, strict=True))
        state.recent_violations.extend(violations)
        state.source_offset = source_offset
        state.has_identity = has_identity
        state.stream_time = stream_time
        for seq, digest, event_json in pending:
            state.pending_events[seq] = (from_json(event_json), int.from_bytes(digest, "little"))
        if state.pending_events:
            state.pending_oldest_ts = min(
                int(event.timestamp) for event, _ in state.pending_events.values()
            )
        _restore_window(state, _ring_from(window))
        state.missing = missing
        return state

    return read


# --- restored states held as bytes until their run is touched -----------------------------
#
# A service restores every run of its partitions but folds events of few of them soon;
# it keeps the others as bytes (consumers.service). pack_stored makes those bytes smaller
# in a way unpack_stored undoes exactly, for any bytes whatsoever (a first byte says
# which form follows). For a pinned v1 state stored under its own run_id:
#
# - the 10-byte single-object header and the run_id (its length byte and 36 characters)
#   are left out: they are the pinned header and the key;
# - the digest window (64 little-endian 8-byte digests: CRC-32 in the low half, the
#   body length above it; 0 for an empty slot) keeps six bytes of each entry, when the
#   top two bytes of all of them are zero. It ends the record when no missing range is
#   kept: its length (512, varint 80 08), the window, the empty ``missing`` array (00).
# 909 bytes of a typical state become 734; unpacking costs ~2 us, decoding ~35 us.

_RAW = b"\x00"
_NO_ID = b"\x01"
_NO_ID_SHORT_WINDOW = b"\x02"
_ID_PREFIX = SINGLE_OBJECT_MAGIC + PINNED_RUN_STATE + _UUID_LENGTH
_ID_START = len(_ID_PREFIX)
_ID_END = _ID_START + 36
_WINDOW_LENGTH = b"\x80\x08"  # Avro long 512
_WINDOW = 512
_KEPT = 6  # bytes kept of each 8-byte digest
_KEPT_SIZE = _KEPT * _WINDOW // 8
_TAIL = len(_WINDOW_LENGTH) + _WINDOW + 1
_ZEROS = bytes(_WINDOW // 8)
_SHORT = _ID_END + _TAIL  # shortest value whose window can be compacted
_MARKERS = frozenset({_RAW, _NO_ID, _NO_ID_SHORT_WINDOW})
PACKED_STATES = frozenset({_NO_ID, _NO_ID_SHORT_WINDOW})
"""First bytes of :func:`pack_stored`'s output for a pinned-version state stored under
its own run_id (anything else is kept whole)."""


def pack_stored(key: bytes, value: bytes) -> bytes:
    """``value`` (a state stored under ``key``) in fewer bytes; see :func:`unpack_stored`."""
    # Called once per restored record (a million for a million runs): kept lean.
    if not (value.startswith(_ID_PREFIX) and value[_ID_START:_ID_END] == key):
        # Another version, framing or key: kept whole. Only a value that starts with a
        # marker byte needs one in front (a RunState starts with C3).
        return _RAW + value if value[:1] in _MARKERS else value
    if value[-_TAIL : -_TAIL + 2] == _WINDOW_LENGTH and value[-1] == 0 and len(value) >= _SHORT:
        window = value[-_WINDOW - 1 : -1]
        if window[6::8] == _ZEROS and window[7::8] == _ZEROS:
            # Kept as six planes (byte 0 of every digest, then byte 1, ...): cheap both ways.
            return b"".join(
                (
                    _NO_ID_SHORT_WINDOW,
                    value[_ID_END : -_WINDOW - 1],
                    window[0::8],
                    window[1::8],
                    window[2::8],
                    window[3::8],
                    window[4::8],
                    window[5::8],
                )
            )
    return _NO_ID + value[_ID_END:]


def unpack_stored(key: bytes, packed: bytes) -> bytes:
    """The value :func:`pack_stored` was given: ``unpack_stored(k, pack_stored(k, v)) == v``."""
    marker = packed[:1]
    if marker == _NO_ID_SHORT_WINDOW:
        window = bytearray(_WINDOW)
        planes = packed[-_KEPT_SIZE:]
        step = _WINDOW // 8
        for byte in range(_KEPT):
            window[byte::8] = planes[byte * step : (byte + 1) * step]
        return b"".join((_ID_PREFIX, key, packed[1:-_KEPT_SIZE], window, b"\x00"))
    if marker == _NO_ID:
        return b"".join((_ID_PREFIX, key, packed[1:]))
    if marker == _RAW:
        return packed[1:]
    return packed
