"""The ``runfold.RunState`` record's layout (v2), as plain values: :class:`StateRecord`;
and the ``runfold.RunSummary`` record's (v1): :class:`SummaryRecord`.

``consumers`` maps its ``RunState`` to and from these values
(``consumers.state_codec``); the bytes are written and read here only. The ``run``
part is a ``runfold.Run`` record, written by the same functions as a Run message.

A RunSummary (``agent-runs``) starts with RunState's first six fields (``run`` ..
``stalled_since``), written and read by the same functions (:func:`_write_head`,
:func:`_read_head`); it ends with how many events wait in the reorder buffer and the
oldest one's timestamp instead of RunState's ``restore`` part.
"""

from __future__ import annotations

import re
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

__all__ = [
    "StateRecord",
    "SummaryRecord",
    "decode_state",
    "decode_summary",
    "encode_state",
    "encode_state_and_summary",
    "encode_summary",
    "holds_pending",
]

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


class SummaryRecord(NamedTuple):
    """A ``runfold.RunSummary`` record's values, in the schema's order: a
    :class:`StateRecord`'s first six, then the reorder buffer counted."""

    run: RunRecord
    last_seq: int
    counters: Sequence[int]
    """In ``LAYOUTS["RunCounters"]`` order."""
    violation_counts: Sequence[int]
    """In ``ViolationKind`` order."""
    recent_violations: Sequence[Violation]
    stalled_since: int | None
    pending: int
    """Events held in the reorder buffer."""
    oldest_pending_at: int | None
    """Timestamp (ns) of the oldest of them; None when none is held."""


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


def _write_optional_long(value: int | None) -> bytes:
    return b"\x00" if value is None else b"\x02" + write_long(value)


def _write_head(s: StateRecord) -> bytes:
    """The fields RunState and RunSummary share, ``run`` .. ``stalled_since``."""
    return b"".join(
        (
            write_run_record(*s.run),
            write_long(s.last_seq),
            _write_longs(s.counters),
            _write_longs(s.violation_counts),
            _write_blocks(s.recent_violations, encode_violation),
            _write_optional_long(s.stalled_since),
        )
    )


def encode_state(s: StateRecord) -> bytes:
    """The Avro body of a ``runfold.RunState`` v2 record. :class:`Overflow` for a long
    beyond 64 bits (the caller's general path then names the field)."""
    return _write_head(s) + _write_restore(s)


def encode_summary(s: StateRecord, oldest_pending_at: int | None) -> bytes:
    """The Avro body of the ``runfold.RunSummary`` v1 record of the state ``s`` (its
    ``pending`` is only counted), the oldest buffered event's timestamp given."""
    return _write_head(s) + _write_summary_tail(len(s.pending), oldest_pending_at)


def encode_state_and_summary(s: StateRecord, oldest_pending_at: int | None) -> tuple[bytes, bytes]:
    """``(encode_state(s), encode_summary(s, oldest_pending_at))``, the shared fields
    written once: the service writes both records of every changed run."""
    head = _write_head(s)
    return head + _write_restore(s), head + _write_summary_tail(len(s.pending), oldest_pending_at)


def _write_summary_tail(pending: int, oldest_pending_at: int | None) -> bytes:
    return write_long(pending) + _write_optional_long(oldest_pending_at)


def _write_restore(s: StateRecord) -> bytes:
    """RunState's ``restore`` part."""
    window = s.digest_window
    return b"".join(
        (
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


def _read_optional_long(buf: bytes, pos: int, what: str) -> tuple[int | None, int]:
    branch = buf[pos]
    if branch == 0:
        return None, pos + 1
    if branch == 2:
        return read_long(buf, pos + 1)
    raise ValueError(f"{what}: union branch byte {branch}")


def _read_head(buf: bytes, pos: int) -> tuple[tuple[Any, ...], int]:
    """The fields RunState and RunSummary share, ``run`` .. ``stalled_since``."""
    run, pos = read_run_record(buf, pos)
    if len(run.run_id) != 36:
        raise ValueError("run_id is not 36 characters")
    last_seq, pos = read_long(buf, pos)
    counters, pos = _read_longs(buf, pos, _N_COUNTERS)
    violation_counts, pos = _read_longs(buf, pos, _N_KINDS)
    violations, pos = read_array(buf, pos, decode_violation)
    stalled_since, pos = _read_optional_long(buf, pos, "stalled_since")
    return (run, last_seq, counters, violation_counts, violations, stalled_since), pos


_SKIP_COUNTS = re.compile(rb"(?:[\x80-\xff]*[\x00-\x7f]){%d}" % (_N_COUNTERS + _N_KINDS), re.S)
"""The counters and violation counts, skipped: as many longs, each up to a byte < 0x80."""


def holds_pending(buf: bytes, pos: int) -> bool:
    """Whether the ``runfold.RunState`` v2 record whose ``last_seq`` ends at ``buf[pos]``
    holds buffered events (``restore.pending`` not empty), reading only the fields between:
    the counts, the recent violations (decoded: none in most runs), ``stalled_since``,
    ``source_offset``, ``has_identity`` and ``stream_time``."""
    counts = _SKIP_COUNTS.match(buf, pos)
    if counts is None:
        raise ValueError("the counts end early")
    _, pos = read_array(buf, counts.end(), decode_violation)
    _, pos = _read_optional_long(buf, pos, "stalled_since")
    _, pos = read_long(buf, pos)  # source_offset
    _, pos = read_long(buf, pos + 1)  # has_identity (one byte), stream_time
    count, _ = read_long(buf, pos)
    return count != 0


def decode_summary(buf: bytes, pos: int) -> tuple[SummaryRecord, int]:
    """A ``runfold.RunSummary`` v1 record's values at ``buf[pos:]``, and its end."""
    head, pos = _read_head(buf, pos)
    pending, pos = read_long(buf, pos)
    if pending < 0:
        raise ValueError(f"pending: {pending} is negative")
    oldest, pos = _read_optional_long(buf, pos, "oldest_pending_at")
    return _record(SummaryRecord, (*head, pending, oldest)), pos


def decode_state(buf: bytes, pos: int) -> tuple[StateRecord, int]:
    """A ``runfold.RunState`` v2 record's values at ``buf[pos:]``, and its end."""
    head, pos = _read_head(buf, pos)
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
            *head,
            source_offset,
            flag == 1,
            stream_time,
            pending,
            window,
            missing,
        ),
    )
    return record, pos
