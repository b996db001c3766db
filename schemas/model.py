"""The domain model: pydantic twins of the origin crate's Rust types (``aivcs_core::domain::run``).

Field order is declaration order, as serde writes it. Integer fields carry the
width of their Rust type, so a value Rust could not hold is rejected here too.
Timestamps are :class:`Timestamp`: nanoseconds since the Unix epoch, because
Rust agents stamp nanoseconds and a ``datetime`` keeps only microseconds.
"""

from __future__ import annotations

import enum
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Union
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, JsonValue
from pydantic_core import core_schema

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1

U32 = Annotated[int, Field(ge=0, le=U32_MAX, strict=True)]
"""Rust ``u32``: 0 ..= 4294967295."""
U64 = Annotated[int, Field(ge=0, le=U64_MAX, strict=True)]
"""Rust ``u64`` (and ``usize`` on the 64-bit targets agents run on)."""

_NS_PER_SECOND = 1_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(
    r"(?P<year>[+-]?\d{4,6})-(?P<month>\d{2})-(?P<day>\d{2})[Tt ]"
    r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(?:\.(?P<fraction>\d+))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:?\d{2})\Z"
)


class Timestamp(int):
    """A UTC instant in nanoseconds since the Unix epoch, written as chrono writes it.

    It is an ``int`` so that it costs nothing to compare, sort and put on the wire
    (Avro ``timestamp-nanos``); :meth:`isoformat` gives the serde/chrono text.
    """

    __slots__ = ()

    @classmethod
    def now(cls) -> Timestamp:
        """The current time, to the nanosecond the OS gives."""
        return cls(time.time_ns())

    @classmethod
    def from_datetime(cls, value: datetime) -> Timestamp:
        """Convert an aware ``datetime`` (microsecond precision at most)."""
        if value.tzinfo is None:
            raise ValueError(f"timestamp {value.isoformat()} has no time zone; give an aware UTC datetime")
        delta = value - _EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return cls(micros * 1_000)

    @classmethod
    def parse(cls, text: str) -> Timestamp:
        """Parse RFC 3339 text (any offset, up to nanosecond fraction) as chrono's serde does."""
        match = _RFC3339.match(text)
        if match is None:
            raise ValueError(f"timestamp {text!r} is not RFC 3339 (e.g. 2024-05-01T12:00:00.123456789Z)")
        fraction = match["fraction"] or ""
        if len(fraction) > 9:
            # chrono reads at most nanoseconds and ignores further digits.
            fraction = fraction[:9]
        nanos = int(fraction.ljust(9, "0")) if fraction else 0
        second = int(match["second"])
        leap = second == 60
        try:
            base = datetime(
                int(match["year"]),
                int(match["month"]),
                int(match["day"]),
                int(match["hour"]),
                int(match["minute"]),
                59 if leap else second,
                tzinfo=UTC,
            )
        except ValueError as exc:
            raise ValueError(f"timestamp {text!r} is not a valid date and time: {exc}") from exc
        offset = match["offset"]
        offset_seconds = 0
        if offset not in ("Z", "z"):
            sign = -1 if offset[0] == "-" else 1
            digits = offset[1:].replace(":", "")
            offset_seconds = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
        delta = base - _EPOCH - timedelta(seconds=offset_seconds)
        seconds = delta.days * 86_400 + delta.seconds + (1 if leap else 0)
        return cls(seconds * _NS_PER_SECOND + nanos)

    def to_datetime(self) -> datetime:
        """The instant as an aware UTC ``datetime`` (nanoseconds truncated to microseconds)."""
        return _EPOCH + timedelta(microseconds=int(self) // 1_000)

    def isoformat(self) -> str:
        """chrono's serde text: RFC 3339 with ``Z``; fraction of 0, 3, 6 or 9 digits, the fewest exact."""
        seconds, nanos = divmod(int(self), _NS_PER_SECOND)
        moment = _EPOCH + timedelta(seconds=seconds)
        text = moment.strftime("%Y-%m-%dT%H:%M:%S") if moment.year >= 1000 else (
            f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}"
        )
        if nanos == 0:
            return text + "Z"
        if nanos % 1_000_000 == 0:
            return f"{text}.{nanos // 1_000_000:03d}Z"
        if nanos % 1_000 == 0:
            return f"{text}.{nanos // 1_000:06d}Z"
        return f"{text}.{nanos:09d}Z"

    def __repr__(self) -> str:
        return f"Timestamp({self.isoformat()!r})"

    @classmethod
    def _validate(cls, value: Any) -> Timestamp:
        if isinstance(value, Timestamp):
            return value
        if isinstance(value, bool):
            raise ValueError("a timestamp cannot be a boolean")
        if isinstance(value, int):
            return cls(value)
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, datetime):
            return cls.from_datetime(value)
        raise ValueError(
            f"a timestamp must be RFC 3339 text, nanoseconds since the epoch or an aware datetime, "
            f"not {type(value).__name__}"
        )

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda value: value.isoformat(), when_used="json"
            ),
        )


class RunStatus(str, enum.Enum):
    """Status of a run; serde writes the upper-case word."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        """COMPLETED, FAILED and CANCELLED accept no further status change."""
        return self is not RunStatus.RUNNING


class _Model(BaseModel):
    # serde ignores unknown fields unless told otherwise; so does the twin.
    model_config = ConfigDict(frozen=True, extra="ignore")


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
    next_node: str | None
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
    payload: JsonValue


class Run(_Model):
    """A single execution of an agent against an AgentSpec."""

    run_id: UUID
    agent_spec_digest: str
    git_sha: str
    started_at: Timestamp
    finished_at: Timestamp | None
    status: RunStatus
    inputs: JsonValue
    outputs: JsonValue | None
    final_state_digest: str | None


class ViolationKind(str, enum.Enum):
    """The anomalies the fold names (DESIGN.md §5)."""

    GAP = "gap"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    AFTER_TERMINAL = "after_terminal"
    MISSING_START = "missing_start"


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
