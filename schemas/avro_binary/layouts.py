"""The record layouts runfold writes and reads without fastavro, one schema version each.

Event and its sixteen kind records (writers and readers generated from the kind
models, :data:`KIND_LAYOUTS`), Run and Violation; the ``runfold.RunState`` record is
:mod:`schemas.avro_binary.state`'s. :data:`LAYOUTS` says field by field what is
written; ``tests/schemas/test_avro_binary.py`` compares it with the ``.avsc`` files.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

from schemas import serde
from schemas.avro_binary.primitives import (
    UUID_LENGTH,
    Overlong,
    json_from,
    read_branch,
    read_long,
    read_string,
    read_string_array,
    seq_from,
    skip_string,
    trusted,
    u32,
    u64,
    utf8_from,
    uuid_from,
    write_long,
    write_optional_string,
    write_stamp,
    write_string,
    write_string_array,
)
from schemas.model import EVENT_KINDS, Event, Run, RunStatus, Timestamp, Violation, ViolationKind

__all__ = [
    "KIND_LAYOUTS",
    "KIND_VALUE_WRITERS",
    "KIND_WRITERS",
    "LAYOUTS",
    "PINNED",
    "U32_FIELDS",
    "RunRecord",
    "decode_event",
    "decode_run",
    "decode_violation",
    "read_run_record",
    "read_run_times",
    "write_run_record",
    "encode_event",
    "encode_run",
    "encode_violation",
]

PINNED = {
    "Event": bytes.fromhex("19288e22297b6b4d"),
    "Run": bytes.fromhex("90078ede1e1a3b9d"),
    "Violation": bytes.fromhex("b1256782d133d134"),
    "RunState": bytes.fromhex("a6fa370631057283"),
    "RunSummary": bytes.fromhex("83cfc622a8f13a30"),
    "RunMarker": bytes.fromhex("a386565503b61fec"),
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
        ("stalled_since", "optional timestamp"),
        ("restore", "RunStateRestore"),
    ),
    # Longs only, written in this order from StateRecord.counters.
    "RunCounters": tuple(
        (name, "long")
        for name in (
            "events_applied",
            "nodes_entered",
            "nodes_exited",
            "node_failures",
            "tool_calls",
            "tool_returns",
            "tool_failures",
            "retries",
            "checkpoints_saved",
            "checkpoints_restored",
            "checkpoints_deleted",
            "state_updates",
            "messages",
            "interrupts",
            "duplicates",
            "unverified_duplicates",
            "events_buffered",
            "violations_dropped",
            "missing_ranges_dropped",
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
    # RunState's first six fields, then the reorder buffer counted (state.SummaryRecord).
    "RunSummary": (
        ("run", "Run"),
        ("last_seq", "long"),
        ("counters", "RunCounters"),
        ("violation_counts", "ViolationCounts"),
        ("recent_violations", "array<Violation>"),
        ("stalled_since", "optional timestamp"),
        ("pending", "long"),
        ("oldest_pending_at", "optional timestamp"),
    ),
    "SeqRange": (("first_seq", "long"), ("last_seq", "long")),
    "RunMarker": (
        ("run_id", "uuid"),
        ("last_seq", "long"),
        ("status", "enum RunStatus"),
        ("finished_at", "timestamp"),
        ("last_digest", "fixed 8"),
    ),
}
"""Per record name, its fields in the order written here, as ``(name, type)``.

Types: ``long``, ``string``, ``boolean``, ``bytes``, ``fixed N``, ``uuid`` (a string),
``timestamp`` (a long of nanoseconds), ``optional T`` (``["null", T]``), ``enum E``,
``array<T>``, another record's name, and ``union<EventKind>`` for the kind records of
:data:`KIND_LAYOUTS`, branch by branch in ``EVENT_KINDS`` order."""


U32_FIELDS = frozenset({"iterations", "iteration", "attempt"})
"""Kind fields that are a Rust u32 (the others of type long are u64)."""


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
    "u32": u32,
    "u64": u64,
    "trusted": trusted,
}


def _kind_writer(
    layout: tuple[tuple[str, str], ...],
    values: Callable[[str, int], str],
    string: str = "write_string",
) -> str:
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
            width = "u32" if name in U32_FIELDS else "u64"
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
    """An Event from its Avro body (Event.v1) at ``buf[pos:]``; returns it and the end.

    Refuses (:class:`Invalid`, :class:`Overlong`, :class:`Truncated`, ValueError) what no
    Rust agent could have written: a run_id that is not a UUID, a seq outside
    1 ..= 2**63 - 1, a seq or timestamp varint past 64 bits (every i64 of nanoseconds is
    an instant chrono's ``DateTime<Utc>`` holds), a string that is not UTF-8, a payload
    serde_json would not read (not JSON, nested deeper than 128).
    """
    # Inlined common cases (a 36-character run_id, one-byte seq and union branch)
    # save a call each; anything else takes the general readers.
    if buf[pos] == 0x48 and pos + 37 <= len(buf):
        try:
            run_id = buf[pos + 1 : pos + 37].decode()
        except UnicodeDecodeError:
            utf8_from(buf[pos + 1 : pos + 37], pos + 1)  # raises, saying where
            raise
        pos += 37
    else:
        run_id, pos = read_string(buf, pos)
    byte = buf[pos]
    try:
        if byte < 0x80:
            seq = (byte >> 1) ^ -(byte & 1)
            pos += 1
        else:
            seq, pos = read_long(buf, pos)
    except Overlong as exc:
        raise Overlong(f"seq: {exc}") from None
    try:
        timestamp, pos = read_long(buf, pos)
    except Overlong as exc:
        raise Overlong(f"timestamp: {exc}") from None
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
            "run_id": uuid_from(run_id, "run_id"),
            "seq": seq_from(seq),
            "timestamp": Timestamp(timestamp),
            "kind": kind,
            "payload": json_from(payload, "payload"),
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


def write_run_record(
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


def read_run_record(buf: bytes, pos: int) -> tuple[RunRecord, int]:
    """A ``runfold.Run`` record's travelling values at ``buf[pos:]``, and its end."""
    run_id, pos = read_string(buf, pos)
    agent_spec_digest, pos = read_string(buf, pos)
    git_sha, pos = read_string(buf, pos)
    started_at, finished_at, status, pos = _read_times(buf, pos)
    outputs: str | None = None
    final_state_digest: str | None = None
    inputs, pos = read_string(buf, pos)
    if read_branch(buf, pos, "outputs"):
        outputs, pos = read_string(buf, pos + 1)
    else:
        pos += 1
    if read_branch(buf, pos, "final_state_digest"):
        final_state_digest, pos = read_string(buf, pos + 1)
    else:
        pos += 1
    fields = _record(
        RunRecord,
        (
            run_id,
            agent_spec_digest,
            git_sha,
            started_at,
            finished_at,
            status,
            inputs,
            outputs,
            final_state_digest,
        ),
    )
    return fields, pos


def read_run_times(buf: bytes, pos: int) -> tuple[int, int | None, RunStatus, int]:
    """``started_at``, ``finished_at`` and ``status`` of the ``runfold.Run`` record at
    ``buf[pos:]``, and its end: what :func:`read_run_record` reads of them, its strings
    skipped, not decoded (a restore reads these three of every stored state; a third of
    the cost). The strings' bytes are checked when the record is read whole."""
    pos = skip_string(buf, skip_string(buf, skip_string(buf, pos)))
    started_at, finished_at, status, pos = _read_times(buf, pos)
    pos = skip_string(buf, pos)
    for field in ("outputs", "final_state_digest"):
        pos = skip_string(buf, pos + 1) if read_branch(buf, pos, field) else pos + 1
    return started_at, finished_at, status, pos


def _read_times(buf: bytes, pos: int) -> tuple[int, int | None, RunStatus, int]:
    """A ``runfold.Run`` record's ``started_at``, ``finished_at`` and ``status`` at
    ``buf[pos:]``, and the position after them."""
    started_at, pos = read_long(buf, pos)
    finished_at: int | None = None
    if read_branch(buf, pos, "finished_at"):
        finished_at, pos = read_long(buf, pos + 1)
    else:
        pos += 1
    status_index, pos = read_long(buf, pos)
    if not 0 <= status_index < len(_STATUSES):
        raise ValueError(f"status enum index {status_index} is not one of {len(_STATUSES)}")
    return started_at, finished_at, _STATUSES[status_index], pos


def encode_run(run: Run) -> bytes:
    """The Avro body of ``run`` (Run.v1)."""
    d = run.__dict__
    outputs = d["outputs"]
    return write_run_record(
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
    f, pos = read_run_record(buf, pos)
    run: Run = trusted(
        Run,
        {
            "run_id": uuid_from(f.run_id, "run_id"),
            "agent_spec_digest": f.agent_spec_digest,
            "git_sha": f.git_sha,
            "started_at": Timestamp(f.started_at),
            "finished_at": None if f.finished_at is None else Timestamp(f.finished_at),
            "status": f.status,
            "inputs": json_from(f.inputs, "inputs"),
            "outputs": None if f.outputs is None else json_from(f.outputs, "outputs"),
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
            "run_id": uuid_from(run_id, "run_id"),
            "kind": _VIOLATION_KINDS[kind_index],
            "first_seq": u64(first_seq, "first_seq"),
            "last_seq": u64(last_seq, "last_seq"),
            "message": message,
        },
    )
    return violation, pos
