"""The ``runfold.RunState`` record's layout (v2), as plain values: :class:`StateRecord`.

``consumers`` maps its ``RunState`` to and from these values
(``consumers.state_codec``); the bytes are written and read here only. The ``run``
part is a ``runfold.Run`` record, written by the same functions as a Run message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from schemas.avro_binary.layouts import (
    LAYOUTS,
    RunRecord,
    decode_violation,
    encode_violation,
    read_run_record,
    write_run_record,
)
from schemas.avro_binary.primitives import (
    SMALL_LONGS,
    read_array,
    read_bytes,
    read_long,
    read_string,
    write_long,
    write_string,
)
from schemas.model import Violation, ViolationKind

__all__ = ["StateRecord", "decode_state", "encode_state"]

# _record(StateRecord, values): the NamedTuple without its Python-level __new__ (a third of
# the cost), on the per-state hot paths; ``values`` must be complete.
_record = tuple.__new__

# --- RunState ----------------------------------------------------------------------------


class StateRecord(NamedTuple):
    """A ``runfold.RunState`` record's values, in the schema's order, as plain values.

    ``consumers`` maps its ``RunState`` to and from this; the bytes are written and
    read here only.
    """

    run: RunRecord
    last_seq: int
    counters: Sequence[int]
    """In ``LAYOUTS["RunCounters"]`` order."""
    violation_counts: Sequence[int]
    """In ``ViolationKind`` order."""
    recent_violations: Sequence[Violation]
    stalled_since: int | None
    """Wall-clock nanoseconds when the run was flagged stalled; None when it is not."""
    source_offset: int
    has_identity: bool
    stream_time: int
    pending: Sequence[tuple[int, bytes, str]]
    """``(seq, 8-byte digest, event JSON)`` per buffered event, by seq."""
    digest_window: bytes
    missing: Sequence[tuple[int, int]]
    """Declared-missing seq ranges ``(first, last)``."""


_N_COUNTERS = len(LAYOUTS["RunCounters"])
_N_KINDS = len(ViolationKind)


def _write_longs(values: Sequence[int]) -> bytes:
    return b"".join([SMALL_LONGS[v + 64] if 0 <= v < 64 else write_long(v) for v in values])


def _write_blocks(items: Sequence[Any], item: Callable[[Any], bytes]) -> bytes:
    """An array in one block (none when empty): count, items, the closing zero."""
    if not items:
        return b"\x00"
    return b"".join((write_long(len(items)), *map(item, items), b"\x00"))


def _write_pending(item: tuple[int, bytes, str]) -> bytes:
    seq, digest, event_json = item
    return write_long(seq) + digest + write_string(event_json)


def _write_range(item: tuple[int, int]) -> bytes:
    return write_long(item[0]) + write_long(item[1])


def encode_state(s: StateRecord) -> bytes:
    """The Avro body of a ``runfold.RunState`` v2 record. :class:`Overflow` for a long
    beyond 64 bits (the caller's general path then names the field)."""
    window = s.digest_window
    return b"".join(
        (
            write_run_record(*s.run),
            write_long(s.last_seq),
            _write_longs(s.counters),
            _write_longs(s.violation_counts),
            _write_blocks(s.recent_violations, encode_violation),
            b"\x00" if s.stalled_since is None else b"\x02" + write_long(s.stalled_since),
            write_long(s.source_offset),
            b"\x01" if s.has_identity else b"\x00",
            write_long(s.stream_time),
            _write_blocks(s.pending, _write_pending),
            write_long(len(window)),
            window,
            _write_blocks(s.missing, _write_range),
        )
    )


def _read_longs(buf: bytes, pos: int, count: int) -> tuple[list[int], int]:
    out = []
    for _ in range(count):
        byte = buf[pos]
        if byte < 0x80:  # the common one-byte long, inline
            out.append((byte >> 1) ^ -(byte & 1))
            pos += 1
        else:
            number, pos = read_long(buf, pos)
            out.append(number)
    return out, pos


def _read_pending(buf: bytes, pos: int) -> tuple[tuple[int, bytes, str], int]:
    seq, pos = read_long(buf, pos)
    digest, pos = read_bytes(buf, pos, 8, "a pending event's digest")
    event_json, pos = read_string(buf, pos)
    return (seq, digest, event_json), pos


def _read_range(buf: bytes, pos: int) -> tuple[tuple[int, int], int]:
    first, pos = read_long(buf, pos)
    last, pos = read_long(buf, pos)
    return (first, last), pos


def decode_state(buf: bytes, pos: int) -> tuple[StateRecord, int]:
    """A ``runfold.RunState`` v2 record's values at ``buf[pos:]``, and its end."""
    run, pos = read_run_record(buf, pos)
    if len(run.run_id) != 36:
        raise ValueError("run_id is not 36 characters")
    last_seq, pos = read_long(buf, pos)
    counters, pos = _read_longs(buf, pos, _N_COUNTERS)
    violation_counts, pos = _read_longs(buf, pos, _N_KINDS)
    violations, pos = read_array(buf, pos, decode_violation)
    branch = buf[pos]
    if branch == 0:
        stalled_since, pos = None, pos + 1
    elif branch == 2:
        stalled_since, pos = read_long(buf, pos + 1)
    else:
        raise ValueError(f"stalled_since: union branch byte {branch}")
    source_offset, pos = read_long(buf, pos)
    flag = buf[pos]
    if flag > 1:
        raise ValueError(f"has_identity: boolean byte {flag}")
    stream_time, pos = read_long(buf, pos + 1)
    pending, pos = read_array(buf, pos, _read_pending)
    size, pos = read_long(buf, pos)
    window, pos = read_bytes(buf, pos, size, "digest_window")
    missing, pos = read_array(buf, pos, _read_range)
    record = _record(
        StateRecord,
        (
            run,
            last_seq,
            counters,
            violation_counts,
            violations,
            stalled_since,
            source_offset,
            flag == 1,
            stream_time,
            pending,
            window,
            missing,
        ),
    )
    return record, pos
