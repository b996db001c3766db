"""The digest ring grows with its run (consumers.state.FIRST_RING) and judges every seq as a
window of ``digest_window`` slots made up front would: a redelivered event within the window
is a verified duplicate, a changed one a conflict, an older one an unverified duplicate;
through gaps, restores and configs of another window."""

from __future__ import annotations

import random

import pytest
from fold_events import make_event

from consumers import FoldConfig, OutcomeKind, RunState, apply_event, flush
from consumers.state import FIRST_RING
from schemas import Event, ViolationKind

pytestmark = pytest.mark.unit


def _first_or(seq: int) -> Event:
    """The event :func:`_fold` applied at ``seq``."""
    return make_event(seq, "graph_started" if seq == 1 else "tool_called")


def _fold(seed: int, config: FoldConfig) -> tuple[RunState, set[int], int]:
    """A run of random length with random gaps (declared by a flush), restored from its
    record now and then; returns it, the seqs applied and how many times it was restored."""
    rng = random.Random(seed)
    state, _ = apply_event(None, make_event(1, "graph_started"), config)
    applied, restores = {1}, 0
    seq = 1
    for _ in range(rng.randrange(1, 160)):
        seq += 1
        if rng.random() < 0.08:  # lose a few seqs: buffered, then the gap declared
            seq += rng.randrange(1, 12)
            apply_event(state, make_event(seq), config)
            flush(state, config)
        else:
            apply_event(state, make_event(seq), config)
        applied.add(seq)
        if rng.random() < 0.05:
            state = RunState.from_record(state.to_record(), config)
            restores += 1
    assert state.last_seq == seq and not state.pending_events
    return state, applied, restores


@pytest.mark.parametrize("window", [1, 3, FIRST_RING, 5, 16, 64])
@pytest.mark.parametrize("seed", range(12))
def test_the_ring_judges_each_seq_as_a_whole_window_would(window: int, seed: int) -> None:
    config = FoldConfig(digest_window=window, max_missing_ranges=1_000)
    state, applied, _ = _fold(seed, config)
    last = state.last_seq
    assert len(state.digests) <= window
    for seq in range(1, last + 1):
        if seq not in applied:
            continue  # declared missing: a late event there is a gap (test_fold_outcomes)
        same, changed = state.copy(), state.copy()
        _, [again] = apply_event(same, _first_or(seq), config)
        _, [other] = apply_event(changed, make_event(seq, "tool_failed"), config)
        if seq > last - window:
            assert again.kind is OutcomeKind.DUPLICATE, (seq, last)
            assert same.unverified_duplicates == state.unverified_duplicates, (seq, last)
            assert other.kind is OutcomeKind.VIOLATION, (seq, last)
            assert other.violations[0].kind is ViolationKind.CONFLICT
        else:
            assert again.kind is OutcomeKind.DUPLICATE
            assert same.unverified_duplicates == state.unverified_duplicates + 1, (seq, last)
            assert other.kind is OutcomeKind.DUPLICATE  # older than the window: not comparable


def test_a_short_run_keeps_a_short_ring_and_a_long_one_reaches_the_window() -> None:
    config = FoldConfig(digest_window=64)
    state, _ = apply_event(None, make_event(1, "graph_started"), config)
    for seq in range(2, FIRST_RING + 1):
        apply_event(state, make_event(seq), config)
    assert len(state.digests) == FIRST_RING
    assert len(RunState.from_record(state.to_record(), config).digests) == FIRST_RING
    for seq in range(FIRST_RING + 1, 200):
        apply_event(state, make_event(seq), config)
    assert len(state.digests) == 64


@pytest.mark.parametrize("saved, restored", [(4, 64), (64, 16), (16, 3), (16, 64)])
def test_a_ring_restored_under_another_window_keeps_what_both_can_hold(
    saved: int, restored: int
) -> None:
    before, after = FoldConfig(digest_window=saved), FoldConfig(digest_window=restored)
    state, applied, _ = _fold(7, before)
    again = RunState.from_record(state.to_record(), after)
    assert len(again.digests) <= restored
    last = state.last_seq
    for seq in sorted(applied):
        same = again.copy()
        _, [outcome] = apply_event(same, _first_or(seq), after)
        assert outcome.kind is OutcomeKind.DUPLICATE, (seq, last)
        # Within what both rings held: verified. Older: not known, never another seq's.
        verified = seq > last - min(saved, restored)
        assert same.unverified_duplicates == again.unverified_duplicates + (not verified), (
            seq,
            last,
        )


def test_a_run_with_no_violation_shares_the_empty_counts_until_its_first() -> None:
    one, _ = apply_event(None, make_event(1, "graph_started"))
    two, _ = apply_event(None, make_event(1, "graph_started"))
    assert one.violation_counts is two.violation_counts  # shared, read-only
    assert one.recent_violations == ()
    apply_event(one, make_event(3))
    flush(one)  # declares seq 2 missing: a gap
    assert one.violation_counts[ViolationKind.GAP] == 1
    assert two.violation_counts[ViolationKind.GAP] == 0
    assert [v.kind for v in one.recent_violations] == [ViolationKind.GAP]
    assert two.recent_violations == ()
    with pytest.raises(TypeError):
        two.violation_counts[ViolationKind.GAP] += 1  # type: ignore[index]
