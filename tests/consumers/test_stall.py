"""The stalled-run rule (consumers.stall): flagged once, never when finished, cleared by an
applied event, and the option that ends a stalled run as FAILED."""

from __future__ import annotations

import pytest
from fold_events import EventFactory

from consumers import apply_event, fold_next
from consumers.stall import flag_stalled, stall_due
from consumers.state import OutcomeKind, RunState
from schemas import RunStatus, Timestamp, ViolationKind

pytestmark = pytest.mark.unit

MIN = 60 * 10**9
AFTER = 30 * MIN
SEEN = Timestamp.parse("2026-12-06T21:00:00Z")


def _running(event_factory: EventFactory, last: int = 3) -> RunState:
    state, _ = apply_event(None, event_factory(1, "graph_started"))
    for seq in range(2, last + 1):
        apply_event(state, event_factory(seq))
    return state


def test_a_silent_running_run_is_flagged_once(event_factory: EventFactory) -> None:
    state = _running(event_factory)
    assert flag_stalled(state, SEEN, SEEN + AFTER - 1, AFTER) is None  # not yet
    now = SEEN + AFTER + 5 * MIN
    stall = flag_stalled(state, SEEN, now, AFTER)
    assert stall is not None and stall.outcomes == []
    violation = stall.violation
    assert violation is not None
    assert violation.kind is ViolationKind.STALLED
    assert (violation.first_seq, violation.last_seq) == (3, 3)
    assert str(state.run_id) in violation.message
    assert "35 min after seq 3" in violation.message
    assert "2026-12-06T21:00:00" in violation.message  # since when
    assert state.stalled_since == now
    assert state.status is RunStatus.RUNNING  # by default the status is the agent's business
    assert state.violation_counts[ViolationKind.STALLED] == 1
    assert list(state.recent_violations)[-1] == violation
    # Not flagged again while stalled, however long it stays silent.
    assert flag_stalled(state, SEEN, now + 10 * AFTER, AFTER) is None
    assert state.violation_counts[ViolationKind.STALLED] == 1


@pytest.mark.parametrize("end", ["graph_completed", "graph_failed"])
def test_a_finished_run_is_never_flagged(event_factory: EventFactory, end: str) -> None:
    state = _running(event_factory)
    apply_event(state, event_factory(4, end))
    assert not stall_due(state, SEEN, SEEN + 100 * AFTER, AFTER)
    assert flag_stalled(state, SEEN, SEEN + 100 * AFTER, AFTER) is None
    assert state.stalled_since is None
    assert state.violation_counts[ViolationKind.STALLED] == 0


def test_an_applied_event_clears_the_stall_and_a_new_silence_flags_again(
    event_factory: EventFactory,
) -> None:
    state = _running(event_factory)
    assert flag_stalled(state, SEEN, SEEN + AFTER, AFTER) is not None
    _, outcomes = apply_event(state, event_factory(4))
    assert outcomes[0].kind is OutcomeKind.APPLIED
    assert state.stalled_since is None
    later = SEEN + 2 * AFTER
    assert flag_stalled(state, later, later + AFTER, AFTER) is not None
    assert state.violation_counts[ViolationKind.STALLED] == 2


def test_the_batch_lane_path_clears_the_stall_too(event_factory: EventFactory) -> None:
    state = _running(event_factory)
    flag_stalled(state, SEEN, SEEN + AFTER, AFTER)
    assert fold_next(state, 4, int(SEEN), "tool_called", 1)
    assert state.stalled_since is None


def test_a_buffered_event_does_not_clear_the_stall(event_factory: EventFactory) -> None:
    state = _running(event_factory)
    flag_stalled(state, SEEN, SEEN + AFTER, AFTER)
    _, outcomes = apply_event(state, event_factory(6))  # 4 and 5 missing: held
    assert outcomes[0].kind is OutcomeKind.BUFFERED
    assert state.stalled_since is not None


def test_the_fail_option_ends_the_run_failed_with_a_reason(event_factory: EventFactory) -> None:
    state = _running(event_factory)
    now = SEEN + AFTER
    stall = flag_stalled(state, SEEN, now, AFTER, fail=True)
    assert stall is not None and stall.violation is not None
    assert state.status is RunStatus.FAILED
    assert state.finished_at == now
    assert state.outputs == {"error": "stalled: no event for 30 min after seq 3"}
    assert state.run.outputs == state.outputs  # the Run downstream readers see says why
    assert "FAILED" in stall.violation.message
    assert state.stalled_since == now
    # Ended: an event after it is after_terminal, and it is never flagged again.
    _, outcomes = apply_event(state, event_factory(4))
    assert outcomes[0].kind is OutcomeKind.VIOLATION
    assert outcomes[0].violations[0].kind is ViolationKind.AFTER_TERMINAL
    assert flag_stalled(state, SEEN, now + AFTER, AFTER, fail=True) is None


def test_failing_gives_up_the_buffer_first_and_accounts_for_it(
    event_factory: EventFactory,
) -> None:
    state = _running(event_factory)
    apply_event(state, event_factory(5))  # 4 lost
    stall = flag_stalled(state, SEEN, SEEN + AFTER, AFTER, fail=True)
    assert stall is not None and stall.violation is not None
    assert [(o.kind, o.seq, o.released) for o in stall.outcomes] == [(OutcomeKind.APPLIED, 5, True)]
    assert state.missing == [(4, 4)] and not state.pending_events
    assert state.status is RunStatus.FAILED and state.last_seq == 5
    assert "after seq 5" in stall.violation.message


def test_a_buffered_end_given_up_on_ends_the_run_unflagged(event_factory: EventFactory) -> None:
    state = _running(event_factory)
    apply_event(state, event_factory(5, "graph_completed"))  # 4 lost
    stall = flag_stalled(state, SEEN, SEEN + AFTER, AFTER, fail=True)
    assert stall is not None and stall.violation is None
    assert [o.released for o in stall.outcomes] == [True]
    assert state.status is RunStatus.COMPLETED and state.stalled_since is None
    assert state.violation_counts[ViolationKind.STALLED] == 0


def test_seconds_read_as_seconds(event_factory: EventFactory) -> None:
    state = _running(event_factory)
    stall = flag_stalled(state, SEEN, SEEN + 1_500_000_000, 10**9)
    assert stall is not None and stall.violation is not None
    assert "no event for 1.5 s after seq 3" in stall.violation.message
