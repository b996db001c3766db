"""RunState straight to and from its Avro bytes (``runfold.RunState`` v2, single-object),
and to and from its ``agent-runs`` record (``runfold.RunSummary`` v1).

The general codec path builds the record dict (:mod:`consumers.state_codec`) and has
fastavro walk the schema: about 80 µs per state each way, paid for every run a
transaction changed and for every run restored on assignment. These functions write
and read the same bytes with :mod:`schemas.avro_binary`, for the one schema version it
was written for (pinned by fingerprint). The service uses them through
:meth:`~consumers.service.edge.FoldEdge.default`, falling back to the general path whenever
they decline (another version, another framing) or fail (a value out of range,
damaged bytes), so that errors keep their precise messages.

Tests (``tests/consumers/test_state_bytes.py``) check the bytes equal fastavro's and
the states equal :func:`~consumers.state_codec.from_record`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import NamedTuple
from uuid import UUID

from consumers.lifecycle import Marker
from consumers.state import DEFAULT_CONFIG, FoldConfig, RunState
from consumers.state_codec import (
    from_values,
    oldest_pending,
    summary_from_values,
    to_values,
)
from schemas import RunStatus
from schemas.avro_binary import (
    PINNED,
    UUID_LENGTH,
    MarkerRecord,
    decode_marker,
    decode_state,
    decode_summary,
    encode_marker,
    encode_state,
    encode_state_and_summary,
    holds_pending,
    read_long,
    read_run_times,
    uuid_from,
)
from schemas.framing import SINGLE_OBJECT_MAGIC

__all__ = [
    "MARKER_HEADER",
    "PACKED_STATES",
    "PINNED_RUN_STATE",
    "PINNED_RUN_SUMMARY",
    "outputs_writer",
    "pack_stored",
    "PackedHead",
    "packed_head",
    "read_marker",
    "state_reader",
    "state_writer",
    "summary_reader",
    "unpack_stored",
    "write_marker",
]

PINNED_RUN_STATE = PINNED["RunState"]
"""Fingerprint of the ``runfold.RunState`` version written and read here (v2)."""

PINNED_RUN_SUMMARY = PINNED["RunSummary"]
"""Fingerprint of the ``runfold.RunSummary`` version written and read here (v1)."""

_HEADER = SINGLE_OBJECT_MAGIC + PINNED_RUN_STATE
_SUMMARY_HEADER = SINGLE_OBJECT_MAGIC + PINNED_RUN_SUMMARY
MARKER_HEADER = SINGLE_OBJECT_MAGIC + PINNED["RunMarker"]
"""How a ``runfold.RunMarker`` v1 record (a finished run's marker) starts."""
_STATUSES = tuple(RunStatus)
_STATUS_INDEX = {status: index for index, status in enumerate(_STATUSES)}


def _schemas_pinned() -> bool:
    """True when the current RunState, Run and Violation are the versions written for."""
    from schemas.codec import RecordCodec

    catalog = RecordCodec("RunState").catalog
    return all(
        catalog.current(name).fingerprint == PINNED[name]
        for name in ("RunState", "RunSummary", "Run", "Violation")
    )


def state_writer() -> Callable[[RunState], bytes] | None:
    """``state -> bytes`` equal to ``encode_record("RunState", to_record(state))``.

    None when the schemas are not the pinned versions. The function raises (any
    exception) where it cannot write a state; the caller then takes the general path.
    """
    if not _schemas_pinned():
        return None

    def write(state: RunState) -> bytes:
        return _HEADER + encode_state(to_values(state))

    return write


def outputs_writer() -> Callable[[RunState], tuple[bytes, bytes]] | None:
    """``state -> (changelog bytes, agent-runs bytes)``: ``state_writer()(state)`` and the
    bytes of ``encode_record("RunSummary", summary_to_record(state))``, the fields they
    share written once. None and raising as :func:`state_writer`."""
    if not _schemas_pinned():
        return None

    def write(state: RunState) -> tuple[bytes, bytes]:
        changelog, summary = encode_state_and_summary(to_values(state), oldest_pending(state))
        return _HEADER + changelog, _SUMMARY_HEADER + summary

    return write


def summary_reader(
    config: FoldConfig = DEFAULT_CONFIG,
) -> Callable[[bytes], tuple[RunState, int, int | None] | None] | None:
    """``bytes -> (state, pending, oldest_pending_at)`` of a ``runfold.RunSummary``, equal
    to ``summary_from_record(decode_record("RunSummary", bytes), config)``. None, None
    returned and raising as :func:`state_reader`."""
    if not _schemas_pinned():
        return None
    start = len(_SUMMARY_HEADER)

    def read(value: bytes) -> tuple[RunState, int, int | None] | None:
        if not value.startswith(_SUMMARY_HEADER):
            return None
        values, end = decode_summary(value, start)
        if end != len(value):
            raise ValueError("bytes left after the record")
        return summary_from_values(values, config)

    return read


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
    start = len(_HEADER)

    def read(value: bytes) -> RunState | None:
        if not value.startswith(_HEADER):
            return None
        values, end = decode_state(value, start)
        if end != len(value):
            raise ValueError("bytes left after the record")
        return from_values(values, config)

    return read


# --- restored states held as bytes until their run is touched -----------------------------
#
# A service restores every run of its partitions but folds events of few of them soon;
# it keeps the others as bytes (consumers.service). pack_stored makes those bytes smaller
# in a way unpack_stored undoes exactly, for any bytes whatsoever (a first byte says
# which form follows). For a pinned-version state stored under its own run_id:
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
_ID_PREFIX = _HEADER + UUID_LENGTH
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


class PackedHead(NamedTuple):
    """What :func:`packed_head` reads of a packed state without decoding it."""

    started_at: int
    finished_at: int | None
    """None while the run is RUNNING (its start, if it ended with no terminal event)."""
    status: RunStatus
    last_seq: int
    last_digest: int | None
    """The digest of the event at ``last_seq`` (0: not known); None when this form does
    not give it without a decode (a ring shorter than 64 slots: a short run's)."""
    buffering: bool | None
    """Whether a RUNNING run's state holds buffered events (its reorder buffer is not
    empty); None for a finished run (not read) or when the fields before it do not read."""


def packed_head(key: bytes, packed: bytes) -> PackedHead | None:
    """The head of the run state in a :func:`pack_stored` value, or None when the value
    is not a packed pinned state or its head does not read. Reads the ``Run`` record's
    times and status (:func:`~schemas.avro_binary.read_run_times`, its strings skipped)
    and ``last_seq`` only, the digest at ``last_seq`` from the digest planes of the
    short-window form, and for a RUNNING run whether its reorder buffer holds events: a
    few µs, so that the store finds the restored finished runs, the runs with buffered
    events and a lower bound of the partition's clock, a finished run never touched
    becomes a marker, and the stall watch reads a status, without decoding the state (a
    deployment upgraded to the lifecycle has nothing but whole states of finished runs).
    A state damaged in its head is left to the decode, which says what is wrong when its
    run is touched."""
    if packed[:1] not in PACKED_STATES:
        return None
    buf = b"".join((UUID_LENGTH, key, packed[1:]))  # the Run record, run_id in front again
    try:
        started_at, finished_at, status, pos = read_run_times(buf, 0)
        last_seq, pos = read_long(buf, pos)
    except (IndexError, ValueError):
        return None
    if pos > len(buf) or last_seq < 0:
        return None
    digest = None
    if packed[:1] == _NO_ID_SHORT_WINDOW:
        planes = packed[-_KEPT_SIZE:]
        slot, step = last_seq % (_WINDOW // 8), _WINDOW // 8
        digest = int.from_bytes(bytes(planes[b * step + slot] for b in range(_KEPT)), "little")
    buffering = None
    if status is RunStatus.RUNNING:
        finished_at = None
        with suppress(IndexError, ValueError):  # left to the decode, which says what is wrong
            buffering = holds_pending(buf, pos)
    elif finished_at is None:
        finished_at = started_at
    return PackedHead(started_at, finished_at, status, last_seq, digest, buffering)


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


# --- a finished run's marker ---------------------------------------------------------------


def write_marker(run_id: UUID, marker: Marker) -> bytes:
    """The ``runfold.RunMarker`` record of ``marker`` (single-object); raises
    :class:`~schemas.avro_binary.Overflow` for a ``last_seq`` of 2**63 or more."""
    record = MarkerRecord(
        str(run_id),
        marker.last_seq,
        _STATUS_INDEX[marker.status],
        marker.finished_at,
        marker.digest,
    )
    return MARKER_HEADER + encode_marker(record)


def read_marker(value: bytes) -> tuple[UUID, Marker]:
    """The run id and marker in a record :func:`write_marker` wrote; raises on any other
    bytes (another schema, damage, bytes left over)."""
    if not value.startswith(MARKER_HEADER):
        raise ValueError("not a runfold.RunMarker v1 record")
    record, end = decode_marker(value, len(MARKER_HEADER))
    if end != len(value):
        raise ValueError("bytes left after the RunMarker record")
    status = _STATUSES[record.status]
    if status is RunStatus.RUNNING:
        raise ValueError("a RunMarker of a RUNNING run")
    marker = Marker(record.last_seq, status, record.finished_at, record.last_digest)
    return uuid_from(record.run_id, "run_id"), marker
