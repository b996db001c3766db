"""One table row per outcome of DESIGN.md §5 and per status rule of §1, with literal events,
the outcomes they must get and the ``Run`` JSON they must fold to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

import pytest
from fold_events import MS, RUN_ID, T0, EventFactory

from consumers import FoldConfig, FoldError, FoldResult, Outcome, OutcomeKind, apply_event, expire
from schemas import Event, RunStatus, ViolationKind

pytestmark = pytest.mark.unit

RID = "6f1c2d3e-4b5a-4c6d-8e7f-0123456789ab"
RUNNING_RUN = (
    '{"run_id":"' + RID + '","agent_spec_digest":"spec-1","git_sha":"abc123",'
    '"started_at":"2024-05-01T12:00:00.001Z","finished_at":null,"status":"RUNNING",'
    '"inputs":{"q":"hi"},"outputs":null,"final_state_digest":null}'
)


def describe(outcome: Outcome) -> str:
    """``"applied 3 released +gap(2..2)"``: kind, seq, released, violations."""
    text = f"{outcome.kind.value} {outcome.seq}"
    if outcome.released:
        text += " released"
    for violation in outcome.violations:
        text += f" +{violation.kind.value}({violation.first_seq}..{violation.last_seq})"
    return text


@dataclass
class Case:
    name: str
    events: Callable[[EventFactory], list[Event]]
    outcomes: list[str]
    run_json: str
    last_seq: int
    config: FoldConfig = field(default_factory=FoldConfig)
    counters: dict[str, int] = field(default_factory=dict)


CASES = [
    # --- DESIGN §5: sequence outcomes ---------------------------------------------------
    Case(
        "s == l+1: applied",
        lambda ev: [ev(1, "graph_started"), ev(2, "node_entered"), ev(3, "tool_called")],
        ["applied 1", "applied 2", "applied 3"],
        RUNNING_RUN,
        3,
        counters={"events_applied": 3, "nodes_entered": 1, "tool_calls": 1},
    ),
    Case(
        "s == l+1: applied, then buffered successors in order",
        lambda ev: [ev(1, "graph_started"), ev(4), ev(3), ev(2)],
        [
            "applied 1",
            "buffered 4",
            "buffered 3",
            "applied 2",
            "applied 3 released",
            "applied 4 released",
        ],
        RUNNING_RUN,
        4,
        counters={"events_applied": 4, "tool_calls": 3, "events_buffered": 2},
    ),
    Case(
        "s <= l, same content: duplicate dropped and counted",
        lambda ev: [ev(1, "graph_started"), ev(2), ev(2), ev(1, "graph_started")],
        ["applied 1", "applied 2", "duplicate 2", "duplicate 1"],
        RUNNING_RUN,
        2,
        counters={"events_applied": 2, "tool_calls": 1, "duplicates": 2},
    ),
    Case(
        "s <= l, other content: conflict, not applied",
        lambda ev: [
            ev(1, "graph_started"),
            ev(2),
            ev(2, "tool_failed"),
            ev(2, payload={"other": True}),
            ev(2, at=T0 + 2 * MS + 1),
        ],
        [
            "applied 1",
            "applied 2",
            "violation 2 +conflict(2..2)",
            "violation 2 +conflict(2..2)",
            "violation 2 +conflict(2..2)",
        ],
        RUNNING_RUN,
        2,
        counters={"events_applied": 2, "tool_calls": 1, "tool_failures": 0},
    ),
    Case(
        "s > l+1, buffer over its event bound: gap named, run moves on",
        lambda ev: [ev(1, "graph_started"), ev(3), ev(4), ev(5)],
        [
            "applied 1",
            "buffered 3",
            "buffered 4",
            "buffered 5",
            "applied 3 released +gap(2..2)",
            "applied 4 released",
            "applied 5 released",
        ],
        RUNNING_RUN,
        5,
        config=FoldConfig(max_pending_per_run=2),
        counters={"events_applied": 4, "events_buffered": 3},
    ),
    Case(
        "s > l+1, buffer over its time bound: gap named, run moves on",
        lambda ev: [ev(1, "graph_started"), ev(4), ev(5, at=T0 + 4 * MS + 1_000 * MS + 1)],
        [
            "applied 1",
            "buffered 4",
            "buffered 5",
            "applied 4 released +gap(2..3)",
            "applied 5 released",
        ],
        RUNNING_RUN,
        5,
        config=FoldConfig(max_delay_ns=1_000 * MS),
    ),
    Case(
        "time bound: only the gap before events too long buffered is declared",
        lambda ev: [
            ev(1, "graph_started"),
            ev(3),
            ev(5, at=T0 + 903 * MS),
            ev(6, at=T0 + 1_003 * MS + 1),
        ],
        [
            "applied 1",
            "buffered 3",
            "buffered 5",
            "buffered 6",
            "applied 3 released +gap(2..2)",
        ],
        RUNNING_RUN,
        3,
        config=FoldConfig(max_delay_ns=1_000 * MS),
    ),
    Case(
        "time bound reached by an in-order event of the run",
        lambda ev: [ev(1, "graph_started"), ev(3), ev(2, at=T0 + 3 * MS + 1_000 * MS + 1)],
        ["applied 1", "buffered 3", "applied 2", "applied 3 released"],
        RUNNING_RUN,
        3,
        config=FoldConfig(max_delay_ns=1_000 * MS),
    ),
    Case(
        "late event for a seq declared missing: a gap violation, never applied",
        lambda ev: [ev(1, "graph_started"), ev(3), ev(4), ev(2), ev(2)],
        [
            "applied 1",
            "buffered 3",
            "buffered 4",
            "applied 3 released +gap(2..2)",
            "applied 4 released",
            "violation 2 +gap(2..2)",
            "violation 2 +gap(2..2)",
        ],
        RUNNING_RUN,
        4,
        config=FoldConfig(max_pending_per_run=1),
        counters={"events_applied": 3},
    ),
    Case(
        "s > l+1 already buffered: duplicate or conflict of the buffered one",
        lambda ev: [ev(1, "graph_started"), ev(3), ev(3), ev(3, "tool_failed"), ev(2)],
        [
            "applied 1",
            "buffered 3",
            "duplicate 3",
            "violation 3 +conflict(3..3)",
            "applied 2",
            "applied 3 released",
        ],
        RUNNING_RUN,
        3,
        counters={"tool_calls": 2, "tool_failures": 0, "duplicates": 1},
    ),
    Case(
        "run terminal: after_terminal, status unchanged",
        lambda ev: [ev(1, "graph_started"), ev(2, "graph_completed"), ev(3), ev(9, "graph_failed")],
        [
            "applied 1",
            "applied 2",
            "violation 3 +after_terminal(3..3)",
            "violation 9 +after_terminal(9..9)",
        ],
        '{"run_id":"' + RID + '","agent_spec_digest":"spec-1","git_sha":"abc123",'
        '"started_at":"2024-05-01T12:00:00.001Z","finished_at":"2024-05-01T12:00:00.002Z",'
        '"status":"COMPLETED","inputs":{"q":"hi"},"outputs":null,"final_state_digest":null}',
        2,
        counters={"tool_calls": 0},
    ),
    Case(
        "run terminal: buffered successors of the end are after_terminal",
        lambda ev: [ev(1, "graph_started"), ev(3), ev(4), ev(2, "graph_failed")],
        [
            "applied 1",
            "buffered 3",
            "buffered 4",
            "applied 2",
            "violation 3 released +after_terminal(3..3)",
            "violation 4 released +after_terminal(4..4)",
        ],
        '{"run_id":"' + RID + '","agent_spec_digest":"spec-1","git_sha":"abc123",'
        '"started_at":"2024-05-01T12:00:00.001Z","finished_at":"2024-05-01T12:00:00.002Z",'
        '"status":"FAILED","inputs":{"q":"hi"},"outputs":null,"final_state_digest":null}',
        2,
    ),
    Case(
        "run terminal: a redelivered earlier event is still a duplicate",
        lambda ev: [ev(1, "graph_started"), ev(2, "graph_completed"), ev(2, "graph_completed")],
        ["applied 1", "applied 2", "duplicate 2"],
        '{"run_id":"' + RID + '","agent_spec_digest":"spec-1","git_sha":"abc123",'
        '"started_at":"2024-05-01T12:00:00.001Z","finished_at":"2024-05-01T12:00:00.002Z",'
        '"status":"COMPLETED","inputs":{"q":"hi"},"outputs":null,"final_state_digest":null}',
        2,
    ),
    Case(
        "first event not graph_started: missing_start, the run is still tracked",
        lambda ev: [ev(1, "node_entered"), ev(2)],
        ["applied 1 +missing_start(1..1)", "applied 2"],
        '{"run_id":"' + RID + '","agent_spec_digest":"","git_sha":"",'
        '"started_at":"2024-05-01T12:00:00.001Z","finished_at":null,"status":"RUNNING",'
        '"inputs":null,"outputs":null,"final_state_digest":null}',
        2,
        counters={"nodes_entered": 1, "tool_calls": 1},
    ),
    Case(
        "graph_started arriving after missing_start gives the identity then",
        lambda ev: [ev(1, "node_entered"), ev(2, "graph_started")],
        ["applied 1 +missing_start(1..1)", "applied 2"],
        '{"run_id":"' + RID + '","agent_spec_digest":"spec-1","git_sha":"abc123",'
        '"started_at":"2024-05-01T12:00:00.002Z","finished_at":null,"status":"RUNNING",'
        '"inputs":{"q":"hi"},"outputs":null,"final_state_digest":null}',
        2,
    ),
    Case(
        "gap at the very start: gap, then missing_start on the first applied event",
        lambda ev: [ev(3), ev(4)],
        [
            "buffered 3",
            "buffered 4",
            "applied 3 released +gap(1..2) +missing_start(3..3)",
            "applied 4 released",
        ],
        '{"run_id":"' + RID + '","agent_spec_digest":"","git_sha":"",'
        '"started_at":"2024-05-01T12:00:00.003Z","finished_at":null,"status":"RUNNING",'
        '"inputs":null,"outputs":null,"final_state_digest":null}',
        4,
        config=FoldConfig(max_pending_per_run=1),
    ),
    Case(
        # Only a hand-built Event: the codec refuses seq 0 (a DLQ record in the service).
        "seq 0: a conflict (seqs start at 1), not applied",
        lambda ev: [ev(1, "graph_started"), ev(0)],
        ["applied 1", "violation 0 +conflict(0..0)"],
        RUNNING_RUN,
        1,
    ),
    Case(
        "seq older than the digest window: duplicate, unverified",
        lambda ev: [ev(1, "graph_started"), *(ev(s) for s in range(2, 8)), ev(2, "tool_failed")],
        [*(f"applied {s}" for s in range(1, 8)), "duplicate 2"],
        RUNNING_RUN,
        7,
        config=FoldConfig(digest_window=4),
        counters={"duplicates": 1, "unverified_duplicates": 1},
    ),
    # --- DESIGN §1: status rules ----------------------------------------------------------
    Case(
        "graph_completed: COMPLETED, finished_at, outputs and final_state_digest from payload",
        lambda ev: [
            ev(1, "graph_started"),
            ev(
                2,
                "graph_completed",
                {"outputs": {"answer": 42, "why": ["a", "b"]}, "final_state_digest": "sha256:ff"},
            ),
        ],
        ["applied 1", "applied 2"],
        '{"run_id":"' + RID + '","agent_spec_digest":"spec-1","git_sha":"abc123",'
        '"started_at":"2024-05-01T12:00:00.001Z","finished_at":"2024-05-01T12:00:00.002Z",'
        '"status":"COMPLETED","inputs":{"q":"hi"},"outputs":{"answer":42,"why":["a","b"]},'
        '"final_state_digest":"sha256:ff"}',
        2,
    ),
    Case(
        "graph_failed: FAILED with finished_at",
        lambda ev: [ev(1, "graph_started"), ev(2, "node_failed"), ev(3, "graph_failed")],
        ["applied 1", "applied 2", "applied 3"],
        '{"run_id":"' + RID + '","agent_spec_digest":"spec-1","git_sha":"abc123",'
        '"started_at":"2024-05-01T12:00:00.001Z","finished_at":"2024-05-01T12:00:00.003Z",'
        '"status":"FAILED","inputs":{"q":"hi"},"outputs":null,"final_state_digest":null}',
        3,
        counters={"node_failures": 1},
    ),
    Case(
        "graph_interrupted (a pause): still RUNNING",
        lambda ev: [ev(1, "graph_started"), ev(2, "graph_interrupted"), ev(3, "node_entered")],
        ["applied 1", "applied 2", "applied 3"],
        RUNNING_RUN,
        3,
        counters={"interrupts": 1, "nodes_entered": 1},
    ),
    Case(
        'graph_interrupted with reason "cancelled": CANCELLED with finished_at',
        lambda ev: [
            ev(1, "graph_started"),
            ev(2, "graph_interrupted", reason="cancelled"),
            ev(3, "graph_completed"),
        ],
        ["applied 1", "applied 2", "violation 3 +after_terminal(3..3)"],
        '{"run_id":"' + RID + '","agent_spec_digest":"spec-1","git_sha":"abc123",'
        '"started_at":"2024-05-01T12:00:00.001Z","finished_at":"2024-05-01T12:00:00.002Z",'
        '"status":"CANCELLED","inputs":{"q":"hi"},"outputs":null,"final_state_digest":null}',
        2,
        counters={"interrupts": 1},
    ),
    Case(
        "a second graph_started changes nothing; identity fields of the wrong type default",
        lambda ev: [
            ev(1, "graph_started", {"agent_spec_digest": 7, "git_sha": "s1"}),
            ev(2, "graph_started", {"agent_spec_digest": "other", "git_sha": "s2"}),
        ],
        ["applied 1", "applied 2"],
        '{"run_id":"' + RID + '","agent_spec_digest":"","git_sha":"s1",'
        '"started_at":"2024-05-01T12:00:00.001Z","finished_at":null,"status":"RUNNING",'
        '"inputs":null,"outputs":null,"final_state_digest":null}',
        2,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_fold_outcome_table(case: Case, event_factory: EventFactory) -> None:
    events = case.events(event_factory)
    state = None
    seen: list[str] = []
    for event in events:
        state, outcomes = apply_event(state, event, case.config)
        assert not outcomes[0].released  # the event's own outcome comes first
        seen.extend(describe(outcome) for outcome in outcomes)
    assert state is not None
    assert seen == case.outcomes
    assert state.run.to_json() == case.run_json
    assert state.last_seq == case.last_seq
    counters = state.counters()
    for name, value in case.counters.items():
        assert counters[name] == value, name
    # The same stream through FoldResult gives the same state and balances its books.
    result = FoldResult(case.config)
    for event in events:
        result.apply(event)
    assert result.runs[state.run_id] == state
    assert result.tally.balanced(result.pending_total)


def test_violations_are_kept_bounded_and_counted(event_factory: EventFactory) -> None:
    config = FoldConfig(max_recent_violations=2)
    state, _ = apply_event(None, event_factory(1, "graph_started"), config)
    for _ in range(5):
        apply_event(state, event_factory(1, "graph_started"), config)
    for _ in range(4):
        apply_event(state, event_factory(0), config)
    # Duplicates are counted, not violations (DESIGN.md §5): only the conflicts are kept.
    assert state.duplicates == 5
    assert [v.kind.value for v in state.violations] == ["conflict", "conflict"]
    assert state.violation_counts == {
        "gap": 0,
        "duplicate": 0,
        "conflict": 4,
        "after_terminal": 0,
        "missing_start": 0,
        "stalled": 0,
        "forgotten_run": 0,
    }
    assert state.violations_dropped == 2
    assert "seq 0" in state.violations[-1].message


def test_an_event_of_another_run_is_refused(event_factory: EventFactory) -> None:
    from uuid import uuid4

    state, _ = apply_event(None, event_factory(1, "graph_started"))
    other = event_factory(2, run_id=uuid4())
    with pytest.raises(FoldError, match="route events by run_id"):
        apply_event(state, other)


@pytest.mark.parametrize("digest", [-1, 2**64, "x"])
def test_a_digest_out_of_range_is_refused(event_factory: EventFactory, digest: object) -> None:
    state, _ = apply_event(None, event_factory(1, "graph_started"))
    for seq in (2, 5):  # the in-order path and the other one
        with pytest.raises(FoldError, match="is not an integer"):
            apply_event(state, event_factory(seq), digest=digest)  # type: ignore[arg-type]


# --- the stream time: the clock of every reorder buffer ---------------------------------

OTHER_RUN = UUID("00000000-0000-4000-8000-000000000002")


def test_a_lost_event_before_the_last_is_declared_once_the_stream_moves_on(
    event_factory: EventFactory,
) -> None:
    """Seq 2 is lost and the run's last event (graph_completed, seq 3) waits in the buffer;
    no later event of the run will ever come, but another run's events move the fold's
    stream time past the bound, and expire() declares the gap: the run completes."""
    config = FoldConfig(max_delay_ns=1_000 * MS)
    result = FoldResult(config)
    result.apply(event_factory(1, "graph_started"))
    result.apply(event_factory(3, "graph_completed"))
    assert result.runs[RUN_ID].pending_events and result.pending_total == 1
    result.apply(event_factory(1, "graph_started", run_id=OTHER_RUN, at=T0 + 500 * MS))
    assert result.expire() == []  # not yet past the bound
    result.apply(event_factory(2, run_id=OTHER_RUN, at=T0 + 3 * MS + 1_000 * MS + 1))
    assert result.runs[RUN_ID].status is RunStatus.RUNNING  # apply alone does not expire
    released = result.expire()
    assert [(o.kind, o.seq, o.released) for o in released] == [(OutcomeKind.APPLIED, 3, True)]
    assert [v.kind for v in released[0].violations] == [ViolationKind.GAP]
    state = result.runs[RUN_ID]
    assert state.status is RunStatus.COMPLETED and state.missing == [(2, 2)]
    assert result.pending_total == 0 and result.tally.balanced(0)


def test_an_explicit_clock_expires_buffers_when_no_event_comes(
    event_factory: EventFactory,
) -> None:
    config = FoldConfig(max_delay_ns=1_000 * MS)
    result = FoldResult(config)
    result.apply(event_factory(1, "graph_started"))
    result.apply(event_factory(3, "graph_completed"))
    assert result.expire(T0 + 3 * MS + 1_000 * MS) == []  # at the bound, not past it
    outcomes = result.expire(T0 + 3 * MS + 1_000 * MS + 1)
    assert [(o.kind, o.seq, o.released) for o in outcomes] == [(OutcomeKind.APPLIED, 3, True)]
    assert result.runs[RUN_ID].status is RunStatus.COMPLETED
    assert result.tally.balanced(0)


def test_a_rejected_event_stamped_ahead_moves_no_clock(event_factory: EventFactory) -> None:
    """An event after the end of another run, an hour ahead, must not declare the gap of a
    buffer that is waiting in time; nor does a conflict in the run itself."""
    config = FoldConfig(max_delay_ns=1_000 * MS)
    result = FoldResult(config)
    result.apply(event_factory(1, "graph_started", run_id=OTHER_RUN))
    result.apply(event_factory(2, "graph_completed", run_id=OTHER_RUN))
    result.apply(event_factory(1, "graph_started"))
    result.apply(event_factory(3))
    hour = 3_600_000 * MS
    late = result.apply(event_factory(3, run_id=OTHER_RUN, at=T0 + hour))
    assert late[0].kind is OutcomeKind.VIOLATION
    conflict = result.apply(event_factory(1, "graph_started", at=T0 + hour))  # other content
    assert conflict[0].kind is OutcomeKind.VIOLATION
    state = result.runs[RUN_ID]
    assert state.pending_events and state.stream_time < T0 + hour
    assert result.stream_time < T0 + hour


def test_expire_of_one_state_against_a_later_clock(event_factory: EventFactory) -> None:
    config = FoldConfig(max_delay_ns=1_000 * MS)
    state, _ = apply_event(None, event_factory(1, "graph_started"), config)
    apply_event(state, event_factory(3), config)
    assert expire(state, T0, config) == []  # an earlier clock changes nothing
    outcomes = expire(state, T0 + 3 * MS + 1_000 * MS + 1, config)
    assert [o.seq for o in outcomes] == [3] and not state.pending_events
