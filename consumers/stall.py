"""Stalled runs: a RUNNING run that has had no event for ``stall_after`` is flagged once.

An agent that dies mid-run sends no ``graph_failed``: its run would stay RUNNING for
ever, and nothing in the event stream can say so (the stream of a dead agent looks
like the stream of a slow one). Only a clock can, so the rule takes the times from its
caller (the folding service passes wall-clock nanoseconds; there is no clock here):

- a RUNNING run whose last event was seen at ``last_event_ns`` is *stalled* once
  ``now_ns - last_event_ns >= stall_after_ns``: it gets one ``stalled`` violation
  (counted and kept like the others) and ``stalled_since = now_ns``;
- it is not flagged again while stalled; an event applied to it clears
  ``stalled_since`` (:func:`consumers.next_event.apply_next`, the one next-event rule), after
  which a new silence can flag it again;
- a finished run is never flagged;
- the status is not changed (only the agent's own events change it), unless the caller
  asks (``fail=True``): then the run ends FAILED at ``now_ns`` with an error in its
  outputs that says why. Its reorder buffer is given up first (:func:`~consumers.sequence.flush`:
  the gaps before buffered events declared, the events applied), as for a run evicted;
  if that ends the run, it is not flagged.
"""

from __future__ import annotations

from typing import NamedTuple

from consumers.next_event import record_violation
from consumers.sequence import flush
from consumers.state import DEFAULT_CONFIG, FoldConfig, Outcome, RunState
from schemas import RunStatus, Timestamp, Violation, ViolationKind

__all__ = ["Stall", "flag_stalled", "stall_due"]


class Stall(NamedTuple):
    """What flagging a stalled run did."""

    violation: Violation | None
    """The ``stalled`` violation, recorded in the run's summary; to be published. None
    when giving up the buffer (``fail``) ended the run: then it is not stalled."""
    outcomes: list[Outcome]
    """Outcomes of buffered events given up on when the run was ended (``fail``): all
    ``released``, to be counted with the others. Empty otherwise."""


def stall_due(state: RunState, last_event_ns: int, now_ns: int, stall_after_ns: int) -> bool:
    """True when ``state`` is RUNNING, not flagged yet and silent for ``stall_after_ns``."""
    return (
        state.status is RunStatus.RUNNING
        and state.stalled_since is None
        and now_ns - last_event_ns >= stall_after_ns
    )


def flag_stalled(
    state: RunState,
    last_event_ns: int,
    now_ns: int,
    stall_after_ns: int,
    *,
    fail: bool = False,
    config: FoldConfig = DEFAULT_CONFIG,
) -> Stall | None:
    """Flag ``state`` stalled if it is due (:func:`stall_due`); None when it is not due.

    ``last_event_ns`` is when the caller last saw an event of the run (or started
    watching it: the service's restore), ``now_ns`` the time now, on the same clock (the
    service: wall clock). ``fail``: end the run FAILED
    too (see the module docstring).
    """
    if not stall_due(state, last_event_ns, now_ns, stall_after_ns):
        return None
    outcomes: list[Outcome] = []
    if fail and state.pending_events:
        outcomes = flush(state, config)
        if state.status is not RunStatus.RUNNING:
            return Stall(None, outcomes)  # its buffer held its end: not stalled after all
    silent = _duration(now_ns - last_event_ns)
    last_seq = state.last_seq
    since = Timestamp(last_event_ns).isoformat()
    if fail:
        state.status = RunStatus.FAILED
        state.finished_at = Timestamp(now_ns)
        state.outputs = {"error": f"stalled: no event for {silent} after seq {last_seq}"}
        what = "ended as FAILED (fail_stalled_runs is set)"
    else:
        what = (
            "still RUNNING: its agent may have died or its last events were lost; "
            "an event for it clears this"
        )
    violation = record_violation(
        state,
        ViolationKind.STALLED,
        last_seq,
        last_seq,
        f"run {state.run_id}: no event for {silent} after seq {last_seq} "
        f"(none seen since {since}); {what}",
    )
    state.stalled_since = now_ns
    return Stall(violation, outcomes)


def _duration(ns: int) -> str:
    """``ns`` for a person: whole minutes from one minute on, seconds below."""
    seconds = ns / 1e9
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.3g} s"
