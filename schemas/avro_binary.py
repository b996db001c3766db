"""runfold's one Avro binary layer: the primitives and the record layouts it writes and reads.

Every byte of an Event, Run, Violation or RunState body that runfold writes without
fastavro is written here, and read here:

- the primitives: zigzag varint longs (:func:`write_long`, :func:`read_long`), strings,
  ``["null", T]`` unions, arrays (framing headers are :mod:`schemas.framing`'s);
- the record layouts, each for one exact schema version (pinned by fingerprint, see
  :data:`PINNED`): Event and its sixteen kind records (writers and readers generated
  from the kind models), Run, Violation and the ``runfold.RunState`` record (as plain
  values, :class:`StateRecord`; ``consumers`` maps it to and from its ``RunState``).

:data:`LAYOUTS` says field by field what the code here writes; ``tests/schemas/
test_avro_binary.py`` compares it with the parsed ``.avsc`` files, and other tests prove
the bytes equal fastavro's both ways. A schema whose fingerprint is not pinned goes
through fastavro instead (:mod:`schemas.codec`).

fastavro is generic: per record it walks the schema, builds a dict and, for ``kind``,
tries union branches. The functions here go straight between values and bytes, so the
codec costs about what bare fastavro costs on a dict.

Rust integer widths are enforced here: u32 fields outside 0..2**32-1 and u64 fields
below 0 are invalid values on decode; u64 values of 2**63 or more do not fit an Avro
``long`` and cannot be encoded (:class:`Overflow`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple
from uuid import UUID

from pydantic import BaseModel

from schemas import serde
from schemas.model import EVENT_KINDS, Event, Run, RunStatus, Timestamp, Violation, ViolationKind

__all__ = [
    "KIND_LAYOUTS",
    "KIND_WRITERS",
    "KIND_VALUE_WRITERS",
    "LAYOUTS",
    "PINNED",
    "U32_FIELDS",
    "RunRecord",
    "UUID_LENGTH",
    "Invalid",
    "Overflow",
    "StateRecord",
    "Truncated",
    "decode_event",
    "decode_run",
    "decode_state",
    "decode_violation",
    "encode_event",
    "encode_run",
    "encode_state",
    "encode_violation",
    "read_array",
    "read_branch",
    "read_long",
    "read_string",
    "read_string_array",
    "trusted",
    "write_long",
    "write_optional_string",
    "write_stamp",
    "write_string",
    "write_string_array",
]

PINNED = {
    "Event": bytes.fromhex("19288e22297b6b4d"),
    "Run": bytes.fromhex("90078ede1e1a3b9d"),
    "Violation": bytes.fromhex("64d95027253b61bb"),
    "RunState": bytes.fromhex("7feade7acdfc2988"),
}
"""The fingerprint of the schema version each layout here was written for."""

LAYOUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "Event": (
        ("run_id", "uuid"),
        ("seq", "long"),
        ("timestamp", "timestamp"),
        ("kind", "union<EventKind>"),
        ("payload", "string"),
    ),
    "Run": (
        ("run_id", "uuid"),
        ("agent_spec_digest", "string"),
        ("git_sha", "string"),
        ("started_at", "timestamp"),
        ("finished_at", "optional timestamp"),
        ("status", "enum RunStatus"),
        ("inputs", "string"),
        ("outputs", "optional string"),
        ("final_state_digest", "optional string"),
    ),
    "Violation": (
        ("run_id", "uuid"),
        ("kind", "enum ViolationKind"),
        ("first_seq", "long"),
        ("last_seq", "long"),
        ("message", "string"),
    ),
    "RunState": (
        ("run", "Run"),
        ("last_seq", "long"),
        ("counters", "RunCounters"),
        ("violation_counts", "ViolationCounts"),
        ("recent_violations", "array<Violation>"),
        ("restore", "RunStateRestore"),
    ),
    # Longs only, written in this order from StateRecord.counters.
    "RunCounters": tuple(
        (name, "long")
        for name in (
            "events_applied", "nodes_entered", "nodes_exited", "node_failures", "tool_calls",
            "tool_returns", "tool_failures", "retries", "checkpoints_saved",
            "checkpoints_restored", "checkpoints_deleted", "state_updates", "messages",
            "interrupts", "duplicates", "unverified_duplicates", "events_buffered",
            "violations_dropped", "missing_ranges_dropped",
        )
    ),
    "ViolationCounts": tuple((kind.value, "long") for kind in ViolationKind),
    "RunStateRestore": (
        ("source_offset", "long"),
        ("has_identity", "boolean"),
        ("stream_time", "timestamp"),
        ("pending", "array<PendingEvent>"),
        ("digest_window", "bytes"),
        ("missing", "array<SeqRange>"),
    ),
    "PendingEvent": (("seq", "long"), ("digest", "fixed 8"), ("event_json", "string")),
    "SeqRange": (("first_seq", "long"), ("last_seq", "long")),
}
"""Per record name, its fields in the order written here, as ``(name, type)``.

Types: ``long``, ``string``, ``boolean``, ``bytes``, ``fixed N``, ``uuid`` (a string),
``timestamp`` (a long of nanoseconds), ``optional T`` (``["null", T]``), ``enum E``,
``array<T>``, another record's name, and ``union<EventKind>`` for the kind records of
:data:`KIND_LAYOUTS`, branch by branch in ``EVENT_KINDS`` order."""

_LONG_MAX = 2**63 - 1
_U32_MAX = 2**32 - 1

U32_FIELDS = frozenset({"iterations", "iteration", "attempt"})
"""Kind fields that are a Rust u32 (the others of type long are u64)."""


class Overflow(ValueError):
    """An integer does not fit an Avro ``long``."""


class Truncated(ValueError):
    """The body ended before the record did."""


class Invalid(ValueError):
    """The body decodes, but to a value the model cannot hold (``field`` says which)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


# --- writing primitives ------------------------------------------------------------

_SMALL_LONGS = [bytes([(n << 1) if n >= 0 else ((-n << 1) - 1)]) for n in range(-64, 64)]


def _compile_varints() -> list[Callable[[int], bytes]]:
    """One unrolled varint writer per byte length (1..10), indexed by the zigzag bit length.

    A loop appending to a bytearray costs about twice a single ``bytes((...))``
    of precomputed shifts, and timestamps (9 bytes) are on every event.
    """
    writers: list[Callable[[int], bytes]] = []
    by_length: dict[int, Callable[[int], bytes]] = {}
    for length in range(1, 11):
        groups = [f"z >> {7 * i} & 127 | 128" for i in range(length - 1)]
        groups.append(f"z >> {7 * (length - 1)}")
        env: dict[str, Any] = {}
        exec(f"def write(z):\n    return bytes(({', '.join(groups)},))\n", env)  # noqa: S102
        by_length[length] = env["write"]
    for bits in range(65):
        writers.append(by_length[max(1, (bits + 6) // 7)])
    return writers


_VARINTS = _compile_varints()


def write_long(n: int) -> bytes:
    """The Avro ``long`` ``n`` (zigzag varint); :class:`Overflow` outside a signed 64 bits."""
    if -64 <= n < 64:
        return _SMALL_LONGS[n + 64]
    if n > _LONG_MAX or n < -_LONG_MAX - 1:
        raise Overflow(n)
    z = (n << 1) ^ (n >> 63)
    return _VARINTS[z.bit_length()](z)


def write_string(text: str) -> bytes:
    """The Avro ``string`` ``text``: its UTF-8 length, then the bytes."""
    data = text.encode()
    return write_long(len(data)) + data


def write_optional_string(text: str | None) -> bytes:
    """A ``["null", "string"]`` union."""
    return b"\x00" if text is None else b"\x02" + write_string(text)


def write_string_array(items: tuple[str, ...]) -> bytes:
    """An ``array<string>`` in one block."""
    if not items:
        return b"\x00"
    return write_long(len(items)) + b"".join(map(write_string, items)) + b"\x00"


UUID_LENGTH = b"\x48"
"""The varint length of a run_id string: zigzag(36), str(UUID) being 36 ASCII characters."""

LOW14 = [bytes((n & 127 | 128, n >> 7 | 128)) for n in range(1 << 14)]
"""The first two bytes of a varint longer than 2 bytes whose low 14 bits are ``n``."""
GROUP7 = [bytes((n | 128,)) for n in range(128)]
"""A middle byte of a varint: 7 bits and the continuation bit."""
NINE_BYTE_STAMPS = range(1 << 55, 1 << 62)
"""Timestamps (ns; 1971..2116) whose varint is 9 bytes, the ones :func:`write_stamp` splices.

Test with comparisons, not ``in``: for an int subclass such as Timestamp, range
membership walks the range item by item."""
_NINE_LOW, _NINE_HIGH = NINE_BYTE_STAMPS.start, NINE_BYTE_STAMPS.stop
_last_top: tuple[int, bytes] = (-1, b"")


def write_stamp(n: int) -> bytes:
    """:func:`write_long` for timestamps: the same bytes, cheaper for successive clock readings.

    A 9-byte varint (1971..2116 in ns) is 2 bytes from its low 14 bits, one of the
    next 7 and 6 of ``z >> 21``, which changes about once a millisecond and is kept
    from the call before (one tuple, so threads never mix two calls' halves).
    """
    global _last_top
    if not _NINE_LOW <= n < _NINE_HIGH:
        return write_long(n)
    z = n << 1
    top = z >> 21
    last, top_bytes = _last_top
    if top != last:
        top_bytes = _VARINTS[63](z)[3:]
        _last_top = (top, top_bytes)
    return b"".join((LOW14[z & 16383], GROUP7[z >> 14 & 127], top_bytes))


# --- reading primitives ------------------------------------------------------------


def _compile_read_long() -> Callable[[bytes, int], tuple[int, int]]:
    """The reader of an Avro ``long``, unrolled over the ten bytes a varint may take.

    A loop with a shift counter costs a fifth more on 9-byte timestamps.
    """
    lines = [
        "def read_long(buf, pos):",
        "    byte = buf[pos]",
        "    if byte < 0x80:",
        "        return (byte >> 1) ^ -(byte & 1), pos + 1",
        "    n = byte & 0x7F",
    ]
    for i in range(1, 10):
        lines.append(f"    byte = buf[pos + {i}]")
        lines.append(f"    n |= (byte & 0x7F) << {7 * i}")
        lines.append("    if byte < 0x80:")
        lines.append(f"        return (n >> 1) ^ -(n & 1), pos + {i + 1}")
    lines.append("    raise ValueError(\"a long's varint runs over 10 bytes\")")
    env: dict[str, Any] = {}
    exec(compile("\n".join(lines) + "\n", "<avro read_long>", "exec"), env)  # noqa: S102
    read: Callable[[bytes, int], tuple[int, int]] = env["read_long"]
    read.__doc__ = "The Avro ``long`` at ``buf[pos:]`` and the position after it."
    return read


read_long = _compile_read_long()


def read_string(buf: bytes, pos: int) -> tuple[str, int]:
    """The Avro ``string`` at ``buf[pos:]`` and the position after it."""
    size, pos = read_long(buf, pos)
    end = pos + size
    if size < 0:
        raise ValueError(f"negative string length {size}")
    if end > len(buf):
        raise Truncated(f"a string of {size} bytes runs past the end")
    return buf[pos:end].decode(), end


def read_bytes(buf: bytes, pos: int, size: int, what: str) -> tuple[bytes, int]:
    """``size`` raw bytes (a ``fixed``, or ``bytes`` after its length) at ``buf[pos:]``."""
    end = pos + size
    if size < 0:
        raise ValueError(f"{what}: negative length {size}")
    if end > len(buf):
        raise Truncated(f"{what}: {size} bytes run past the end")
    return buf[pos:end], end


def read_branch(buf: bytes, pos: int, field: str) -> bool:
    """Whether the ``["null", T]`` union at ``pos`` holds a value (branch byte 0 or 2)."""
    byte = buf[pos]
    if byte == 0:
        return False
    if byte == 2:
        return True
    raise ValueError(f"{field}: union branch byte {byte:#04x} is neither null (0) nor value (2)")


def read_array(
    buf: bytes, pos: int, item: Callable[[bytes, int], tuple[Any, int]]
) -> tuple[list[Any], int]:
    """An Avro array of ``item``s: blocks of a count (negative: followed by a byte size)."""
    items: list[Any] = []
    while True:
        count, pos = read_long(buf, pos)
        if count == 0:
            return items, pos
        if count < 0:  # a block with its byte size, which we do not need
            count = -count
            _, pos = read_long(buf, pos)
        for _ in range(count):
            element, pos = item(buf, pos)
            items.append(element)


def read_string_array(buf: bytes, pos: int) -> tuple[tuple[str, ...], int]:
    """An ``array<string>``, as a tuple."""
    items, pos = read_array(buf, pos, read_string)
    return tuple(items), pos


_set = object.__setattr__


@functools.lru_cache(maxsize=16_384)
def _cached_uuid(text: str) -> UUID:
    # A run's events share its run_id, so most lookups hit; a miss costs UUID(text).
    if len(text) != 36:
        raise ValueError("not 36 characters")
    return UUID(text)


def _uuid(text: str, field: str) -> UUID:
    try:
        return _cached_uuid(text)
    except ValueError:
        raise Invalid(field, f"{text!r} is not a hyphenated UUID") from None


def _json(text: str, field: str) -> Any:
    try:
        return serde.loads(text)
    except ValueError as exc:
        raise Invalid(field, f"not JSON as serde_json reads it: {exc}") from exc


# pydantic keeps these in slots; their descriptors set them faster than setattr.
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_new = object.__new__


def trusted(cls: type[Any], fields: dict[str, Any]) -> Any:
    """A model instance from already-valid ``fields`` (declaration order), skipping validation.

    What ``model_construct`` does, at a third of its cost: the Avro types and
    the checks here already guarantee what validation would.
    """
    obj = _new(cls)
    _set(obj, "__dict__", fields)
    _set_fields_set(obj, set(fields))
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


def _u64(value: int, field: str) -> int:
    if value < 0:
        raise Invalid(field, f"{value} is negative; a Rust u64 cannot hold it")
    return value


def _u32(value: int, field: str) -> int:
    if not 0 <= value <= _U32_MAX:
        raise Invalid(field, f"{value} is outside a Rust u32 (0..=4294967295)")
    return value


# --- the kind records, compiled once from the models -----------------------------------

_AVRO_TYPES: dict[Any, str] = {
    str: "string",
    int: "long",
    str | None: "optional string",
    tuple[str, ...]: "array<string>",
}
_WRITERS = {
    "string": "write_string",
    "long": "write_long",
    "optional string": "write_optional_string",
    "array<string>": "write_string_array",
}


def _kind_layout(cls: type[Any]) -> tuple[tuple[str, str], ...]:
    """The Avro fields of one EventKind record: its model fields but ``type``, in order."""
    fields = []
    for name, field in cls.model_fields.items():
        if name == "type":
            continue
        avro_type = _AVRO_TYPES.get(field.annotation)
        if avro_type is None:  # pragma: no cover - guarded by the tests over every variant
            raise TypeError(f"{cls.__name__}.{name}: no Avro mapping for {field.annotation!r}")
        fields.append((name, avro_type))
    return tuple(fields)


KIND_LAYOUTS: dict[type[Any], tuple[tuple[str, str], ...]] = {
    cls: _kind_layout(cls) for cls in EVENT_KINDS.values()
}
"""Kind class -> its record's fields as ``(name, type)`` (see :data:`LAYOUTS`), in union
branch order."""

_string_cached = functools.lru_cache(maxsize=8192)(write_string)
# Kind strings repeat (node, tool and role names): a cache hit costs a third of write_string.

_KIND_ENV: dict[str, Any] = {
    "write_long": write_long,
    "write_string": write_string,
    "write_optional_string": write_optional_string,
    "write_string_array": write_string_array,
    # The values writer sees the same strings again and again: it takes the cached writer.
    "write_string_cached": _string_cached,
    "read_long": read_long,
    "read_string": read_string,
    "read_string_array": read_string_array,
    "read_branch": read_branch,
    "_u32": _u32,
    "_u64": _u64,
    "trusted": trusted,
}


def _kind_writer(layout: tuple[tuple[str, str], ...], values: Callable[[str, int], str],
                 string: str = "write_string") -> str:
    """The body of a writer of one kind record: its branch, then each field by ``values``."""
    writers = {**_WRITERS, "string": string}
    writes = ["branch"] + [
        f"{writers[avro_type]}({values(name, position)})"
        for position, (name, avro_type) in enumerate(layout)
    ]
    return f"b''.join(({', '.join(writes)},))" if layout else "branch"


def _kind_reader(layout: tuple[tuple[str, str], ...]) -> list[str]:
    """The lines of a reader of one kind record's fields (after its branch)."""
    reads: list[str] = []
    for name, avro_type in layout:
        if avro_type == "string":
            reads.append(f"    {name}, pos = read_string(buf, pos)")
        elif avro_type == "long":
            width = "_u32" if name in U32_FIELDS else "_u64"
            reads.append(f"    {name}, pos = read_long(buf, pos)")
            reads.append(f"    {name} = {width}({name}, 'kind.{name}')")
        elif avro_type == "optional string":
            reads.append(f"    {name} = None")
            reads.append(f"    if read_branch(buf, pos, 'kind.{name}'):")
            reads.append(f"        {name}, pos = read_string(buf, pos + 1)")
            reads.append("    else:")
            reads.append("        pos += 1")
        else:
            reads.append(f"    {name}, pos = read_string_array(buf, pos)")
    return reads


def _compile_kind(cls: type[Any], index: int) -> tuple[Callable[..., bytes], ...]:
    """Writer (of the model), writer (of its field values) and reader of one kind record.

    Generated as Python source from :data:`KIND_LAYOUTS`; the values writer is for
    callers that hold values, not models (the fleet simulator).
    """
    layout = KIND_LAYOUTS[cls]
    values = [f"{name!r}: {name}" for name, _ in layout]
    values.insert(0, f"'type': {cls.model_fields['type'].default!r}")
    source = "\n".join(
        [
            "def write(kind):",
            "    d = kind.__dict__",
            f"    return {_kind_writer(layout, lambda name, _: f'd[{name!r}]')}",
            "def write_values(v):",
            "    return "
            + _kind_writer(layout, lambda _, position: f"v[{position}]", "write_string_cached"),
            "def read(buf, pos):",
            *_kind_reader(layout),
            f"    return trusted(cls, {{{', '.join(values)}}}), pos",
        ]
    )
    env = {**_KIND_ENV, "cls": cls, "branch": write_long(index)}
    exec(compile(source + "\n", f"<avro layout of {cls.__name__}>", "exec"), env)  # noqa: S102
    return env["write"], env["write_values"], env["read"]


KIND_WRITERS: dict[type[Any], Callable[..., bytes]] = {}
"""Kind class -> writer of its Avro record (union branch included) from the model."""
KIND_VALUE_WRITERS: dict[type[Any], Callable[[tuple[Any, ...]], bytes]] = {}
"""Kind class -> writer of its Avro record (union branch included) from its field values
in declaration order (no ``type``): the bytes the model's writer gives (a test compares)."""
_KIND_READERS: list[Callable[..., Any]] = []
for _index, _cls in enumerate(EVENT_KINDS.values()):
    _write, _write_values, _read = _compile_kind(_cls, _index)
    KIND_WRITERS[_cls] = _write
    KIND_VALUE_WRITERS[_cls] = _write_values
    _KIND_READERS.append(_read)

_STATUSES = list(RunStatus)
_STATUS_INDEX = {status: write_long(index) for index, status in enumerate(_STATUSES)}
_VIOLATION_KINDS = list(ViolationKind)
_VIOLATION_INDEX = {kind: write_long(index) for index, kind in enumerate(_VIOLATION_KINDS)}


# --- Event ---------------------------------------------------------------------------


def encode_event(event: Event, run_id: bytes | None = None) -> bytes:
    """The Avro body of ``event`` (Event.v1). Raises :class:`Overflow` for u64 >= 2**63.

    ``run_id``: ``str(event.run_id).encode()`` if the caller holds it already (a
    producer keys each record by it); it must be exactly that text.
    """
    d = event.__dict__
    kind = d["kind"]
    return b"".join(
        (
            UUID_LENGTH,
            str(d["run_id"]).encode() if run_id is None else run_id,
            write_long(d["seq"]),
            write_stamp(d["timestamp"]),
            KIND_WRITERS[type(kind)](kind),
            write_string(serde.dumps(d["payload"])),
        )
    )


def decode_event(buf: bytes, pos: int) -> tuple[Event, int]:
    """An Event from its Avro body (Event.v1) at ``buf[pos:]``; returns it and the end."""
    # Inlined common cases (a 36-character run_id, one-byte seq and union branch)
    # save a call each; anything else takes the general readers.
    if buf[pos] == 0x48 and pos + 37 <= len(buf):
        run_id = buf[pos + 1 : pos + 37].decode()
        pos += 37
    else:
        run_id, pos = read_string(buf, pos)
    byte = buf[pos]
    if byte < 0x80:
        seq = (byte >> 1) ^ -(byte & 1)
        pos += 1
    else:
        seq, pos = read_long(buf, pos)
    timestamp, pos = read_long(buf, pos)
    byte = buf[pos]
    if byte < 0x80 and not byte & 1 and byte >> 1 < len(_KIND_READERS):
        kind, pos = _KIND_READERS[byte >> 1](buf, pos + 1)
    else:
        branch, pos = read_long(buf, pos)
        raise ValueError(f"kind union branch {branch} is not one of the {len(_KIND_READERS)}")
    payload, pos = read_string(buf, pos)
    event: Event = trusted(
        Event,
        {
            "run_id": _uuid(run_id, "run_id"),
            "seq": _u64(seq, "seq"),
            "timestamp": Timestamp(timestamp),
            "kind": kind,
            "payload": _json(payload, "payload"),
        },
    )
    return event, pos


# --- Run -----------------------------------------------------------------------------


# _record(RunRecord, values): the NamedTuple without its Python-level __new__ (a third of
# the cost), on the per-state hot paths; ``values`` must be complete.
_record = tuple.__new__


class RunRecord(NamedTuple):
    """A ``runfold.Run`` record's values as they travel: run_id and JSON values as text
    (the ``run`` of a :class:`StateRecord`)."""

    run_id: str
    agent_spec_digest: str
    git_sha: str
    started_at: int
    finished_at: int | None
    status: RunStatus
    inputs: str
    outputs: str | None
    final_state_digest: str | None


def _write_run(
    run_id: str,
    agent_spec_digest: str,
    git_sha: str,
    started_at: int,
    finished_at: int | None,
    status: RunStatus,
    inputs: str,
    outputs: str | None,
    final_state_digest: str | None,
) -> bytes:
    """A ``runfold.Run`` record (alone, or inside a RunState) from its travelling values."""
    return b"".join(
        (
            UUID_LENGTH,
            run_id.encode(),
            write_string(agent_spec_digest),
            write_string(git_sha),
            write_long(started_at),
            b"\x00" if finished_at is None else b"\x02" + write_long(finished_at),
            _STATUS_INDEX[status],
            write_string(inputs),
            write_optional_string(outputs),
            write_optional_string(final_state_digest),
        )
    )


def _read_run(buf: bytes, pos: int) -> tuple[RunRecord, int]:
    """A ``runfold.Run`` record's travelling values at ``buf[pos:]``, and its end."""
    run_id, pos = read_string(buf, pos)
    agent_spec_digest, pos = read_string(buf, pos)
    git_sha, pos = read_string(buf, pos)
    started_at, pos = read_long(buf, pos)
    finished_at: int | None = None
    outputs: str | None = None
    final_state_digest: str | None = None
    if read_branch(buf, pos, "finished_at"):
        finished_at, pos = read_long(buf, pos + 1)
    else:
        pos += 1
    status_index, pos = read_long(buf, pos)
    if not 0 <= status_index < len(_STATUSES):
        raise ValueError(f"status enum index {status_index} is not one of {len(_STATUSES)}")
    inputs, pos = read_string(buf, pos)
    if read_branch(buf, pos, "outputs"):
        outputs, pos = read_string(buf, pos + 1)
    else:
        pos += 1
    if read_branch(buf, pos, "final_state_digest"):
        final_state_digest, pos = read_string(buf, pos + 1)
    else:
        pos += 1
    fields = _record(RunRecord, (
        run_id, agent_spec_digest, git_sha, started_at, finished_at, _STATUSES[status_index],
        inputs, outputs, final_state_digest,
    ))
    return fields, pos


def encode_run(run: Run) -> bytes:
    """The Avro body of ``run`` (Run.v1)."""
    d = run.__dict__
    outputs = d["outputs"]
    return _write_run(
        str(d["run_id"]),
        d["agent_spec_digest"],
        d["git_sha"],
        d["started_at"],
        d["finished_at"],
        d["status"],
        serde.dumps(d["inputs"]),
        None if outputs is None else serde.dumps(outputs),
        d["final_state_digest"],
    )


def decode_run(buf: bytes, pos: int) -> tuple[Run, int]:
    """A Run from its Avro body (Run.v1) at ``buf[pos:]``; returns it and the end."""
    f, pos = _read_run(buf, pos)
    run: Run = trusted(
        Run,
        {
            "run_id": _uuid(f.run_id, "run_id"),
            "agent_spec_digest": f.agent_spec_digest,
            "git_sha": f.git_sha,
            "started_at": Timestamp(f.started_at),
            "finished_at": None if f.finished_at is None else Timestamp(f.finished_at),
            "status": f.status,
            "inputs": _json(f.inputs, "inputs"),
            "outputs": None if f.outputs is None else _json(f.outputs, "outputs"),
            "final_state_digest": f.final_state_digest,
        },
    )
    return run, pos


# --- Violation -------------------------------------------------------------------------


def encode_violation(violation: Violation) -> bytes:
    """The Avro body of ``violation`` (Violation.v1)."""
    d = violation.__dict__
    return b"".join(
        (
            UUID_LENGTH,
            str(d["run_id"]).encode(),
            _VIOLATION_INDEX[d["kind"]],
            write_long(d["first_seq"]),
            write_long(d["last_seq"]),
            write_string(d["message"]),
        )
    )


def decode_violation(buf: bytes, pos: int) -> tuple[Violation, int]:
    """A Violation from its Avro body (Violation.v1) at ``buf[pos:]``; returns it and the end."""
    run_id, pos = read_string(buf, pos)
    kind_index, pos = read_long(buf, pos)
    if not 0 <= kind_index < len(_VIOLATION_KINDS):
        raise ValueError(f"kind enum index {kind_index} is not one of {len(_VIOLATION_KINDS)}")
    first_seq, pos = read_long(buf, pos)
    last_seq, pos = read_long(buf, pos)
    message, pos = read_string(buf, pos)
    violation: Violation = trusted(
        Violation,
        {
            "run_id": _uuid(run_id, "run_id"),
            "kind": _VIOLATION_KINDS[kind_index],
            "first_seq": _u64(first_seq, "first_seq"),
            "last_seq": _u64(last_seq, "last_seq"),
            "message": message,
        },
    )
    return violation, pos


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
    source_offset: int
    has_identity: bool
    stream_time: int
    pending: Sequence[tuple[int, bytes, str]]
    """``(seq, 8-byte digest, event JSON)`` per buffered event, by seq."""
    digest_window: bytes
    missing: Sequence[tuple[int, int]]
    """Declared-missing seq ranges ``(first, last)``."""


_N_COUNTERS = len(LAYOUTS["RunCounters"])
_N_KINDS = len(_VIOLATION_KINDS)


def _write_longs(values: Sequence[int]) -> bytes:
    return b"".join([_SMALL_LONGS[v + 64] if 0 <= v < 64 else write_long(v) for v in values])


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
    """The Avro body of a ``runfold.RunState`` v1 record. :class:`Overflow` for a long
    beyond 64 bits (the caller's general path then names the field)."""
    window = s.digest_window
    return b"".join(
        (
            _write_run(*s.run),
            write_long(s.last_seq),
            _write_longs(s.counters),
            _write_longs(s.violation_counts),
            _write_blocks(s.recent_violations, encode_violation),
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
    """A ``runfold.RunState`` v1 record's values at ``buf[pos:]``, and its end."""
    run, pos = _read_run(buf, pos)
    if len(run.run_id) != 36:
        raise ValueError("run_id is not 36 characters")
    last_seq, pos = read_long(buf, pos)
    counters, pos = _read_longs(buf, pos, _N_COUNTERS)
    violation_counts, pos = _read_longs(buf, pos, _N_KINDS)
    violations, pos = read_array(buf, pos, decode_violation)
    source_offset, pos = read_long(buf, pos)
    flag = buf[pos]
    if flag > 1:
        raise ValueError(f"has_identity: boolean byte {flag}")
    stream_time, pos = read_long(buf, pos + 1)
    pending, pos = read_array(buf, pos, _read_pending)
    size, pos = read_long(buf, pos)
    window, pos = read_bytes(buf, pos, size, "digest_window")
    missing, pos = read_array(buf, pos, _read_range)
    record = _record(StateRecord, (
        run, last_seq, counters, violation_counts, violations, source_offset, flag == 1,
        stream_time, pending, window, missing,
    ))
    return record, pos
