"""The service flags runs gone silent (wall clock): once, written and published in the
transaction, cleared by an event; restored runs wait from the restore; idle service too.

No broker: service_fixtures.OfflineService (a recording transactional producer, an idle
consumer, the test's wall clock).
"""

from __future__ import annotations

import math
import uuid

import pytest
from confluent_kafka import Message
from fold_events import make_event
from service_fixtures import WALL, IdleConsumer, OfflineService

from consumers.service import ServiceConfig
from consumers.state_bytes import pack_stored
from schemas import RunStatus, Violation, ViolationKind
from schemas.codec import encode_event
from schemas.errors import ConfigError

pytestmark = pytest.mark.unit

MIN = 60 * 10**9
AFTER = 30 * MIN


def _stalled(violations: list[Violation]) -> list[Violation]:
    return [v for v in violations if v.kind is ViolationKind.STALLED]


def test_a_silent_run_is_flagged_once_written_and_published() -> None:
    off = OfflineService()
    silent, done, busy = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    off.fold(make_event(1, "graph_started", run_id=silent), make_event(2, run_id=silent))
    off.fold(
        make_event(1, "graph_started", run_id=done), make_event(2, "graph_completed", run_id=done)
    )
    off.fold(make_event(1, "graph_started", run_id=busy))
    off.commit(at=WALL)
    off.fold(make_event(2, run_id=busy))
    off.commit(at=WALL + AFTER - 1)
    assert not _stalled(off.violations(silent))  # not yet
    off.fold(make_event(3, run_id=busy))
    off.commit(at=WALL + AFTER)

    [violation] = _stalled(off.violations(silent))
    assert (violation.first_seq, violation.last_seq) == (2, 2)
    assert str(silent) in violation.message and "30 min after seq 2" in violation.message
    written = off.written(silent)[-1]
    assert written.stalled_since == WALL + AFTER
    assert written.status is RunStatus.RUNNING
    assert written.violation_counts[ViolationKind.STALLED] == 1
    assert not _stalled(off.violations(done)) and not _stalled(off.violations(busy))
    stats = off.service.stats
    assert stats.stalled_flagged == 1
    assert stats.balanced(0)  # a flag consumes no record
    assert off.service._stalls.stalled == 1

    # Silent for much longer: not flagged again, not written again.
    runs_records = len(off.written(silent))
    off.commit(at=WALL + 10 * AFTER)
    assert len(_stalled(off.violations(silent))) == 1
    assert len(off.written(silent)) == runs_records
    assert len(_stalled(off.violations(busy))) == 1  # silent since its last event, now
    assert off.service.stats.stalled_flagged == 2


def test_an_event_resumes_the_run_and_clears_the_flag() -> None:
    off = OfflineService()
    run = uuid.uuid4()
    off.fold(make_event(1, "graph_started", run_id=run), make_event(2, run_id=run))
    off.commit(at=WALL)
    off.commit(at=WALL + AFTER)
    assert off.state(run).stalled_since == WALL + AFTER
    off.fold(make_event(3, run_id=run))  # the batch lane's path: fold_next
    off.commit(at=WALL + AFTER + MIN)
    assert off.written(run)[-1].stalled_since is None
    assert off.service._stalls.stalled == 0
    # A new silence flags it again, counted from its last event.
    off.commit(at=WALL + 2 * AFTER)
    assert len(_stalled(off.violations(run))) == 1
    off.commit(at=WALL + 2 * AFTER + MIN)
    assert len(_stalled(off.violations(run))) == 2
    assert off.written(run)[-1].violation_counts[ViolationKind.STALLED] == 2


def test_the_fail_option_ends_a_stalled_run_as_failed() -> None:
    off = OfflineService(fail_stalled_runs=True)
    run = uuid.uuid4()
    off.fold(
        make_event(1, "graph_started", run_id=run),
        make_event(2, run_id=run),
        make_event(4, run_id=run),  # 3 lost
    )
    off.commit(at=WALL)
    off.commit(at=WALL + AFTER)
    written = off.written(run)[-1]
    assert written.status is RunStatus.FAILED
    assert written.finished_at == WALL + AFTER
    assert written.outputs == {"error": "stalled: no event for 30 min after seq 4"}
    kinds = off.violation_kinds(run)
    assert kinds == [ViolationKind.GAP, ViolationKind.STALLED]  # the buffer given up first
    stats = off.service.stats
    assert stats.released == 1 and stats.balanced(0)
    assert off.service._stalls.stalled == 0  # ended, not stalled


def test_restored_runs_wait_from_the_restore() -> None:
    off = OfflineService()
    service = off.service
    edge = service.edge
    running, finished, flagged = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    states = {}
    for run in (running, finished, flagged):
        state, _ = edge.apply(None, make_event(1, "graph_started", run_id=run))
        states[run] = state
    edge.apply(states[finished], make_event(2, "graph_completed", run_id=finished))
    states[flagged].stalled_since = int(WALL) - 10 * AFTER  # flagged before the restart
    store = service._store
    store.runs[0] = {}
    store._stored[0] = {
        str(run).encode(): pack_stored(str(run).encode(), edge.encode_state(state))
        for run, state in states.items()
    }
    service._stalls.restored(store, [0], int(WALL))

    off.commit(at=WALL + AFTER - 1)
    assert off.producer.sent == [("<commit>", {})]  # nothing flagged, nothing written
    off.commit(at=WALL + AFTER)
    assert off.violation_kinds(running) == [ViolationKind.STALLED]
    assert off.written(running)[-1].stalled_since == WALL + AFTER
    assert not off.violations(flagged) and not off.violations(finished)
    # Only the RUNNING ones were decoded; the finished one is still bytes.
    assert list(store._stored[0]) == [str(finished).encode()]
    assert service._stalls.stalled == 2  # the one flagged now and the one flagged before


def test_an_idle_service_opens_a_transaction_to_flag() -> None:
    off = OfflineService()
    service = off.service
    run = uuid.uuid4()
    off.fold(make_event(1, "graph_started", run_id=run))
    off.commit(at=WALL)
    commits = off.producer.commits
    service._assigned = True
    consumer = service._consumer
    assert isinstance(consumer, IdleConsumer)
    polls = 0
    poll = consumer.poll

    def poll_then_stop(timeout: float) -> None:  # 45 idle polls, a minute of wall time each
        nonlocal polls
        polls += 1
        if polls == 45:
            service.stop()
        poll(timeout)

    consumer.poll = poll_then_stop  # type: ignore[method-assign]
    service._loop()
    assert polls == 45
    [violation] = _stalled(off.violations(run))
    assert "no event for 30 min after seq 1" in violation.message
    assert off.written(run)[-1].stalled_since == WALL + AFTER
    assert off.producer.commits == commits + 1  # one transaction opened for it, no more
    assert service.stats.stalled_flagged == 1


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_stall_after_must_be_positive(value: float) -> None:
    with pytest.raises(ConfigError, match="stall_after_s"):
        ServiceConfig(kafka={}, stall_after_s=value)


def test_a_damaged_restored_state_is_skipped_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    off = OfflineService()
    service = off.service
    run = uuid.uuid4()
    state, _ = service.edge.apply(None, make_event(1, "graph_started", run_id=run))
    key = str(run).encode()
    damaged = str(uuid.uuid4()).encode()
    store = service._store
    store.runs[0] = {}
    store._stored[0] = {
        damaged: b"\x01\xff\xff\xff",  # a packed marker, then bytes no state reads
        key: pack_stored(key, service.edge.encode_state(state)),
    }
    service._stalls.restored(store, [0], int(WALL))
    off.commit(at=WALL + AFTER)
    assert off.violation_kinds(run) == [ViolationKind.STALLED]
    assert any("cannot be read" in r.message for r in caplog.records)
    assert damaged in store._stored[0]  # left for its run's next record to meet


def test_a_run_paged_out_over_max_active_runs_is_still_flagged() -> None:
    """Idle runs are the ones paged out (consumers.service.lifecycle) and the ones that stall:
    the watch reads a paged-out run's status from its bytes and flags it all the same."""
    offline = OfflineService(stall_after_s=AFTER / 1e9, max_active_runs=1)
    idle, busy = uuid.uuid4(), uuid.uuid4()
    offline.fold(
        make_event(1, "graph_started", run_id=idle), make_event(1, "graph_started", run_id=busy)
    )
    offline.commit(at=int(WALL))
    offline.fold(make_event(2, run_id=busy))
    offline.commit(at=int(WALL) + MIN)  # idle is paged out here
    store = offline.service._store
    assert str(idle).encode() not in store.runs[0] and offline.service.stats.runs_paged_out == 1
    offline.commit(at=int(WALL) + AFTER + 1)
    assert offline.violation_kinds(idle) == [ViolationKind.STALLED]
    assert offline.written(idle)[-1].stalled_since is not None


def test_a_finished_run_leaves_the_watch() -> None:
    """The watch holds the runs under way: a run that ended is not kept for stall_after."""
    offline = OfflineService(stall_after_s=AFTER / 1e9)
    done, running = uuid.uuid4(), uuid.uuid4()
    offline.fold(
        make_event(1, "graph_started", run_id=done), make_event(1, "graph_started", run_id=running)
    )
    offline.commit(at=int(WALL))
    offline.fold(make_event(2, "graph_completed", run_id=done))
    offline.commit(at=int(WALL) + MIN)
    seen = offline.service._stalls._seen[0]
    assert list(seen) == [str(running).encode()]


def test_a_quiet_service_gives_freed_memory_back_once_per_quiet_spell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # After a burst the process's RSS should be its state, not its busiest moment: freed
    # memory is given back (malloc_trim) once a second passes with no record, not each turn.
    off = OfflineService()
    service = off.service
    service._assigned = True
    trims: list[float] = []
    monkeypatch.setattr(
        "consumers.service.loop.release_freed_memory", lambda: trims.append(off.monotonic)
    )
    consumer = service._consumer
    assert isinstance(consumer, IdleConsumer)
    run = uuid.uuid4()
    polls = 0

    def poll(timeout: float) -> Message | None:
        nonlocal polls
        polls += 1
        off.monotonic += 0.5
        if polls == 30:
            service.stop()
        if polls == 10:
            event = make_event(1, "graph_started", run_id=run)
            return Message(
                topic="ev", partition=0, offset=0, key=str(run).encode(), value=encode_event(event)
            )
        return None

    def consume(count: int, timeout: float) -> list[Message]:
        off.monotonic += max(timeout, 0.01)  # time passes (a float timeout may round to 0)
        return []

    consumer.poll = poll  # type: ignore[method-assign, assignment]
    consumer.consume = consume  # type: ignore[method-assign]
    service._loop()
    assert service.stats.applied == 1
    assert len(trims) == 2, trims  # the quiet start, and the quiet spell after the record
    assert trims[1] > 5.0  # after the record (at 5 s of the loop's clock), not before
