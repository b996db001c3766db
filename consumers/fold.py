"""The fold: events in, ``Run`` state and named anomalies out (DESIGN.md §5).

Pure code: no Kafka, no clock, no logging. :func:`apply_event` folds one event
into one run's :class:`~consumers.state.RunState`; :class:`FoldResult` routes the
events of many runs and enforces the global bounds; :func:`fold` is a loop.

Sequence rules for an event with ``seq = s`` when the run's last applied seq is ``l``:

============================  ============================================================
``s == l + 1``                applied, then buffered successors in order (``released``)
``s <= l``, same content      ``DUPLICATE`` (a ``duplicate`` violation rides along)
``s <= l``, other content     ``VIOLATION`` ``conflict``, not applied
``s <= l``, declared missing  ``VIOLATION`` ``gap`` "late event for seq s declared missing"
``s <= l``, older than the    ``DUPLICATE``, counted in ``unverified_duplicates``: content
digest window                 can no longer be compared, and a redelivery is far likelier
                              than a conflict (neither is applied, only the name differs)
``s == 0``                    ``VIOLATION`` ``conflict``: seqs start at 1
``s > l + 1``                 ``BUFFERED``; an event already buffered at ``s`` makes it a
                              duplicate or conflict of that one
buffer over a bound           ``gap`` violation for ``l+1 .. next_buffered-1`` (carried by
                              the released event that moves the run on); the range is
                              remembered as missing
run terminal, ``s > l``       ``VIOLATION`` ``after_terminal``; the status never changes.
                              Events still buffered when the run ends get it too.
first applied event is not    applied, with a ``missing_start`` violation; ``started_at``
``graph_started``             is that event's timestamp until a ``graph_started`` comes
============================  ============================================================

Content is the event's timestamp, kind (tag and fields) and payload, digested by
:func:`content_digest` (stable across processes, since the digests are persisted).
"""

from __future__ import annotations

import marshal
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from uuid import UUID

from consumers.state import DEFAULT_CONFIG, FoldConfig, FoldError, Outcome, OutcomeKind, RunState
from schemas import Event, RunStatus, Violation, ViolationKind

__all__ = [
    "FoldResult",
    "FoldStats",
    "Tally",
    "apply_event",
    "content_digest",
    "digest_bytes",
    "flush",
    "fold",
]

_RUNNING = RunStatus.RUNNING
_APPLIED = OutcomeKind.APPLIED
_DUPLICATE = OutcomeKind.DUPLICATE
_VIOLATION = OutcomeKind.VIOLATION
_BUFFERED = OutcomeKind.BUFFERED
_new_outcome = tuple.__new__  # Outcome(...) without the NamedTuple's Python-level __new__
_marshal = marshal.dumps
_crc32 = zlib.crc32
_U64_MAX = 2**64 - 1


def content_digest(event: Event) -> int:
    """A 64-bit digest of the event's content: timestamp, kind (tag and fields), payload.

    Stable across processes and restarts (unlike ``hash()``), since digests are
    persisted with the state: the CRC-32 of the marshal (format 2) encodings of the
    kind's field values and of ``(timestamp, payload)``, one after the other, with
    their total length above it. Not cryptographic, and it needs not be: a
    collision only turns a conflict into a duplicate, and neither is applied.
    Never 0.
    """
    try:
        kind_values = tuple(event.kind.__dict__.values())
        known = _KIND_CRC.get(kind_values)
        if known is None:
            encoded = _marshal(kind_values, 2)
            known = (len(encoded), _crc32(encoded))
            if len(_KIND_CRC) >= _KIND_CRC_SIZE:
                _KIND_CRC.clear()
            _KIND_CRC[kind_values] = known
        rest = _marshal((event.timestamp.real, event.payload), 2)
    except (ValueError, TypeError):
        # marshal refuses subclasses of int/str/...; repr of plain JSON values is stable too.
        return digest_bytes(
            repr((event.timestamp.real, event.kind.__dict__, event.payload)).encode(
                "utf-8", "surrogatepass"
            )
        )
    return (((known[0] + len(rest)) & 0xFFFFFFFF) << 32) | _crc32(rest, known[1]) or 1


# Kinds repeat (the same tool, the same node): their CRC is memoised by value. A pure
# function's cache, bounded; it changes no result, only the cost (~0.5 µs of marshal).
_KIND_CRC: dict[tuple[object, ...], tuple[int, int]] = {}
_KIND_CRC_SIZE = 4096


def digest_bytes(data: bytes) -> int:
    """The fold's digest of some bytes: CRC-32 in the low half, the length above it.

    A decoder that has an event's encoded body at hand can pass
    ``digest_bytes(body)`` to :func:`apply_event` instead of letting the fold compute
    :func:`content_digest` (about 1 µs saved per event). Whichever is chosen must be
    used for every event a state ever sees, across restarts, or duplicates will be
    told as conflicts. Never 0.
    """
    return ((len(data) & 0xFFFFFFFF) << 32) | _crc32(data) or 1


# --- one small function per event kind -------------------------------------------------


def _graph_started(state: RunState, event: Event) -> None:
    if state.has_identity:
        return  # the first graph_started names the run; a repeat changes nothing
    state.has_identity = True
    state.started_at = event.timestamp
    payload = event.payload
    if isinstance(payload, dict):
        digest = payload.get("agent_spec_digest")
        sha = payload.get("git_sha")
        state.agent_spec_digest = digest if isinstance(digest, str) else ""
        state.git_sha = sha if isinstance(sha, str) else ""
        state.inputs = payload.get("inputs")


def _graph_completed(state: RunState, event: Event) -> None:
    state.status = RunStatus.COMPLETED
    state.finished_at = event.timestamp
    payload = event.payload
    if isinstance(payload, dict):
        state.outputs = payload.get("outputs")
        digest = payload.get("final_state_digest")
        state.final_state_digest = digest if isinstance(digest, str) else None


def _graph_failed(state: RunState, event: Event) -> None:
    state.status = RunStatus.FAILED
    state.finished_at = event.timestamp


def _graph_interrupted(state: RunState, event: Event) -> None:
    state.interrupts += 1
    if event.kind.reason == "cancelled":  # type: ignore[union-attr]
        state.status = RunStatus.CANCELLED
        state.finished_at = event.timestamp


def _node_entered(state: RunState, event: Event) -> None:
    state.nodes_entered += 1


def _node_exited(state: RunState, event: Event) -> None:
    state.nodes_exited += 1


def _node_failed(state: RunState, event: Event) -> None:
    state.node_failures += 1


def _node_retrying(state: RunState, event: Event) -> None:
    state.retries += 1


def _tool_called(state: RunState, event: Event) -> None:
    state.tool_calls += 1


def _tool_returned(state: RunState, event: Event) -> None:
    state.tool_returns += 1


def _tool_failed(state: RunState, event: Event) -> None:
    state.tool_failures += 1


def _checkpoint_saved(state: RunState, event: Event) -> None:
    state.checkpoints_saved += 1


def _checkpoint_restored(state: RunState, event: Event) -> None:
    state.checkpoints_restored += 1


def _checkpoint_deleted(state: RunState, event: Event) -> None:
    state.checkpoints_deleted += 1


def _state_updated(state: RunState, event: Event) -> None:
    state.state_updates += 1


def _message_added(state: RunState, event: Event) -> None:
    state.messages += 1


_PROJECTORS: dict[str, Callable[[RunState, Event], None]] = {
    "graph_started": _graph_started,
    "graph_completed": _graph_completed,
    "graph_failed": _graph_failed,
    "node_entered": _node_entered,
    "node_exited": _node_exited,
    "node_failed": _node_failed,
    "tool_called": _tool_called,
    "tool_returned": _tool_returned,
    "tool_failed": _tool_failed,
    "checkpoint_saved": _checkpoint_saved,
    "checkpoint_restored": _checkpoint_restored,
    "checkpoint_deleted": _checkpoint_deleted,
    "state_updated": _state_updated,
    "message_added": _message_added,
    "graph_interrupted": _graph_interrupted,
    "node_retrying": _node_retrying,
}


# --- sequence handling -----------------------------------------------------------------


def _violation(
    state: RunState, kind: ViolationKind, first: int, last: int, message: str
) -> Violation:
    """Record a violation in the run's summary and return it."""
    violation = Violation(
        run_id=state.run_id, kind=kind, first_seq=first, last_seq=last, message=message
    )
    state.violation_counts[kind] += 1
    recent = state.recent_violations
    if len(recent) == recent.maxlen:
        state.violations_dropped += 1
    recent.append(violation)
    return violation


def _apply(
    state: RunState, event: Event, digest: int, carried: tuple[Violation, ...]
) -> tuple[Violation, ...]:
    """Fold an event whose seq is ``last_seq + 1`` into a RUNNING run.

    Returns ``carried`` plus the violation noticed on the way, if any.
    """
    seq = event.seq
    state.last_seq = seq
    digests = state.digests
    digests[seq % len(digests)] = digest
    tag = event.kind.type
    if state.events_applied == 0 and not state.has_identity:
        state.started_at = event.timestamp
        if tag != "graph_started":
            carried += (
                _violation(
                    state,
                    ViolationKind.MISSING_START,
                    seq,
                    seq,
                    f"run {state.run_id}: first event applied is {tag} at seq {seq}, "
                    "not graph_started; identity fields stay empty until one arrives",
                ),
            )
    state.events_applied += 1
    _PROJECTORS[tag](state, event)
    return carried


def _drain(state: RunState, outcomes: list[Outcome]) -> None:
    """Apply buffered successors of ``last_seq`` in order; end the buffer if the run ended."""
    pending = state.pending_events
    run_id = state.run_id
    released = False
    while state.status is _RUNNING:
        entry = pending.pop(state.last_seq + 1, None)
        if entry is None:
            break
        released = True
        event, digest = entry
        carried = _apply(state, event, digest, ())
        outcomes.append(_new_outcome(Outcome, (_APPLIED, run_id, event.seq, carried, True)))
    if pending and state.status is not _RUNNING:
        for seq in sorted(pending):
            outcomes.append(
                _new_outcome(
                    Outcome, (_VIOLATION, run_id, seq, (_after_terminal(state, seq),), True)
                )
            )
        pending.clear()
    if released and pending:
        state.pending_oldest_ts = min(int(event.timestamp) for event, _ in pending.values())


def _after_terminal(state: RunState, seq: int) -> Violation:
    return _violation(
        state,
        ViolationKind.AFTER_TERMINAL,
        seq,
        seq,
        f"run {state.run_id} is {state.status.value} since seq {state.last_seq}; "
        f"event at seq {seq} ignored",
    )


def _declare_first_gap(state: RunState, config: FoldConfig, outcomes: list[Outcome]) -> None:
    """Give up on the seqs before the first buffered one; apply what follows."""
    pending = state.pending_events
    first = state.last_seq + 1
    next_seq = min(pending)
    last = next_seq - 1
    gap = _violation(
        state,
        ViolationKind.GAP,
        first,
        last,
        f"run {state.run_id}: seq {first}..{last} never arrived within the reorder bound; "
        f"moved on to seq {next_seq}",
    )
    missing = state.missing
    missing.append((first, last))
    if len(missing) > config.max_missing_ranges:
        del missing[0]
        state.missing_ranges_dropped += 1
    digests = state.digests
    window = len(digests)
    for seq in range(max(first, next_seq - window), next_seq):
        digests[seq % window] = 0  # those slots describe older seqs now: unknown
    state.last_seq = last
    event, digest = pending.pop(next_seq)
    carried = _apply(state, event, digest, (gap,))
    outcomes.append(_new_outcome(Outcome, (_APPLIED, state.run_id, next_seq, carried, True)))
    _drain(state, outcomes)


def _enforce_bounds(state: RunState, config: FoldConfig, outcomes: list[Outcome]) -> None:
    pending = state.pending_events
    while pending and (
        len(pending) > config.max_pending_per_run
        or state.stream_time - state.pending_oldest_ts > config.max_delay_ns
    ):
        _declare_first_gap(state, config, outcomes)


def _seen_before(state: RunState, event: Event, digest: int, seq: int) -> Outcome:
    """The outcome of an event at a seq at or below ``last_seq``."""
    run_id = state.run_id
    if seq == 0:
        return _new_outcome(
            Outcome,
            (
                _VIOLATION,
                run_id,
                0,
                (
                    _violation(
                        state,
                        ViolationKind.CONFLICT,
                        0,
                        0,
                        f"run {run_id}: an event at seq 0 ({event.kind.type}) was ignored; "
                        "seqs start at 1",
                    ),
                ),
                False,
            ),
        )
    for first, last in state.missing:
        if first <= seq <= last:
            late = _violation(
                state,
                ViolationKind.GAP,
                seq,
                seq,
                f"run {run_id}: late event for seq {seq} declared missing "
                f"(gap {first}..{last}); not applied",
            )
            return _new_outcome(Outcome, (_VIOLATION, run_id, seq, (late,), False))
    digests = state.digests
    window = len(digests)
    known = digests[seq % window] if seq > state.last_seq - window else 0
    if known == 0:
        state.duplicates += 1
        state.unverified_duplicates += 1
        dup = _violation(
            state,
            ViolationKind.DUPLICATE,
            seq,
            seq,
            f"run {run_id}: event at seq {seq} dropped as a duplicate; it is older than "
            f"the last {window} applied, so its content could not be compared",
        )
        return _new_outcome(Outcome, (_DUPLICATE, run_id, seq, (dup,), False))
    return _compare(state, event, seq, digest, known, "applied")


def _compare(
    state: RunState, event: Event, seq: int, digest: int, known: int, where: str
) -> Outcome:
    run_id = state.run_id
    if digest == known:
        state.duplicates += 1
        dup = _violation(
            state,
            ViolationKind.DUPLICATE,
            seq,
            seq,
            f"run {run_id}: event at seq {seq} dropped, same content as the one {where}",
        )
        return _new_outcome(Outcome, (_DUPLICATE, run_id, seq, (dup,), False))
    conflict = _violation(
        state,
        ViolationKind.CONFLICT,
        seq,
        seq,
        f"run {run_id}: event at seq {seq} ({event.kind.type}) differs from the one {where} "
        "at that seq; not applied",
    )
    return _new_outcome(Outcome, (_VIOLATION, run_id, seq, (conflict,), False))


def _step(state: RunState, event: Event, config: FoldConfig, digest: int | None) -> list[Outcome]:
    """Fold one event of ``state``'s run; the heart of :func:`apply_event`."""
    seq = event.seq
    timestamp = event.timestamp
    if timestamp > state.stream_time:
        state.stream_time = timestamp
    if digest is None:
        digest = content_digest(event)
    if seq == state.last_seq + 1 and state.status is _RUNNING and state.events_applied:
        # The common case, _apply inlined: the next event of a run under way.
        state.last_seq = seq
        digests = state.digests
        try:
            digests[seq % len(digests)] = digest
        except (OverflowError, TypeError):
            raise _bad_digest(state, seq, digest) from None
        state.events_applied += 1
        _PROJECTORS[event.kind.type](state, event)
        outcomes = [_new_outcome(Outcome, (_APPLIED, state.run_id, seq, (), False))]
        if state.pending_events:
            _drain(state, outcomes)
            if state.pending_events:
                _enforce_bounds(state, config, outcomes)
        return outcomes
    outcomes = [_step_aside(state, event, seq, digest)]
    if outcomes[0].kind is _APPLIED and state.pending_events:
        _drain(state, outcomes)
    if state.pending_events:
        _enforce_bounds(state, config, outcomes)
    return outcomes


def _bad_digest(state: RunState, seq: int, digest: object) -> FoldError:
    return FoldError(
        f"run {state.run_id} seq {seq}: digest {digest!r} is not an integer in 1..2**64-1; "
        "pass content_digest(event) or digest_bytes(body), or None"
    )


def _step_aside(state: RunState, event: Event, seq: int, digest: int) -> Outcome:
    """The outcome of any event but the next one of a run under way."""
    if not isinstance(digest, int) or not 0 < digest <= _U64_MAX:
        raise _bad_digest(state, seq, digest)
    last = state.last_seq
    run_id = state.run_id
    if seq == last + 1 and state.status is _RUNNING:  # the run's first applied event
        return _new_outcome(
            Outcome, (_APPLIED, run_id, seq, _apply(state, event, digest, ()), False)
        )
    if seq <= last:
        return _seen_before(state, event, digest, seq)
    if state.status is not _RUNNING:
        return _new_outcome(
            Outcome, (_VIOLATION, run_id, seq, (_after_terminal(state, seq),), False)
        )
    pending = state.pending_events
    held = pending.get(seq)
    if held is not None:
        return _compare(state, event, seq, digest, held[1], "buffered")
    if not pending or event.timestamp < state.pending_oldest_ts:
        state.pending_oldest_ts = event.timestamp.real
    pending[seq] = (event, digest)
    state.events_buffered += 1
    return _new_outcome(Outcome, (_BUFFERED, run_id, seq, (), False))


def apply_event(
    state: RunState | None,
    event: Event,
    config: FoldConfig = DEFAULT_CONFIG,
    digest: int | None = None,
) -> tuple[RunState, list[Outcome]]:
    """Fold ``event`` into its run's state (a new one when ``state`` is None).

    Returns the state (the same object, updated in place) and the outcomes: first
    the event's own, then those of buffered events it released (see
    :class:`~consumers.state.Outcome` for the accounting). ``digest`` is
    :func:`content_digest` of the event when the caller has it already; it must
    come from that function, or the digests kept in the state will not compare.

    Raises :class:`~consumers.state.FoldError` when ``event`` belongs to another
    run than ``state``; nothing else for any valid :class:`~schemas.Event`.
    """
    if state is None:
        state = RunState.new(event.run_id, event.timestamp, config)
    elif event.run_id.int != state.run_id.int:
        raise FoldError(
            f"event seq {event.seq} of run {event.run_id} was given to the state of run "
            f"{state.run_id}; route events by run_id (FoldResult does)"
        )
    return state, _step(state, event, config, digest)


def flush(state: RunState, config: FoldConfig = DEFAULT_CONFIG) -> list[Outcome]:
    """Give up waiting: declare every gap before buffered events and apply them all.

    For a run about to be evicted, or when the buffers of all runs are over
    ``max_pending_total``. The outcomes are all ``released``.
    """
    outcomes: list[Outcome] = []
    while state.pending_events:
        _declare_first_gap(state, config, outcomes)
    return outcomes


# --- many runs -------------------------------------------------------------------------


@dataclass
class FoldStats:
    """What the global bounds of a :class:`FoldResult` made it drop or cut short."""

    finished_runs_evicted: int = 0
    """Finished runs forgotten to make room (``max_runs``); a tombstone keeps their id."""
    running_runs_evicted: int = 0
    """RUNNING runs forgotten (no finished one left to evict); buffers flushed first.
    A later event of such a run starts a new state and gets ``missing_start``."""
    tombstones_dropped: int = 0
    """Tombstones forgotten (``max_tombstones``): later events of those runs look new."""
    tombstone_events: int = 0
    """Events for tombstoned runs (duplicates or after_terminal, as the tombstone tells)."""
    forced_flushes: int = 0
    """Runs whose buffer was flushed because all buffers held ``max_pending_total``."""


class Tally:
    """Counts of outcomes, to check that every consumed event is accounted for once."""

    __slots__ = ("applied", "buffered", "consumed", "duplicate", "released", "violation")

    def __init__(self) -> None:
        self.consumed = self.applied = self.duplicate = self.violation = 0
        self.buffered = self.released = 0

    def add(self, outcomes: Iterable[Outcome], consumed: int = 1) -> None:
        """Count the outcomes of ``consumed`` events (one call of the fold)."""
        self.consumed += consumed
        for outcome in outcomes:
            kind = outcome.kind
            if kind is _APPLIED:
                self.applied += 1
            elif kind is _BUFFERED:
                self.buffered += 1
            elif kind is _DUPLICATE:
                self.duplicate += 1
            else:
                self.violation += 1
            if outcome.released:
                self.released += 1

    @property
    def pending(self) -> int:
        """Events buffered and not yet released."""
        return self.buffered - self.released

    def balanced(self, pending_total: int) -> bool:
        """``consumed == applied + duplicate + violation + pending`` and ``pending`` matches."""
        return (
            self.pending == pending_total
            and self.consumed == self.applied + self.duplicate + self.violation + self.pending
        )

    def __repr__(self) -> str:
        return (
            f"Tally(consumed={self.consumed}, applied={self.applied}, duplicate={self.duplicate}, "
            f"violation={self.violation}, buffered={self.buffered}, released={self.released})"
        )


@dataclass
class FoldResult:
    """The fold of many runs' events: ``runs`` by run_id, within the global bounds.

    Use :meth:`apply` per event (the service does) or :func:`fold` for a whole stream.
    """

    config: FoldConfig = DEFAULT_CONFIG
    runs: dict[UUID, RunState] = field(default_factory=dict)
    tombstones: OrderedDict[UUID, tuple[int, RunStatus]] = field(default_factory=OrderedDict)
    """Evicted finished runs: run_id -> (last_seq, status), oldest first."""
    stats: FoldStats = field(default_factory=FoldStats)
    tally: Tally = field(default_factory=Tally)
    pending_total: int = 0
    """Events held in all reorder buffers."""
    _order: OrderedDict[UUID, None] = field(default_factory=OrderedDict, repr=False)
    _finished: OrderedDict[UUID, None] = field(default_factory=OrderedDict, repr=False)
    _with_pending: OrderedDict[UUID, None] = field(default_factory=OrderedDict, repr=False)

    def add(self, state: RunState) -> list[Outcome]:
        """Track a run restored from elsewhere (replacing any state of that run)."""
        outcomes: list[Outcome] = []
        run_id = state.run_id
        if run_id in self.runs:
            self._forget(run_id)
        elif len(self.runs) >= self.config.max_runs:
            outcomes = self._make_room()
        self.tombstones.pop(run_id, None)
        self.runs[run_id] = state
        self._order[run_id] = None
        self._track(run_id, state, 0)
        return outcomes

    def apply(self, event: Event, digest: int | None = None) -> list[Outcome]:
        """Fold one event; the outcomes may include released events of other runs
        flushed or evicted to keep within the global bounds."""
        run_id = event.run_id
        state = self.runs.get(run_id)
        room: list[Outcome] = []
        if state is None:
            tombstone = self.tombstones.get(run_id)
            if tombstone is not None:
                outcomes = [self._tombstone_outcome(event, *tombstone)]
                self.tally.add(outcomes)
                return outcomes
            if len(self.runs) >= self.config.max_runs:
                room = self._make_room()
            state = RunState.new(run_id, event.timestamp, self.config)
            self.runs[run_id] = state
            self._order[run_id] = None
        before = len(state.pending_events)
        outcomes = _step(state, event, self.config, digest)
        if before or state.pending_events or state.status is not _RUNNING:
            self._track(run_id, state, before)
            if self.pending_total > self.config.max_pending_total:
                outcomes.extend(self.relieve())
        if room:
            outcomes.extend(room)
        self.tally.add(outcomes)
        return outcomes

    def _track(self, run_id: UUID, state: RunState, before: int) -> None:
        """Book-keeping after ``state`` changed: buffers, finished runs, the bounds."""
        after = len(state.pending_events)
        self.pending_total += after - before
        if after:
            if run_id not in self._with_pending:
                self._with_pending[run_id] = None
        else:
            self._with_pending.pop(run_id, None)
        if state.status is not _RUNNING and run_id not in self._finished:
            self._finished[run_id] = None

    def relieve(self) -> list[Outcome]:
        """Flush the oldest buffers until all of them together are within the bound."""
        outcomes: list[Outcome] = []
        while self.pending_total > self.config.max_pending_total and self._with_pending:
            run_id = next(iter(self._with_pending))
            state = self.runs[run_id]
            before = len(state.pending_events)
            outcomes.extend(flush(state, self.config))
            self.stats.forced_flushes += 1
            self._track(run_id, state, before)
        return outcomes

    def _make_room(self) -> list[Outcome]:
        """Evict one run: the longest finished, else the oldest running (flushed first)."""
        if self._finished:
            run_id, _ = self._finished.popitem(last=False)
            state = self.runs.pop(run_id)
            self._order.pop(run_id, None)
            self.tombstones[run_id] = (state.last_seq, state.status)
            if len(self.tombstones) > self.config.max_tombstones:
                self.tombstones.popitem(last=False)
                self.stats.tombstones_dropped += 1
            self.stats.finished_runs_evicted += 1
            return []
        run_id, _ = self._order.popitem(last=False)
        state = self.runs[run_id]
        before = len(state.pending_events)
        outcomes = flush(state, self.config)
        self._track(run_id, state, before)
        self._forget(run_id)
        self.stats.running_runs_evicted += 1
        return outcomes

    def _forget(self, run_id: UUID) -> None:
        state = self.runs.pop(run_id)
        self.pending_total -= len(state.pending_events)
        self._order.pop(run_id, None)
        self._finished.pop(run_id, None)
        self._with_pending.pop(run_id, None)

    def _tombstone_outcome(self, event: Event, last_seq: int, status: RunStatus) -> Outcome:
        self.stats.tombstone_events += 1
        seq = event.seq
        run_id = event.run_id
        if seq <= last_seq:
            kind, name, outcome = (
                ViolationKind.DUPLICATE,
                "dropped as a duplicate (the run was evicted, its content cannot be compared)",
                _DUPLICATE,
            )
        else:
            kind, name, outcome = (
                ViolationKind.AFTER_TERMINAL,
                f"ignored: the run ended {status.value} at seq {last_seq}",
                _VIOLATION,
            )
        violation = Violation(
            run_id=run_id,
            kind=kind,
            first_seq=seq,
            last_seq=seq,
            message=f"run {run_id}: event at seq {seq} {name}",
        )
        return _new_outcome(Outcome, (outcome, run_id, seq, (violation,), False))


def fold(events: Iterable[Event], config: FoldConfig = DEFAULT_CONFIG) -> FoldResult:
    """Fold a stream of events of any runs: a loop over :meth:`FoldResult.apply`."""
    result = FoldResult(config)
    apply = result.apply
    for event in events:
        apply(event)
    return result
