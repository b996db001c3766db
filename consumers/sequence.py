"""One run's sequence rules: where an event stands against the run's last applied seq.

:func:`apply_event` is the pure step. The next event of a RUNNING run is applied by the
next-event rule (:mod:`consumers.next_event`); here is what becomes of every other one:
one ahead waits in the run's reorder buffer until its predecessors come or a bound
declares the gap (:func:`expire`, :func:`flush`); one at or below ``last_seq`` is judged
by its content digest (:mod:`consumers.digest`) a duplicate or a conflict; one after the
end is refused. :mod:`consumers.runs` documents the rules and adds the many-run layer
(:class:`~consumers.runs.FoldResult`, :func:`~consumers.runs.fold`).
"""

from __future__ import annotations

from consumers.digest import content_digest
from consumers.next_event import apply_next, bad_digest, fold_next, grow_ring, record_violation
from consumers.state import (
    DEFAULT_CONFIG,
    FIRST_RING,
    FoldConfig,
    FoldError,
    Outcome,
    OutcomeKind,
    RunState,
)
from schemas import Event, RunStatus, Violation, ViolationKind

__all__ = [
    "apply_event",
    "duplicate_violation",
    "expire",
    "flush",
]

_RUNNING = RunStatus.RUNNING
_APPLIED = OutcomeKind.APPLIED
_DUPLICATE = OutcomeKind.DUPLICATE
_VIOLATION = OutcomeKind.VIOLATION
_BUFFERED = OutcomeKind.BUFFERED
_new_outcome = tuple.__new__  # Outcome(...) without the NamedTuple's Python-level __new__
_U64_MAX = 2**64 - 1


def _drain(state: RunState, outcomes: list[Outcome], released: bool = False) -> None:
    """Apply buffered successors of ``last_seq`` in order; end the buffer if the run ended.

    ``released``: an event already left the buffer, its oldest timestamp is to be redone.
    """
    pending = state.pending_events
    run_id = state.run_id
    while state.status is _RUNNING:
        entry = pending.pop(state.last_seq + 1, None)
        if entry is None:
            break
        released = True
        event, digest = entry
        carried = apply_next(state, event.seq, event.kind.type, digest, event)
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


def duplicate_violation(outcome: Outcome) -> Violation:
    """The ``duplicate`` violation of a ``DUPLICATE`` outcome, for a caller that publishes
    duplicates (the service's ``publish_duplicates``). The fold itself records none: a
    duplicate is counted in the run's ``duplicates`` (DESIGN.md §5), not a violation."""
    return Violation(
        run_id=outcome.run_id,
        kind=ViolationKind.DUPLICATE,
        first_seq=outcome.seq,
        last_seq=outcome.seq,
        message=f"run {outcome.run_id}: event at seq {outcome.seq} dropped as a duplicate "
        "(counted in the run's duplicates)",
    )


def _after_terminal(state: RunState, seq: int) -> Violation:
    return record_violation(
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
    gap = record_violation(
        state,
        ViolationKind.GAP,
        first,
        last,
        f"run {state.run_id}: seq {first}..{last} never arrived within the reorder bound; "
        f"moved on to seq {next_seq}",
    )
    missing = state.missing
    if not isinstance(missing, list):  # the run's first: () until now
        missing = state.missing = []
    missing.append((first, last))
    if len(missing) > config.max_missing_ranges:
        del missing[0]
        state.missing_ranges_dropped += 1
    digests = state.digests
    if len(digests) == FIRST_RING < next_seq and state.config.digest_window > FIRST_RING:
        digests = grow_ring(state, next_seq)  # before the gap's slots are cleared
    window = len(digests)
    for seq in range(max(first, next_seq - window), next_seq):
        digests[seq % window] = 0  # those slots describe older seqs now: unknown
    state.last_seq = last
    event, digest = pending.pop(next_seq)
    carried = (gap, *apply_next(state, next_seq, event.kind.type, digest, event))
    outcomes.append(_new_outcome(Outcome, (_APPLIED, state.run_id, next_seq, carried, True)))
    _drain(state, outcomes, released=True)


def _enforce_bounds(
    state: RunState, config: FoldConfig, outcomes: list[Outcome], clock: int | None = None
) -> None:
    """Declare gaps while the buffer is over a bound: more than ``max_pending_per_run``
    events, or its oldest event more than ``max_delay_ns`` behind ``clock`` (the run's
    own stream time unless a later one is given: the partition's, see :func:`expire`)."""
    pending = state.pending_events
    now = state.stream_time if clock is None or clock < state.stream_time else clock
    while pending and (
        len(pending) > config.max_pending_per_run
        or now - state.pending_oldest_ts > config.max_delay_ns
    ):
        _declare_first_gap(state, config, outcomes)


def expire(state: RunState, stream_time: int, config: FoldConfig = DEFAULT_CONFIG) -> list[Outcome]:
    """Hold ``state``'s reorder buffer to its time bound against ``stream_time``.

    ``stream_time`` is the newest event time seen where the run lives (the folding
    service passes its partition's; :meth:`~consumers.runs.FoldResult.expire` the whole
    fold's). A run's own stream time only moves with its own events, so a run whose
    missing event is followed by nothing (a ``graph_completed`` buffered behind a lost
    seq) would wait forever; against the partition's clock its gap is declared once the
    partition has moved ``max_delay_ns`` past the buffered event. The outcomes are all
    ``released`` (none when nothing is due).
    """
    outcomes: list[Outcome] = []
    if state.pending_events:
        _enforce_bounds(state, config, outcomes, stream_time)
    return outcomes


def _seen_before(state: RunState, event: Event, digest: int, seq: int) -> Outcome:
    """The outcome of an event at a seq at or below ``last_seq``."""
    run_id = state.run_id
    if seq == 0:
        # The codec refuses seq 0 (the service sends such a record to the DLQ); a
        # hand-built Event can still carry it, and the fold stays defensive.
        return _new_outcome(
            Outcome,
            (
                _VIOLATION,
                run_id,
                0,
                (
                    record_violation(
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
            late = record_violation(
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
        # Older than the digest window: the content cannot be compared; a redelivery
        # is far likelier than a conflict, and neither is applied.
        state.duplicates += 1
        state.unverified_duplicates += 1
        return _new_outcome(Outcome, (_DUPLICATE, run_id, seq, (), False))
    return _compare(state, event, seq, digest, known, "applied")


def _compare(
    state: RunState, event: Event, seq: int, digest: int, known: int, where: str
) -> Outcome:
    run_id = state.run_id
    if digest == known:
        # Counted, not a violation (DESIGN.md §5): a redelivery is normal at-least-once
        # traffic, and publishing each one would bury the anomalies that matter.
        state.duplicates += 1
        return _new_outcome(Outcome, (_DUPLICATE, run_id, seq, (), False))
    conflict = record_violation(
        state,
        ViolationKind.CONFLICT,
        seq,
        seq,
        f"run {run_id}: event at seq {seq} ({event.kind.type}) differs from the one {where} "
        "at that seq; not applied",
    )
    return _new_outcome(Outcome, (_VIOLATION, run_id, seq, (conflict,), False))


def fold_event(
    state: RunState, event: Event, config: FoldConfig, digest: int | None
) -> list[Outcome]:
    """Fold one event of ``state``'s run; the heart of :func:`apply_event`, for a caller
    that routed the event to its run's state itself (:class:`~consumers.runs.FoldResult`):
    no state is made and the run is not checked. Not in ``__all__``: the fold's own."""
    seq = event.seq
    timestamp = event.timestamp
    if digest is None:
        digest = content_digest(event)
    tag = event.kind.type
    if fold_next(state, seq, timestamp, tag, digest):
        return [_new_outcome(Outcome, (_APPLIED, state.run_id, seq, (), False))]
    outcome = _step_aside(state, event, seq, digest)
    kind = outcome.kind
    # Only an event that takes its place in the run moves the run's reorder clock: a
    # rejected one (a conflict, an event after the end) stamped an hour ahead must not
    # declare gaps in a buffer that is waiting in time.
    if (kind is _APPLIED or kind is _BUFFERED) and timestamp > state.stream_time:
        state.stream_time = timestamp
    outcomes = [outcome]
    if kind is _APPLIED and state.pending_events:
        _drain(state, outcomes)
    if state.pending_events:
        _enforce_bounds(state, config, outcomes)
    return outcomes


def _step_aside(state: RunState, event: Event, seq: int, digest: int) -> Outcome:
    """The outcome of any event but the next one of a run under way."""
    if not isinstance(digest, int) or not 0 < digest <= _U64_MAX:
        raise bad_digest(state, seq, digest)
    last = state.last_seq
    run_id = state.run_id
    if seq == last + 1 and state.status is _RUNNING:
        carried = apply_next(state, seq, event.kind.type, digest, event)
        return _new_outcome(Outcome, (_APPLIED, run_id, seq, carried, False))
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
    if not pending:  # the shared NO_PENDING (or an emptied one): the run gets its own
        pending = state.pending_events = {}
        state.pending_oldest_ts = event.timestamp.real
    elif event.timestamp < state.pending_oldest_ts:
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
    :class:`~consumers.state.Outcome` for the accounting). ``digest`` is the
    event's content digest when the caller has one: :func:`~consumers.digest.content_digest`
    (what ``None`` computes), or the same value by another route (the service's C lane:
    :func:`~consumers.digest.digest_bytes` of a record's content bytes it proved
    canonical). Any other
    digest would not compare with the ones kept in the state, restored states included.

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
    return state, fold_event(state, event, config, digest)


def flush(state: RunState, config: FoldConfig = DEFAULT_CONFIG) -> list[Outcome]:
    """Give up waiting: declare every gap before buffered events and apply them all.

    For a run about to be evicted, or when the buffers of all runs are over
    ``max_pending_total``. The outcomes are all ``released``.
    """
    outcomes: list[Outcome] = []
    while state.pending_events:
        _declare_first_gap(state, config, outcomes)
    return outcomes
