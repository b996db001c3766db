"""THE next-event rule: what applying the event at ``last_seq + 1`` does to a RUNNING run.

:func:`apply_next` is the one place an event is applied, whatever path it came by: its
digest goes into the run's digest ring (grown with the run, :func:`grow_ring`),
``last_seq`` moves on, and one small function per kind projects it onto the run.
:func:`fold_next` is its entry for a caller that holds an event's values without its
model (the service's batch lane). Which event is the next one, and what becomes of the
others (buffered, duplicate, conflict, after the end), is :mod:`consumers.sequence`'s.
:func:`record_violation` is how every rule of the fold records a violation in its run.

``__all__`` is what :mod:`consumers` exports; :func:`apply_next`, :func:`grow_ring`,
:func:`record_violation` and :func:`bad_digest` are public for the fold's other modules
(:mod:`consumers.sequence`, :mod:`consumers.stall`), not part of the package's API.
"""

from __future__ import annotations

from array import array
from collections import deque
from collections.abc import Callable

from consumers.state import (
    FIRST_RING,
    NO_VIOLATIONS,
    FoldError,
    RunState,
    relaid_ring,
    shared_text,
)
from schemas import Event, RunStatus, Violation, ViolationKind

__all__ = ["COUNTED_KINDS", "fold_next"]

_RUNNING = RunStatus.RUNNING


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
        state.agent_spec_digest = shared_text(digest) if isinstance(digest, str) else ""
        state.git_sha = shared_text(sha) if isinstance(sha, str) else ""
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


def _count(counter: str) -> Callable[[RunState, Event], None]:
    """The projector of a kind that only counts: one more in ``counter``.

    Compiled from source so it is exactly ``state.<counter> += 1`` (a slot's
    descriptor called from Python costs twice as much)."""
    if not counter.isidentifier():
        raise ValueError(f"not a counter name: {counter!r}")
    env: dict[str, Callable[[RunState, Event], None]] = {}
    exec(f"def _count_{counter}(state, event):\n    state.{counter} += 1\n", env)  # noqa: S102
    return env[f"_count_{counter}"]


COUNTED_KINDS: dict[str, str] = {
    "node_entered": "nodes_entered",
    "node_exited": "nodes_exited",
    "node_failed": "node_failures",
    "node_retrying": "retries",
    "tool_called": "tool_calls",
    "tool_returned": "tool_returns",
    "tool_failed": "tool_failures",
    "checkpoint_saved": "checkpoints_saved",
    "checkpoint_restored": "checkpoints_restored",
    "checkpoint_deleted": "checkpoints_deleted",
    "state_updated": "state_updates",
    "message_added": "messages",
}
"""Kinds whose only effect on a run is one more in a counter (tag -> counter name).

Their events change nothing else: neither the kind's fields nor the payload are
read, which lets the service's fast lane fold them from their bytes alone
(:mod:`consumers.service.lane`)."""


_PROJECTORS: dict[str, Callable[[RunState, Event], None]] = {
    "graph_started": _graph_started,
    "graph_completed": _graph_completed,
    "graph_failed": _graph_failed,
    "graph_interrupted": _graph_interrupted,
    **{tag: _count(counter) for tag, counter in COUNTED_KINDS.items()},
}


# --- the rule --------------------------------------------------------------------------


def record_violation(
    state: RunState, kind: ViolationKind, first: int, last: int, message: str
) -> Violation:
    """Record a violation in the run's summary and return it."""
    violation = Violation(
        run_id=state.run_id, kind=kind, first_seq=first, last_seq=last, message=message
    )
    counts = state.violation_counts
    if counts is NO_VIOLATIONS:
        counts = state.violation_counts = dict(NO_VIOLATIONS)
    counts[kind] += 1  # type: ignore[index]  # the run's own dict, made just above
    recent = state.recent_violations
    if not recent:
        recent = state.recent_violations = deque(maxlen=state.config.max_recent_violations)
    elif len(recent) == recent.maxlen:
        state.violations_dropped += 1
    recent.append(violation)
    return violation


def apply_next(
    state: RunState, seq: int, tag: str, digest: int, event: Event | None
) -> tuple[Violation, ...]:
    """Apply the event at ``last_seq + 1`` of a RUNNING run: THE next-event rule.

    Every path that applies an event comes here: :func:`~consumers.sequence.apply_event`
    (in order, released from the reorder buffer, after a declared gap) and
    :func:`fold_next` (what the service's batch lane hands over). Returns the violation
    noticed on the way, if any (``missing_start`` for a first event that is not
    ``graph_started``). ``event`` may be None only for the kinds of
    :data:`COUNTED_KINDS`, whose projection reads nothing but the tag. An applied event
    clears ``stalled_since`` (:mod:`consumers.stall`).
    """
    digests = state.digests
    size = len(digests)
    if size == FIRST_RING and seq > size and state.config.digest_window > size:
        digests = grow_ring(state, seq)
        size = len(digests)
    try:
        digests[seq % size] = digest
    except (OverflowError, TypeError):
        raise bad_digest(state, seq, digest) from None
    state.last_seq = seq
    # An applied event ends a stall (consumers.stall): one slot store, cheaper than a test.
    state.stalled_since = None
    noticed: tuple[Violation, ...] = ()
    if not state.events_applied and not state.has_identity:
        # A first event: fold_next never hands one over, so ``event`` is here.
        state.started_at = event.timestamp  # type: ignore[union-attr]
        if tag != "graph_started":
            noticed = (
                record_violation(
                    state,
                    ViolationKind.MISSING_START,
                    seq,
                    seq,
                    f"run {state.run_id}: first event applied is {tag} at seq {seq}, "
                    "not graph_started; identity fields stay empty until one arrives",
                ),
            )
    state.events_applied += 1
    _PROJECTORS[tag](state, event)  # type: ignore[arg-type]  # None only for counted kinds
    return noticed


def grow_ring(state: RunState, seq: int) -> array[int]:
    """The run's short digest ring replaced by one of the whole window, before ``seq`` is
    applied, the digests it held moved to their slots (:data:`~consumers.state.FIRST_RING`).
    Once, at a run's fifth seq: growing by doubling cost the lane ~0.3 µs a record."""
    size = state.config.digest_window
    ring = state.digests = relaid_ring(state.digests, state.last_seq, size, seq - size + 1)
    return ring


def fold_next(state: RunState, seq: int, timestamp: int, tag: str, digest: int) -> bool:
    """Fold the next event of a run under way when it needs nothing but the rule.

    True (and the event applied by :func:`apply_next`, the stream time advanced) when the
    run is RUNNING, has applied an event, buffers none, ``seq`` is ``last_seq + 1`` and
    ``tag`` is one of :data:`COUNTED_KINDS`: then the outcome is ``APPLIED`` with no
    violation and nothing released, exactly what :func:`~consumers.sequence.apply_event`
    would return. False and nothing changed otherwise: the caller takes ``apply_event``.

    For callers that have the event's values without its model: the folding service's
    batch lane reads them from the record's bytes (:mod:`consumers.service.lane`).
    """
    if (
        seq != state.last_seq + 1
        or state.status is not _RUNNING
        or not state.events_applied
        or state.pending_events
        or tag not in COUNTED_KINDS
    ):
        return False
    if timestamp > state.stream_time:
        state.stream_time = timestamp
    apply_next(state, seq, tag, digest, None)
    return True


def bad_digest(state: RunState, seq: int, digest: object) -> FoldError:
    """The error for a digest handed over that is not an integer in 1..2**64-1."""
    return FoldError(
        f"run {state.run_id} seq {seq}: digest {digest!r} is not an integer in 1..2**64-1; "
        "pass content_digest(event) or digest_bytes(body), or None"
    )
