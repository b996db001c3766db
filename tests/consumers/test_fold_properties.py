"""Properties of the fold (hypothesis) and its agreement with generated fleets' manifests."""

from __future__ import annotations

import random
from collections import Counter
from uuid import UUID

import pytest
from fold_events import MS, T0, event_strategy
from fold_streams import generate_fleet, generate_run, interleave, shuffle_within
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers import FoldConfig, FoldResult, OutcomeKind, RunState, fold
from schemas import EVENT_KINDS, Event, Timestamp

pytestmark = pytest.mark.unit

_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# A bound wide enough in time that only the event bound matters in the permutation property.
_REORDER = FoldConfig(max_pending_per_run=8, max_delay_ns=10**15)


def _comparable(state: RunState) -> tuple[object, ...]:
    """What must not depend on arrival order: the Run, the counters of what the run did."""
    counters = state.counters()
    for name in ("events_buffered", "duplicates", "unverified_duplicates", "violations_dropped"):
        counters.pop(name)
    return state.run, state.last_seq, counters


def _plain(result: FoldResult) -> dict[UUID, tuple[object, ...]]:
    return {run_id: _comparable(state) for run_id, state in result.runs.items()}


def test_fold_of_a_fleet_equals_its_manifest() -> None:
    fleet = generate_fleet(seed=11, runs=60)
    result = fold(interleave(fleet, seed=3))
    assert result.tally.balanced(0)
    assert result.tally.violation == result.tally.duplicate == 0
    for generated in fleet:
        state = result.runs[generated.run.run_id]
        assert state.run.to_json() == generated.run.to_json()
        counters = state.counters()
        assert {name: counters[name] for name in generated.counters} == generated.counters
        assert not any(state.violation_counts.values())


@_SETTINGS
@given(seed=st.integers(0, 2**32), block=st.integers(1, 9), shuffle_seed=st.integers(0, 2**32))
def test_any_permutation_within_the_reorder_bound_folds_to_the_same_run(
    seed: int, block: int, shuffle_seed: int
) -> None:
    generated = generate_run(random.Random(seed))
    in_order = fold(generated.events, _REORDER)
    shuffled = shuffle_within(generated.events, block, random.Random(shuffle_seed))
    permuted = fold(shuffled, _REORDER)
    assert _plain(permuted) == _plain(in_order)
    assert permuted.runs[generated.run.run_id].run == generated.run
    assert permuted.tally.violation == 0 and permuted.tally.duplicate == 0
    assert permuted.tally.balanced(0)


@_SETTINGS
@given(seed=st.integers(0, 2**32), spread=st.integers(0, 40))
def test_every_event_twice_gives_the_same_runs_plus_duplicates(seed: int, spread: int) -> None:
    rng = random.Random(seed)
    fleet = generate_fleet(seed, runs=4, max_steps=6)
    once = list(interleave(fleet, seed))
    twice = list(once)
    for event in once:  # each copy lands up to `spread` places after the original
        position = next(k for k, seen in enumerate(twice) if seen is event) + 1
        twice.insert(min(len(twice), position + rng.randrange(spread + 1)), event)
    single = fold(once)
    double = fold(twice)
    assert _plain(double) == _plain(single)
    assert double.tally.applied == single.tally.applied
    assert double.tally.violation == single.tally.violation
    assert double.tally.duplicate == single.tally.duplicate + len(once)
    for state in double.runs.values():
        # Counted, not violations (DESIGN.md §5).
        assert state.violation_counts["duplicate"] == 0
        assert all(v.kind.value != "duplicate" for v in state.violations)


def test_restoring_states_midway_changes_nothing() -> None:
    """The service's restore: fold, persist every state, rebuild, carry on."""
    config = FoldConfig(max_pending_per_run=4, max_delay_ns=10**15)
    fleet = generate_fleet(seed=5, runs=20)
    rng = random.Random(9)
    stream = shuffle_within(list(interleave(fleet, seed=1)), 3, rng)
    stream += stream[::7]  # some duplicates
    whole = fold(stream, config)
    half = len(stream) // 2
    first = fold(stream[:half], config)
    resumed = FoldResult(config)
    for state in first.runs.values():
        resumed.add(RunState.from_record(state.to_record(), config))
    assert resumed.pending_total == first.pending_total
    for event in stream[half:]:
        resumed.apply(event)
    assert resumed.runs == whole.runs


# --- arbitrary input ------------------------------------------------------------------------

_TIGHT = FoldConfig(
    max_pending_per_run=3,
    max_delay_ns=500 * MS,
    digest_window=4,
    max_recent_violations=2,
    max_missing_ranges=2,
    max_runs=3,
    max_pending_total=4,
    max_markers=2,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(event_strategy(), max_size=40), repeat=st.lists(st.integers(0, 39), max_size=10)
)
def test_no_input_breaks_the_fold_or_its_bounds(events: list[Event], repeat: list[int]) -> None:
    stream = events + [events[i] for i in repeat if i < len(events)]
    result = FoldResult(_TIGHT)
    for event in stream:
        outcomes = result.apply(event)
        own = [o for o in outcomes if not o.released]
        assert len(own) == 1 and outcomes[0] is own[0] and own[0].seq == event.seq
        assert all(o.kind in (OutcomeKind.APPLIED, OutcomeKind.VIOLATION) for o in outcomes[1:])
        assert len(result.runs) <= _TIGHT.max_runs
        assert result.pending_total <= _TIGHT.max_pending_total
        assert result.pending_total == sum(len(s.pending_events) for s in result.runs.values())
        assert len(result.markers) <= _TIGHT.max_markers
        assert result.tally.balanced(result.pending_total)
    for state in result.runs.values():
        assert len(state.pending_events) <= _TIGHT.max_pending_per_run
        assert len(state.missing) <= _TIGHT.max_missing_ranges
        assert len(state.violations) <= _TIGHT.max_recent_violations
        assert sum(state.violation_counts.values()) == (
            len(state.violations) + state.violations_dropped
        )
        if state.is_terminal:
            assert not state.pending_events
        state.run.to_json()  # always a valid Run


def test_hostile_seqs_and_run_floods_stay_bounded() -> None:
    config = FoldConfig(max_runs=100, max_pending_total=20, max_markers=10)
    result = FoldResult(config)
    for n in range(1_000):
        result.apply(
            Event(
                run_id=UUID(int=n + 1, version=4),
                seq=10**18 if n % 2 else 1,
                timestamp=Timestamp(T0 + n),
                kind=EVENT_KINDS["graph_started"](),
                payload={},
            )
        )
    assert len(result.runs) == 100
    assert result.pending_total <= 20
    stats = result.stats
    assert stats.running_runs_evicted == 900 and stats.forced_flushes > 0
    assert result.tally.balanced(result.pending_total)
    kinds = Counter(v.kind.value for s in result.runs.values() for v in s.violations)
    assert kinds["gap"] > 0  # flushed seq-10**18 runs name their missing range


def test_finished_runs_are_evicted_first_and_their_late_events_stay_named() -> None:
    config = FoldConfig(max_runs=2, max_markers=5)
    result = FoldResult(config)
    ended = UUID(int=1, version=4)

    def event(run_id: UUID, seq: int, tag: str) -> Event:
        return Event(
            run_id=run_id,
            seq=seq,
            timestamp=Timestamp(T0 + seq),
            kind=EVENT_KINDS[tag](**({"error": "x"} if tag == "graph_failed" else {})),
            payload={},
        )

    result.apply(event(ended, 1, "graph_started"))
    result.apply(event(ended, 2, "graph_failed"))
    running = UUID(int=2, version=4)
    result.apply(event(running, 1, "graph_started"))
    result.apply(event(UUID(int=3, version=4), 1, "graph_started"))
    assert set(result.runs) == {running, UUID(int=3, version=4)}
    marker = result.markers.get(ended.bytes)
    assert marker is not None and (marker.last_seq, marker.status.value) == (2, "FAILED")
    late = result.apply(event(ended, 3, "graph_started"))
    again = result.apply(event(ended, 2, "graph_failed"))
    other = result.apply(event(ended, 2, "graph_started"))
    assert [(o.kind.value, [v.kind.value for v in o.violations]) for o in late + again + other] == [
        ("violation", ["after_terminal"]),
        ("duplicate", []),  # same content as the last event: dropped, counted
        ("violation", ["conflict"]),  # the marker keeps the last event's digest
    ]
    assert result.stats.marker_events == 3
    assert result.stats.finished_runs_evicted == 1 and result.stats.running_runs_evicted == 0
    assert result.tally.balanced(0)
