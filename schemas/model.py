"""The domain model: pydantic twins of the origin crate's Rust types (``aivcs_core::domain::run``).

Field order is declaration order, as serde writes it. Integer fields carry the
width of their Rust type, so a value Rust could not hold is rejected here too.
Timestamps are :class:`Timestamp`: nanoseconds since the Unix epoch, because
Rust agents stamp nanoseconds and a ``datetime`` keeps only microseconds.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin
from uuid import UUID

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue
from pydantic_core import core_schema

from schemas import serde
from schemas.errors import ValidationError
from schemas.timestamp import Timestamp as Timestamp  # re-exported: a model type

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

U32 = Annotated[int, Field(ge=0, le=U32_MAX, strict=True)]
"""Rust ``u32``: 0 ..= 4294967295."""
U64 = Annotated[int, Field(ge=0, le=U64_MAX, strict=True)]
"""Rust ``u64`` (and ``usize`` on the 64-bit targets agents run on)."""

_I64_MIN = -(2**63)

MAX_REORDER_DELAY_NS = 60 * 1_000_000_000
"""How late (event time, ns) an event may arrive after a later one of its run before the
fold declares the seqs between missing: ``consumers.FoldConfig.max_delay_ns`` defaults to
it, and the fleet simulator stamps a gap's following events past it."""


def _serde_number(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if _I64_MIN <= value <= U64_MAX:
            return value
        try:
            return float(value)  # serde_json's Value holds such an integer as an f64
        except OverflowError:
            raise ValueError(
                f"integer of {len(str(abs(value)))} digits is beyond an f64; "
                "serde_json's Value cannot hold it"
            ) from None
    if isinstance(value, float) and not math.isfinite(value):
        return None  # serde_json's Value::from(f64) makes NaN and infinities null
    return value


def _serde_value_validator(value: Any, info: core_schema.ValidationInfo) -> Any:
    if info.context is not None and info.context.get("serde"):
        return value  # read by serde.loads, which already applies serde_json's rules
    return _as_serde_value(value)


def _as_serde_value(value: Any) -> Any:
    """``value`` as serde_json's ``Value`` would hold it; the same object when nothing changes."""
    if isinstance(value, dict):
        changed = False
        items = {}
        for key, item in value.items():
            new = _as_serde_value(item)
            changed = changed or new is not item
            items[key] = new
        return items if changed else value
    if isinstance(value, list):
        new_items = [_as_serde_value(item) for item in value]
        changed = any(new is not old for new, old in zip(new_items, value, strict=True))
        return new_items if changed else value
    if isinstance(value, int | float):
        return _serde_number(value)
    return value


SerdeJson = Annotated[JsonValue, AfterValidator(_serde_value_validator)]
"""A ``serde_json::Value``: integers outside i64/u64 become f64, NaN and infinities null."""


class RunStatus(enum.StrEnum):
    """Status of a run; serde writes the upper-case word."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        """COMPLETED, FAILED and CANCELLED accept no further status change."""
        return self is not RunStatus.RUNNING


def _describe(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(value)"
        given = error.get("input")
        shown = repr(given) if isinstance(given, str | int | float | bool) else type(given).__name__
        problems.append(f"{where}: {error['msg']} (got {shown[:80]})")
    return "; ".join(problems)


class _Model(BaseModel):
    # serde ignores unknown fields unless told otherwise; so does the twin.
    model_config = ConfigDict(frozen=True, extra="ignore")

    def __init__(self, /, **data: Any) -> None:
        # One error root for the project: pydantic's error becomes ours, kept as the cause.
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            raise ValidationError(f"invalid {type(self).__name__}: {_describe(exc)}") from exc

    # Tell pydantic this __init__ only wraps the base one, so model_validate keeps
    # its fast path (and its validation context) instead of calling it.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def _from_serde(cls, text: str | bytes) -> Self:
        try:
            value, repeated = serde.loads_noting_duplicates(text)
        except ValueError as exc:  # json.JSONDecodeError included
            raise ValidationError(f"invalid {cls.__name__} JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ValidationError(
                f"invalid {cls.__name__} JSON: expected an object, got {type(value).__name__}"
            )
        # serde's derived structs (the model and an event's kind) refuse a repeated
        # field; JSON values inside (payload, inputs, outputs) take the last one.
        structs = {id(value): cls.__name__, id(value.get("kind")): "kind"}
        for obj, key in repeated:
            if id(obj) in structs:
                raise ValidationError(
                    f"invalid {cls.__name__} JSON: duplicate field {key!r} in {structs[id(obj)]}"
                )
        try:
            return cls.model_validate(value, context={"serde": True})
        except pydantic.ValidationError as exc:
            raise ValidationError(f"invalid {cls.__name__} JSON: {_describe(exc)}") from exc


class GraphStarted(_Model):
    """Graph execution started."""

    type: Literal["graph_started"] = "graph_started"


class GraphCompleted(_Model):
    """Graph execution completed successfully."""

    type: Literal["graph_completed"] = "graph_completed"
    iterations: U32
    duration_ms: U64


class GraphFailed(_Model):
    """Graph execution failed."""

    type: Literal["graph_failed"] = "graph_failed"
    error: str


class NodeEntered(_Model):
    """Entered a graph node."""

    type: Literal["node_entered"] = "node_entered"
    node_id: str
    iteration: U32


class NodeExited(_Model):
    """Exited a graph node."""

    type: Literal["node_exited"] = "node_exited"
    node_id: str
    next_node: str | None = None  # serde reads a missing Option as None
    duration_ms: U64


class NodeFailed(_Model):
    """Graph node execution failed."""

    type: Literal["node_failed"] = "node_failed"
    node_id: str
    error: str


class ToolCalled(_Model):
    """Tool was called."""

    type: Literal["tool_called"] = "tool_called"
    tool_name: str


class ToolReturned(_Model):
    """Tool returned a result."""

    type: Literal["tool_returned"] = "tool_returned"
    tool_name: str


class ToolFailed(_Model):
    """Tool execution failed."""

    type: Literal["tool_failed"] = "tool_failed"
    tool_name: str


class CheckpointSaved(_Model):
    """Checkpoint marker in execution."""

    type: Literal["checkpoint_saved"] = "checkpoint_saved"
    checkpoint_id: str
    node_id: str


class CheckpointRestored(_Model):
    """Checkpoint restored."""

    type: Literal["checkpoint_restored"] = "checkpoint_restored"
    checkpoint_id: str
    node_id: str


class CheckpointDeleted(_Model):
    """Checkpoint deleted."""

    type: Literal["checkpoint_deleted"] = "checkpoint_deleted"
    checkpoint_id: str


class StateUpdated(_Model):
    """State updated in a node."""

    type: Literal["state_updated"] = "state_updated"
    node_id: str
    keys_changed: tuple[str, ...]


class MessageAdded(_Model):
    """Message added to execution context."""

    type: Literal["message_added"] = "message_added"
    role: str
    content_length: U64


class GraphInterrupted(_Model):
    """Graph execution interrupted (a pause; ``reason == "cancelled"`` ends the run)."""

    type: Literal["graph_interrupted"] = "graph_interrupted"
    reason: str
    node_id: str


class NodeRetrying(_Model):
    """Node execution retrying."""

    type: Literal["node_retrying"] = "node_retrying"
    node_id: str
    attempt: U32
    delay_ms: U64


EventKind = Annotated[
    Union[  # noqa: UP007 - a discriminated union reads best spelled out
        GraphStarted,
        GraphCompleted,
        GraphFailed,
        NodeEntered,
        NodeExited,
        NodeFailed,
        ToolCalled,
        ToolReturned,
        ToolFailed,
        CheckpointSaved,
        CheckpointRestored,
        CheckpointDeleted,
        StateUpdated,
        MessageAdded,
        GraphInterrupted,
        NodeRetrying,
    ],
    Field(discriminator="type"),
]
"""Classification of an event, internally tagged by ``type`` as serde does."""

EVENT_KINDS: dict[str, type[_Model]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        GraphStarted,
        GraphCompleted,
        GraphFailed,
        NodeEntered,
        NodeExited,
        NodeFailed,
        ToolCalled,
        ToolReturned,
        ToolFailed,
        CheckpointSaved,
        CheckpointRestored,
        CheckpointDeleted,
        StateUpdated,
        MessageAdded,
        GraphInterrupted,
        NodeRetrying,
    )
}
"""Each ``type`` tag and its class, in the Rust enum's declaration order."""


class Event(_Model):
    """A single event in a run's execution trace."""

    run_id: UUID
    seq: U64
    timestamp: Timestamp
    kind: EventKind
    payload: SerdeJson

    def to_json(self) -> str:
        """Compact JSON, byte-identical to ``serde_json::to_string`` of the Rust value."""
        return _WRITERS[type(self)](self)

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        """Parse JSON as serde would; bad input raises :class:`~schemas.errors.ValidationError`."""
        return cls._from_serde(text)


class Run(_Model):
    """A single execution of an agent against an AgentSpec."""

    run_id: UUID
    agent_spec_digest: str
    git_sha: str
    started_at: Timestamp
    finished_at: Timestamp | None = None
    status: RunStatus
    inputs: SerdeJson
    outputs: SerdeJson | None = None
    final_state_digest: str | None = None

    def to_json(self) -> str:
        """Compact JSON, byte-identical to ``serde_json::to_string`` of the Rust value."""
        return _WRITERS[type(self)](self)

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        """Parse JSON as serde would; bad input raises :class:`~schemas.errors.ValidationError`."""
        return cls._from_serde(text)


class ViolationKind(enum.StrEnum):
    """The anomalies the fold names (DESIGN.md §5)."""

    GAP = "gap"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    AFTER_TERMINAL = "after_terminal"
    MISSING_START = "missing_start"
    STALLED = "stalled"
    """A RUNNING run had no event for ``stall_after`` (flagged once; Violation v2)."""
    FORGOTTEN_RUN = "forgotten_run"
    """An event for a run forgotten after its retention period (Violation v2)."""


class Violation(_Model):
    """An anomaly found in one run's event stream, published to ``agent-run-violations``.

    ``first_seq ..= last_seq`` is the range of sequence numbers concerned (one seq:
    both equal; a gap: the missing range).
    """

    run_id: UUID
    kind: ViolationKind
    first_seq: U64
    last_seq: U64
    message: str

    def to_json(self) -> str:
        """Compact JSON, byte-identical to ``serde_json::to_string`` of the Rust value."""
        return _WRITERS[type(self)](self)

    @classmethod
    def from_json(cls, text: str | bytes) -> Self:
        """Parse JSON as serde would; bad input raises :class:`~schemas.errors.ValidationError`."""
        return cls._from_serde(text)


# serde-exact JSON writers, built once per class. Field order is declaration order.

_Writer = Callable[[Any], str]


def _quote_timestamp(value: Timestamp) -> str:
    return f'"{value.isoformat()}"'


@functools.lru_cache(maxsize=2_048)
def _quote_uuid(value: UUID) -> str:
    # A run's events share its run_id: formatting it once per run saves most of the cost
    # (2,048 entries: as many as the run-id cache of the Avro reader, _cached_uuid).
    return f'"{value}"'


def _quote_enum(value: enum.Enum) -> str:
    return serde.quote(value.value)


def _string_array(value: tuple[str, ...]) -> str:
    return "[" + ",".join(map(serde.quote, value)) + "]"


def _optional(writer: _Writer) -> _Writer:
    def write(value: Any) -> str:
        return "null" if value is None else writer(value)

    return write


def _write_kind(value: _Model) -> str:
    return _WRITERS[type(value)](value)


def _field_writer(annotation: Any) -> _Writer:
    """The writer for one field, from its type annotation."""
    if annotation is str:
        return serde.quote
    if annotation is int:  # U32/U64: pydantic keeps the bounds in the field's metadata
        return str
    if annotation is Timestamp:
        return _quote_timestamp
    if annotation is UUID:
        return _quote_uuid
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _quote_enum
    if annotation == tuple[str, ...]:
        return _string_array
    if annotation == str | None:
        return _optional(serde.quote)
    if annotation == Timestamp | None:
        return _optional(_quote_timestamp)
    if get_origin(annotation) is Union and all(
        isinstance(arg, type) and issubclass(arg, _Model) for arg in get_args(annotation)
    ):
        return _write_kind
    # JsonValue and JsonValue | None: serde_json::Value writes None as null too.
    return serde.dumps


def _struct_writer(cls: type[_Model]) -> _Writer:
    """A function writing ``cls`` as serde does: compiled once, so a call is one join."""
    names: list[str] = []
    parts: list[str] = []
    env: dict[str, Any] = {}
    prefix = "{"
    for index, (name, field) in enumerate(cls.model_fields.items()):
        key = f"{prefix}{serde.quote(name)}:"
        prefix = ","
        if name == "type" and get_origin(field.annotation) is Literal:
            # serde's internally tagged enum: the tag first, a constant.
            parts.append(repr(key + serde.quote(field.default)))
            continue
        env[f"w{index}"] = _field_writer(field.annotation)
        names.append(name)
        parts.append(f"{key!r}, w{index}(d[{name!r}])")
    if not parts:
        parts.append("'{'")
    body = ", ".join(parts + ["'}'"])
    source = f"def write(obj):\n    d = obj.__dict__\n    return ''.join(({body}))\n"
    exec(compile(source, f"<serde writer for {cls.__name__}>", "exec"), env)  # noqa: S102
    writer: _Writer = env["write"]
    return writer


_SERDE_CLASSES: list[type[_Model]] = [*EVENT_KINDS.values(), Event, Run, Violation]
_WRITERS: dict[type[_Model], _Writer] = {cls: _struct_writer(cls) for cls in _SERDE_CLASSES}
