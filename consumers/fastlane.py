"""The fold's fast lane: the next event of a run under way, folded from its bytes.

Most records of ``agent-run-events`` are the next event of a run the service
already tracks, of a kind that only counts (``node_entered``, ``tool_called``,
... see :data:`~consumers.sequence.COUNTED_KINDS`). For those the fold reads
nothing but the seq, the timestamp and the kind's tag, so building the pydantic
:class:`~schemas.Event` (and its kind) only to drop it again was most of the
service's cost per record.

:func:`fast_lane` returns a function that takes such a record's bytes and, when
*every* condition below holds, validates the record as the codec would and
folds it into the run's state exactly as :func:`~consumers.sequence.apply_event`
would (given the body's :func:`~consumers.sequence.digest_bytes`), returning
True. Otherwise it changes nothing and returns False, and the service takes the
general path (decode, checks, :func:`~consumers.sequence.apply_event`), which
also produces the precise error of a bad record. Conditions:

- single-object framing of the Event schema version :mod:`schemas.fastpath` is
  pinned to, and that version is the codec's current one (so the general path
  would read it with the same code);
- its ``run_id`` bytes are the record key, and the key is the state's run id
  (the caller vouches for the latter);
- the run is RUNNING, has applied an event, buffers none, and the event's seq
  is ``last_seq + 1``; its offset is past the state's ``source_offset``;
- the kind is a counted one, its fields read as the codec reads them, the
  payload is JSON as :func:`schemas.serde.loads` reads it, and nothing follows.

Tests (``tests/consumers/test_fastlane.py``) fold the same records both ways
and compare states, outcomes and the bad records' fates.

:func:`batch_lane` is the same lane over a batch of consumed messages: it also
does the service's bookkeeping of a folded record (next offset, dirty run) and
stops at the first record that is not for the lane, so that the service folds that
one its general way and calls again after it (a run's records stay in order). It is
the C extension :mod:`consumers._fastlane` (built by ``pip install -e .`` when a
compiler is at hand; ``RUNFOLD_PURE_PYTHON=1`` turns it off) or, without it, a loop
over :func:`fast_lane` with the same call shape. The C lane is built from the tables
the Python lane is compiled from (:func:`_branch_table`), and refuses whatever it is
not sure of; ``tests/consumers/test_fastlane_batch.py`` folds the same streams and
damaged records through both and the general path.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Container
from typing import Any
from zlib import crc32

from consumers.sequence import COUNTED_KINDS
from consumers.state import RunState
from schemas import fastpath, serde
from schemas.framing import SINGLE_OBJECT_HEADER_SIZE, SINGLE_OBJECT_MAGIC
from schemas.model import EVENT_KINDS, RunStatus

__all__ = ["BatchLane", "FastLane", "batch_lane", "compiled_lane_available", "fast_lane"]

FastLane = Callable[[RunState, bytes, bytes, int], bool]
"""``(state, key, value, offset) -> folded``; see the module docstring."""

BatchLane = Callable[
    [
        list[Any],
        int,
        dict[int, dict[bytes, Any]],
        dict[int, set[bytes]],
        dict[int, int],
        Container[bytes],
    ],
    tuple[int, int],
]
"""``(msgs, start, runs_of, dirty_of, next_offsets, unchecked) -> (stop, folded)``.

Walks ``msgs[start:]`` (consumed messages, or anything with their five methods) in
order; folds each record the fast lane takes as the service would (the state, then
``next_offsets[partition] = offset + 1`` and the key added to ``dirty_of[partition]``,
a new set if there is none) and stops at the first it does not take (an error, no
state for the key, a key in ``unchecked``, any failed condition). ``stop`` is that
record's index (``len(msgs)`` when none), ``folded`` how many were folded."""

_RUNNING = RunStatus.RUNNING
_UUID_TEXT = 36
# Payload texts already parsed (``{}`` is half of all events): a bounded cache of a
# pure check, it changes no result, only the cost of parsing the same text again.
_PAYLOAD_CACHE_SIZE = 8192


_U32_MAX = 2**32 - 1


def _string_source(target: str, indent: str) -> list[str]:
    """Lines that check the string at ``pos`` (UTF-8, within the buffer) and move past it."""
    return [
        f"{indent}n = buf[pos]",
        f"{indent}if n < 0x80 and not n & 1:  # a length under 64: one byte",
        f"{indent}    end = pos + 1 + (n >> 1)",
        f"{indent}    if end > size:",
        f"{indent}        return -1",
        f"{indent}    buf[pos + 1 : end].decode()",
        f"{indent}    pos = end",
        f"{indent}else:",
        f"{indent}    {target}, pos = _read_string(buf, pos)",
    ]


# How each field of a kind's record is read (the C lane's field codes are the indexes).
_FIELD_READS = ("string", "u32", "u64", "optional string", "string array")


def _field_reads(cls: type[Any]) -> list[str]:
    """How :mod:`schemas.fastpath` reads each field of an EventKind record, in order.

    From the same field annotations the codec's readers are compiled from: UTF-8
    strings, u32 fields in range, u64 fields not negative, ``null`` or a string,
    string arrays. Both lanes are built from this list.
    """
    reads = []
    for name, field in cls.model_fields.items():
        if name == "type":
            continue
        annotation = field.annotation
        if annotation is str:
            reads.append("string")
        elif annotation is int:
            reads.append("u32" if name in fastpath._U32_FIELDS else "u64")
        elif annotation == str | None:
            reads.append("optional string")
        elif annotation == tuple[str, ...]:
            reads.append("string array")
        else:  # pragma: no cover - the tests cover every variant
            raise TypeError(f"{cls.__name__}.{name}: no scanner for {annotation!r}")
    return reads


def _compile_scanner(cls: type[Any]) -> Callable[[bytes, int, int], int]:
    """Check one EventKind record's fields as :mod:`schemas.fastpath` reads them.

    ``scan(buf, pos, size)`` returns the position after the fields, or -1 (or
    raises) where the codec's reader would fail; it builds no model.
    """
    lines = ["def scan(buf, pos, size):"]
    for read in _field_reads(cls):
        if read == "string":
            lines += _string_source("_", "    ")
        elif read in ("u32", "u64"):
            low_high = f"0 <= v <= {_U32_MAX}" if read == "u32" else "0 <= v"
            lines += [
                "    n = buf[pos]",
                "    if n < 0x80:",
                "        v = (n >> 1) ^ -(n & 1)",
                "        pos += 1",
                "    else:",
                "        v, pos = _read_long(buf, pos)",
                f"    if not {low_high}:",
                "        return -1",
            ]
        elif read == "optional string":
            lines += ["    n = buf[pos]", "    if n == 2:", "        pos += 1"]
            lines += _string_source("_", "        ")
            lines += ["    elif n == 0:", "        pos += 1", "    else:", "        return -1"]
        else:
            lines.append("    _, pos = _read_string_array(buf, pos)")
    lines.append("    return pos")
    env: dict[str, Any] = {
        "_read_long": fastpath._read_long,
        "_read_string": fastpath._read_string,
        "_read_string_array": fastpath._read_string_array,
    }
    exec(compile("\n".join(lines) + "\n", f"<fast lane scan of {cls.__name__}>", "exec"), env)  # noqa: S102
    scan: Callable[[bytes, int, int], int] = env["scan"]
    return scan


_Scan = Callable[[bytes, int, int], int]
_Bump = Callable[[RunState], None]


def _compile_lanes() -> list[tuple[_Scan, _Bump] | None]:
    """Per union branch of ``kind``: (its scanner, ``state.<counter> += 1``), or None."""
    lanes: list[tuple[_Scan, _Bump] | None] = []
    for tag, cls in EVENT_KINDS.items():
        counter = COUNTED_KINDS.get(tag)
        if counter is None:
            lanes.append(None)
            continue
        env: dict[str, Callable[[RunState], None]] = {}
        exec(f"def bump(state):\n    state.{counter} += 1\n", env)  # noqa: S102
        lanes.append((_compile_scanner(cls), env["bump"]))
    return lanes


def fast_lane() -> FastLane | None:
    """The fast lane for the codec's current Event version, or None if it has none.

    None when the current Event schema is not the one :mod:`schemas.fastpath` was
    written for: then the general path reads records with fastavro, and only it may.
    """
    from schemas.codec import EventCodec

    fingerprint = fastpath.PINNED["Event"]
    if EventCodec().current.fingerprint != fingerprint:
        return None
    prefix = SINGLE_OBJECT_MAGIC + fingerprint + b"\x48"  # then the 36-byte run_id
    start = len(prefix) + _UUID_TEXT
    header = SINGLE_OBJECT_HEADER_SIZE
    after_prefix = len(prefix)
    lanes = _compile_lanes()
    branch_bytes = 2 * len(lanes)  # zigzag: branch b is the byte 2b
    read_long = fastpath._read_long
    loads = serde.loads
    payloads: dict[bytes, None] = {}

    def fold(state: RunState, key: bytes, value: bytes, offset: int) -> bool:
        if (
            state.pending_events
            or state.status is not _RUNNING
            or not state.events_applied
            or state.source_offset >= offset
            or not value.startswith(prefix)
            or len(key) != _UUID_TEXT
            or not value.startswith(key, after_prefix)
        ):
            return False
        try:
            # Varints are unrolled for their usual lengths: a call costs more than the
            # arithmetic (seq: one or two bytes; the payload's length: one).
            byte = value[start]
            if byte < 0x80:
                seq = (byte >> 1) ^ -(byte & 1)
                pos = start + 1
            elif value[start + 1] < 0x80:
                seq = (byte & 0x7F) | (value[start + 1] << 7)
                seq = (seq >> 1) ^ -(seq & 1)
                pos = start + 2
            else:
                seq, pos = read_long(value, start)
            if seq != state.last_seq + 1:
                return False
            timestamp, pos = read_long(value, pos)
            byte = value[pos]
            if byte & 1 or byte >= branch_bytes:
                return False
            lane = lanes[byte >> 1]
            if lane is None:
                return False
            total = len(value)
            pos = lane[0](value, pos + 1, total)
            if pos < 0:
                return False
            byte = value[pos]
            if byte < 0x80:
                size = (byte >> 1) ^ -(byte & 1)
                pos += 1
            else:
                size, pos = read_long(value, pos)
            if size < 0 or pos + size != total:
                return False
            payload = value[pos:]
            if payload not in payloads:
                loads(payload.decode())
                if len(payloads) >= _PAYLOAD_CACHE_SIZE:
                    payloads.clear()
                payloads[payload] = None
        except Exception:  # noqa: BLE001 - any doubt: the general path decides, precisely
            return False
        # What apply_event's common case does (consumers.sequence._step), then the
        # service's set_source_offset. The digest is digest_bytes(body), inlined.
        if timestamp > state.stream_time:
            state.stream_time = timestamp
        state.last_seq = seq
        digests = state.digests
        digests[seq % len(digests)] = ((total - header) & 0xFFFFFFFF) << 32 | crc32(
            value[header:]
        ) or 1
        state.events_applied += 1
        lane[1](state)
        state.source_offset = offset
        return True

    return fold


def _python_batch(fold: FastLane) -> BatchLane:
    """:data:`BatchLane` over the Python lane: the service's loop, up to a record it refuses."""

    def fold_batch(
        msgs: list[Any],
        start: int,
        runs_of: dict[int, dict[bytes, Any]],
        dirty_of: dict[int, set[bytes]],
        next_offsets: dict[int, int],
        unchecked: Container[bytes],
    ) -> tuple[int, int]:
        for index in range(start, len(msgs)):
            msg = msgs[index]
            if msg.error() is not None:
                return index, index - start
            partition = msg.partition()
            runs = runs_of.get(partition)
            key = msg.key()
            if runs is None or key is None:
                return index, index - start
            state = runs.get(key)
            value = msg.value()
            offset = msg.offset()
            if (
                state is None
                or value is None
                or offset is None
                or key in unchecked
                or not fold(state, key, value, offset)
            ):
                return index, index - start
            next_offsets[partition] = offset + 1
            dirty = dirty_of.get(partition)
            if dirty is None:
                dirty = dirty_of[partition] = set()
            dirty.add(key)
        return len(msgs), max(len(msgs) - start, 0)

    return fold_batch


def _branch_table() -> list[tuple[str, bytes] | None]:
    """Per union branch of ``kind``: (counter, field read codes) for the C lane, or None."""
    table: list[tuple[str, bytes] | None] = []
    for tag, cls in EVENT_KINDS.items():
        counter = COUNTED_KINDS.get(tag)
        reads = _field_reads(cls)
        codes = bytes(_FIELD_READS.index(read) for read in reads)
        table.append(None if counter is None else (counter, codes))
    return table


def _compiled_module() -> Any | None:
    """:mod:`consumers._fastlane` if it was built and is not turned off, else None."""
    if os.environ.get("RUNFOLD_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        return importlib.import_module("consumers._fastlane")
    except ImportError:
        return None


def compiled_lane_available() -> bool:
    """Whether :func:`batch_lane` gives the C lane (built, and not turned off)."""
    return _compiled_module() is not None


def batch_lane(*, compiled: bool | None = None) -> BatchLane | None:
    """The fast lane over a batch of messages (:data:`BatchLane`), or None if it has none.

    ``compiled``: None takes the C lane when :func:`compiled_lane_available`, else the
    Python one; True insists on C (ImportError without it); False takes Python.
    None for the same reason :func:`fast_lane` is None.
    """
    fold = fast_lane()
    if fold is None:
        return None
    module = _compiled_module() if compiled is not False else None
    if module is None:
        if compiled:
            raise ImportError(
                "consumers._fastlane is not built (or RUNFOLD_PURE_PYTHON is set); "
                "run `pip install -e .` with a C compiler and zlib's headers"
            )
        return _python_batch(fold)
    lane = module.Lane(
        prefix=SINGLE_OBJECT_MAGIC + fastpath.PINNED["Event"] + b"\x48",
        header=SINGLE_OBJECT_HEADER_SIZE,
        branches=_branch_table(),
        running=_RUNNING,
        loads=serde.loads,
        state_type=RunState,
        cache_size=_PAYLOAD_CACHE_SIZE,
    )
    compiled_batch: BatchLane = lane.fold_batch
    return compiled_batch
