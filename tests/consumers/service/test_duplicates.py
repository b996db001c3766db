"""Duplicates are counted, not published as violations (DESIGN.md §5), unless asked.

A redelivered record is dropped and counted (the ``duplicate`` outcome, the run's
``duplicates``); ``agent-run-violations`` gets nothing for it, and the run's
violation summary holds no ``duplicate``. ``ServiceConfig.publish_duplicates`` (``runfold
consume --publish-duplicates``) publishes one ``duplicate`` violation per dropped one.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from service_fixtures import OfflineService

from consumers.service import FoldService
from consumers.service.edge import FoldEdge
from producers import FaultRates, Fleet, FleetConfig
from runfold.commands.consume import consume
from schemas import ViolationKind
from schemas.codec import decode_violation

pytestmark = pytest.mark.unit


def _records() -> list[tuple[int, bytes, bytes]]:
    """A fleet with duplicates (and every other fault), each record then sent twice."""
    rates = FaultRates(gap=0.1, dup=0.2, reorder=0.1, after_end=0.1, conflict=0.1)
    fleet = Fleet(FleetConfig(runs=60, agents=4, seed=11, faults=rates))
    out = []
    for key, value, _ in fleet.records():
        out += [(hash(key) % 3, key, value)] * 2  # a producer retry of every record
    return out


def _fold(lane: bool, publish: bool) -> tuple[FoldService, list[ViolationKind]]:
    offline = OfflineService(FoldEdge(lane=lane), publish_duplicates=publish)
    offline.fold_bytes(_records())
    kinds = [decode_violation(kw["value"]).kind for kw in offline.records("viol")]
    return offline.service, kinds


@pytest.mark.parametrize("lane", [True, False])
def test_duplicates_are_counted_not_published(lane: bool) -> None:
    service, kinds = _fold(lane, publish=False)
    stats = service._txn_stats
    assert stats.duplicate > len(_records()) // 2 - 10  # every second record at least
    assert stats.balanced()
    assert ViolationKind.DUPLICATE not in kinds
    assert ViolationKind.CONFLICT in kinds and ViolationKind.GAP in kinds  # others still go
    assert stats.violations_emitted == len(kinds)
    states = [s for runs in service._store.runs.values() for s in runs.values()]
    assert sum(s.duplicates for s in states) == stats.duplicate
    for state in states:
        assert state.violation_counts["duplicate"] == 0
        assert all(v.kind is not ViolationKind.DUPLICATE for v in state.violations)


@pytest.mark.parametrize("lane", [True, False])
def test_publish_duplicates_publishes_one_per_dropped_duplicate(lane: bool) -> None:
    quiet, quiet_kinds = _fold(lane, publish=False)
    loud, kinds = _fold(lane, publish=True)
    dups = loud._txn_stats.duplicate
    assert dups == quiet._txn_stats.duplicate > 0
    assert kinds.count(ViolationKind.DUPLICATE) == dups
    assert len(kinds) == len(quiet_kinds) + dups
    # The states are the same either way: publishing changes only the violations topic.
    assert loud._store.runs == quiet._store.runs


def test_the_consume_command_has_the_flag() -> None:
    result = CliRunner().invoke(consume, ["--help"])
    assert result.exit_code == 0
    assert "--publish-duplicates" in result.output
