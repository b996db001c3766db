"""The fold's values: its configuration, the per-run state and the outcome of an event.

:class:`RunState` is *mutable* with ``__slots__``, unlike the immutable aggregate
STYLE.md points to. The fold has a budget of about 2 µs per in-order event
(notes/performance.md); copying a 40-field immutable value per event, or
rebuilding the pydantic :class:`~schemas.Run`, costs more than that on its own.
The functions in :mod:`consumers.runs` are still the only writers, there is no
clock, I/O or logging in them, and :attr:`RunState.run` builds the immutable
:class:`~schemas.Run` on demand. Callers that need a snapshot take
:meth:`RunState.copy`.
"""

from __future__ import annotations

import enum
import sys
from array import array
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple
from uuid import UUID

from pydantic import JsonValue

from schemas import (
    MAX_REORDER_DELAY_NS,
    Event,
    Run,
    RunStatus,
    Timestamp,
    Violation,
    ViolationKind,
    serde,
)
from schemas.avro_binary import LAYOUTS
from schemas.errors import RunfoldError

__all__ = [
    "COUNTER_NAMES",
    "DEFAULT_CONFIG",
    "FoldConfig",
    "FoldError",
    "Outcome",
    "OutcomeKind",
    "RunState",
]


class FoldError(RunfoldError, ValueError):
    """The fold was called wrongly (an event given to another run's state, a bad config)."""


@dataclass(frozen=True, slots=True)
class FoldConfig:
    """Bounds of the fold. Every structure that grows with input has one.

    Memory per tracked run is roughly 0.6 KiB plus 8 bytes per digest kept (at most
    ``digest_window``), its ``inputs``/``outputs`` and its buffered events; a
    partition's fold holds at most ``max_runs`` runs, ``max_pending_total`` buffered
    events and ``max_markers`` markers of finished runs (about 55 bytes each,
    :mod:`consumers.lifecycle`).
    """

    max_pending_per_run: int = 128
    """Events held per run while waiting for a missing seq; one more declares a gap."""
    max_delay_ns: int = MAX_REORDER_DELAY_NS
    """Event-time bound of the reorder buffer: when the run's newest timestamp seen
    is this far past its oldest buffered event, the gap is declared."""
    digest_window: int = 64
    """How many applied seqs per run keep a content digest, to tell a duplicate from
    a conflict. An older seq can no longer be verified (see ``unverified_duplicates``)."""
    max_recent_violations: int = 16
    """Violations kept per run with their text; all are counted by kind."""
    max_missing_ranges: int = 32
    """Declared-missing seq ranges remembered per run, to name late events."""
    max_runs: int = 100_000
    """Runs tracked by one :class:`~consumers.runs.FoldResult`; finished runs are evicted first."""
    max_pending_total: int = 100_000
    """Buffered events over all runs of one :class:`~consumers.runs.FoldResult`."""
    max_markers: int = 1_000_000
    """Markers of finished runs kept (:mod:`consumers.lifecycle`, ~55 bytes each) so their
    late events stay named; over it the oldest are shed (counted)."""
    marker_grace_ns: int = 5 * 60 * 10**9
    """Event time a finished run stays whole before it shrinks to a marker (5 minutes)."""
    marker_retention_ns: int = 7 * 24 * 3600 * 10**9
    """Event time after it finished that a run's marker is kept (7 days); an event of a
    run it no longer knows, older than this, is a ``forgotten_run`` violation."""

    def __post_init__(self) -> None:
        for name in (
            "max_pending_per_run",
            "max_delay_ns",
            "digest_window",
            "max_recent_violations",
            "max_missing_ranges",
            "max_runs",
            "max_pending_total",
            "max_markers",
            "marker_grace_ns",
            "marker_retention_ns",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise FoldError(f"FoldConfig.{name} must be a positive integer, not {value!r}")
        if self.marker_retention_ns < self.marker_grace_ns:
            raise FoldError(
                f"FoldConfig.marker_retention_ns ({self.marker_retention_ns}) must not be "
                f"shorter than marker_grace_ns ({self.marker_grace_ns}): a run is kept whole "
                "for the grace, then as a marker until the retention is over"
            )


DEFAULT_CONFIG = FoldConfig()
"""The bounds used when none are given."""


class OutcomeKind(enum.StrEnum):
    """Where one event ended up (DESIGN.md §5)."""

    APPLIED = "applied"
    """Folded into the run (possibly with a violation noticed on the way: missing_start, gap)."""
    DUPLICATE = "duplicate"
    """Same content as an event already applied (or buffered) at that seq: dropped, counted
    in the run's ``duplicates``; it carries no violation (DESIGN.md §5)."""
    VIOLATION = "violation"
    """Not applied because of the violation it carries (conflict, after_terminal, late gap)."""
    BUFFERED = "buffered"
    """Held in the reorder buffer. Transitional: the same event later gets a *released* outcome."""


class Outcome(NamedTuple):
    """The outcome of one event.

    Accounting: every event passed to the fold gets exactly one outcome with
    ``released=False`` (the first of the list the call returns). An event that
    was ``BUFFERED`` gets exactly one more outcome later, with ``released=True``,
    which is ``APPLIED`` or ``VIOLATION`` (never ``BUFFERED`` or ``DUPLICATE``).
    So at any moment::

        consumed == applied + duplicate + violation + pending
        pending  == buffered - released

    where the four counts are of outcome kinds (released ones included) and
    ``pending`` is the number of events in the reorder buffers.
    """

    kind: OutcomeKind
    run_id: UUID
    seq: int
    violations: tuple[Violation, ...] = ()
    """Violations noticed while handling this event; for ``VIOLATION``, the first is why."""
    released: bool = False
    """True when this resolves an event buffered earlier."""


COUNTER_NAMES: tuple[str, ...] = tuple(name for name, _ in LAYOUTS["RunCounters"])
"""The integer counters of a :class:`RunState`, in the order the Avro record lists them
(one list: :data:`schemas.avro_binary.LAYOUTS`, checked against ``RunState.avsc``)."""

_RUN_FIELDS = (
    "run_id",
    "agent_spec_digest",
    "git_sha",
    "started_at",
    "finished_at",
    "status",
    "inputs_json",
    "outputs_json",
    "final_state_digest",
)
_SEQUENCE_FIELDS = (
    "has_identity",
    "last_seq",
    "stream_time",
    "source_offset",
    "pending_events",
    "digests",
    "missing",
    "violation_counts",
    "recent_violations",
    "stalled_since",
    "config",
)


NO_VIOLATIONS: Mapping[ViolationKind, int] = MappingProxyType(dict.fromkeys(ViolationKind, 0))
"""The counts of a run with no violation yet, shared by all of them (read-only): the
first violation gives the run a dict of its own
(``consumers.next_event.record_violation``)."""


class _NoPending(dict):  # type: ignore[type-arg]
    """The empty reorder buffer every run shares until its first buffered event: a dict
    that refuses to be written (a run's own buffer is made where an event is buffered,
    ``consumers.sequence``), so no event can land in every run's buffer at once."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise TypeError("the shared empty reorder buffer is read-only: give the run its own")

    __setitem__ = __delitem__ = setdefault = update = popitem = clear = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]  # d |= other merges in C, past update

    def __reduce__(self) -> str:
        return "NO_PENDING"  # pickled and copied as the one shared instance


NO_PENDING: dict[int, tuple[Event, int]] = _NoPending()
"""The reorder buffer of a run with no buffered event, shared (read-only; 64 B a run
less): the first buffered event gives the run a dict of its own."""

FIRST_RING = 4
"""Slots of a new run's digest ring; at its fifth seq it gets one of ``digest_window``
slots (``consumers.next_event.grow_ring``). A ring of length L holds the digests of the
seqs ``last_seq - L + 1 .. last_seq`` at ``seq % L``, whatever L is; a short run keeps a
short ring (a 64-slot ring is 0.6 KiB, most of a small run's memory)."""


def shared_text(text: str) -> str:
    """``text`` as the one string every run holding the same text shares (``sys.intern``;
    an interned string is freed with its last holder). A fleet runs few agent specs and
    commits: a run's own copies of ``agent_spec_digest`` and ``git_sha`` were ~0.2 KiB
    of the ~1.7 an open run held."""
    return sys.intern(text) if type(text) is str else text


def relaid_ring(old: array[int], last_seq: int, size: int, oldest: int = 1) -> array[int]:
    """A digest ring of ``size`` slots holding what ``old`` holds of the seqs ``oldest``
    .. ``last_seq`` (seqs start at 1): ``old``, of any length L, holds the last L of them
    at ``seq % L``; a seq it does not hold stays 0 (unknown), never another seq's digest."""
    ring = array("Q", bytes(8 * size))
    for seq in range(max(1, oldest, last_seq - min(len(old), size) + 1), last_seq + 1):
        ring[seq % size] = old[seq % len(old)]
    return ring


class RunState:
    """Everything the fold knows about one run: its ``Run`` fields, sequence position,
    counters, reorder buffer, digest window and violations.

    Create one with :meth:`new`; change it only through :mod:`consumers.runs`.
    """

    __slots__ = _RUN_FIELDS + _SEQUENCE_FIELDS + COUNTER_NAMES + ("pending_oldest_ts",)

    run_id: UUID
    agent_spec_digest: str
    git_sha: str
    started_at: Timestamp
    """``graph_started``'s timestamp; before one is applied, the first applied (or seen) event's."""
    finished_at: Timestamp | None
    status: RunStatus
    inputs_json: str
    """``inputs`` as its canonical JSON text (``serde.dumps``): what the changelog and
    ``agent-runs`` write, held as the one string it is written as. A parsed value was
    a dict of small objects per run, ~0.4 KiB of an open run's ~1.7."""
    outputs_json: str | None
    """``outputs`` as its canonical JSON text, or None when there are none (JSON null)."""
    final_state_digest: str | None
    has_identity: bool
    """A ``graph_started`` has been applied (its payload gave the identity fields)."""
    last_seq: int
    """The last seq applied or declared missing; 0 before the first."""
    stream_time: int
    """The newest event timestamp seen for this run (ns): the reorder buffer's clock."""
    source_offset: int
    """Input offset of the last event folded, set by the service; -1 when unknown."""
    pending_events: dict[int, tuple[Event, int]]
    """The reorder buffer: seq -> (event, content digest), all seqs > ``last_seq + 1``;
    :data:`NO_PENDING` (shared, read-only) until the run's first buffered event."""
    pending_oldest_ts: int
    digests: array[int]
    """Digests of the last ``len(digests)`` applied seqs at ``seq % len(digests)``; 0:
    unknown. :data:`FIRST_RING` slots, then ``config.digest_window``."""
    missing: list[tuple[int, int]] | tuple[()]
    """Seq ranges declared missing (first, last), oldest first; ``()`` until the first."""
    violation_counts: Mapping[ViolationKind, int]
    """Violations by kind, every kind present; :data:`NO_VIOLATIONS` (shared) until the first."""
    recent_violations: deque[Violation] | tuple[()]
    """The newest ``config.max_recent_violations`` violations; ``()`` until the first."""
    stalled_since: int | None
    """Wall-clock ns when the service flagged the run ``stalled`` (RUNNING, no event for
    ``stall_after``); None when not stalled. An applied event clears it."""
    config: FoldConfig
    """The bounds the run was made with (its digest window and recent violations)."""

    events_applied: int
    nodes_entered: int
    nodes_exited: int
    node_failures: int
    tool_calls: int
    tool_returns: int
    tool_failures: int
    retries: int
    checkpoints_saved: int
    checkpoints_restored: int
    checkpoints_deleted: int
    state_updates: int
    messages: int
    interrupts: int
    duplicates: int
    unverified_duplicates: int
    """Events at a seq older than the digest window, counted as duplicates unverified."""
    events_buffered: int
    """Events that went through the reorder buffer (however they left it)."""
    violations_dropped: int
    """Violations counted but no longer kept with their text (``max_recent_violations``)."""
    missing_ranges_dropped: int
    """Declared-missing ranges forgotten (``max_missing_ranges``)."""

    @classmethod
    def new(
        cls, run_id: UUID, first_seen: Timestamp, config: FoldConfig = DEFAULT_CONFIG
    ) -> RunState:
        """An empty RUNNING run; ``first_seen`` stands in for ``started_at`` until known.

        Defaults until a ``graph_started`` is applied: empty ``agent_spec_digest`` and
        ``git_sha``, ``inputs`` null.
        """
        state = cls.__new__(cls)
        state.run_id = run_id
        state.agent_spec_digest = ""
        state.git_sha = ""
        state.started_at = first_seen
        state.finished_at = None
        state.status = RunStatus.RUNNING
        state.inputs_json = "null"
        state.outputs_json = None
        state.final_state_digest = None
        state.has_identity = False
        state.last_seq = 0
        state.stream_time = int(first_seen)
        state.source_offset = -1
        state.pending_events = NO_PENDING
        state.pending_oldest_ts = 0
        state.digests = array("Q", bytes(8 * min(FIRST_RING, config.digest_window)))
        state.missing = ()
        state.violation_counts = NO_VIOLATIONS
        state.recent_violations = ()
        state.stalled_since = None
        state.config = config
        # One statement for all COUNTER_NAMES: a new run is made once per run, but a
        # setattr loop would cost as much as folding a few of its events.
        state.events_applied = state.nodes_entered = state.nodes_exited = 0
        state.node_failures = state.tool_calls = state.tool_returns = state.tool_failures = 0
        state.retries = state.checkpoints_saved = state.checkpoints_restored = 0
        state.checkpoints_deleted = state.state_updates = state.messages = state.interrupts = 0
        state.duplicates = state.unverified_duplicates = state.events_buffered = 0
        state.violations_dropped = state.missing_ranges_dropped = 0
        return state

    @property
    def inputs(self) -> JsonValue:
        """The run's inputs (``graph_started``'s), parsed from :attr:`inputs_json` on each
        access; setting it writes the text."""
        value: JsonValue = serde.loads(self.inputs_json)
        return value

    @inputs.setter
    def inputs(self, value: JsonValue) -> None:
        self.inputs_json = serde.dumps(value)

    @property
    def outputs(self) -> JsonValue:
        """The run's outputs (its last event's), parsed from :attr:`outputs_json` on each
        access; None when there are none. Setting it writes the text."""
        text = self.outputs_json
        value: JsonValue = None if text is None else serde.loads(text)
        return value

    @outputs.setter
    def outputs(self, value: JsonValue) -> None:
        self.outputs_json = None if value is None else serde.dumps(value)

    @property
    def run(self) -> Run:
        """The run as the domain model has it (built on each access)."""
        return Run(
            run_id=self.run_id,
            agent_spec_digest=self.agent_spec_digest,
            git_sha=self.git_sha,
            started_at=self.started_at,
            finished_at=self.finished_at,
            status=self.status,
            inputs=self.inputs,
            outputs=self.outputs,
            final_state_digest=self.final_state_digest,
        )

    @property
    def pending(self) -> dict[int, Event]:
        """The reorder buffer: seq -> event, in seq order."""
        return {seq: self.pending_events[seq][0] for seq in sorted(self.pending_events)}

    @property
    def violations(self) -> list[Violation]:
        """The most recent violations, oldest first (``violation_counts`` has them all)."""
        return list(self.recent_violations)

    @property
    def is_terminal(self) -> bool:
        """The run is COMPLETED, FAILED or CANCELLED."""
        return self.status is not RunStatus.RUNNING

    def counters(self) -> dict[str, int]:
        """The integer counters by name (:data:`COUNTER_NAMES`)."""
        return {name: getattr(self, name) for name in COUNTER_NAMES}

    def to_record(self) -> dict[str, Any]:
        """The ``runfold.RunState`` Avro record (see :mod:`consumers.state_codec`)."""
        from consumers.state_codec import to_record

        return to_record(self)

    @classmethod
    def from_record(
        cls, record: dict[str, Any], config: FoldConfig = DEFAULT_CONFIG
    ) -> RunState:
        """The state in a ``runfold.RunState`` record (see :mod:`consumers.state_codec`)."""
        from consumers.state_codec import from_record

        return from_record(record, config)

    def copy(self) -> RunState:
        """An independent copy (events and violations are immutable and shared)."""
        other = RunState.__new__(RunState)
        for name in RunState.__slots__:
            setattr(other, name, getattr(self, name))
        other.pending_events = dict(self.pending_events) if self.pending_events else NO_PENDING
        other.digests = array("Q", self.digests)
        other.missing = list(self.missing) if self.missing else ()
        if self.violation_counts is not NO_VIOLATIONS:
            other.violation_counts = dict(self.violation_counts)
        if self.recent_violations:
            other.recent_violations = deque(
                self.recent_violations, maxlen=self.config.max_recent_violations
            )
        return other

    def _comparable(self) -> tuple[object, ...]:
        return tuple(
            getattr(self, name)
            for name in RunState.__slots__
            if name not in ("recent_violations", "pending_oldest_ts")
        ) + (list(self.recent_violations),)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunState):
            return NotImplemented
        return self._comparable() == other._comparable()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"RunState(run_id={self.run_id}, status={self.status.value}, last_seq={self.last_seq}, "
            f"applied={self.events_applied}, pending={len(self.pending_events)})"
        )
