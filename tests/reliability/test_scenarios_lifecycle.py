"""Fault scenarios of a long-running service: poison records in a live stream, stalled runs
and runs that lost the event before their last.

Rows 8 and 9 of ``docs/reliability.md`` (see ``harness.write_row``). Scale: ``RELIABILITY_RUNS``
(default 4,000 runs of ~35 events).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from bad_inputs import CATALOGUE
from confluent_kafka.admin import AdminClient
from harness import (
    Folded,
    consume_proc,
    make_topics,
    produce_proc,
    read_events,
    read_output,
    scale,
    send_records,
    stats_of,
    wait_until,
)
from truth import Row, fleet_config, fleet_truth, measure, summary, write_row

from consumers.service.dlq import parse_dead_letter_headers
from producers.fleet import DEFAULT_START
from schemas import Event, Timestamp, ViolationKind
from schemas.avro_binary import encode_event
from schemas.framing import SINGLE_OBJECT_MAGIC
from schemas.model import GraphCompleted, GraphStarted, NodeEntered, NodeExited

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 3
FAULTS = "gap=0.01,dup=0.02,conflict=0.01,after_end=0.01,corrupt=0.01,reorder=0.02"
_BIG = str(16 * 1024 * 1024)


def _source(msg: Any) -> tuple[int, int]:
    """``(partition, offset)`` of the record a DLQ record stands for."""
    letter = parse_dead_letter_headers(msg.headers())
    return letter.source_partition, letter.source_offset


def _without(folded: Folded, run_ids: set[str], positions: set[tuple[int, int]]) -> Folded:
    """``folded`` without the runs and dead letters a scenario added beside the fleet's."""

    return Folded(
        {k: v for k, v in folded.runs.items() if k not in run_ids},
        [v for v in folded.violations if str(v.run_id) not in run_ids],
        [msg for msg in folded.dlq if _source(msg) not in positions],
    )


def test_8_poison_records_in_a_live_stream_with_kills(
    kafka_bootstrap: str, kafka_admin: AdminClient, tmp_path: Path
) -> None:
    """Every class of the bad-input catalogue, sent in four waves while a fleet is produced
    and folded, the folding consumer killed (``kill -9``) after each wave: no record may stop
    a partition or a restart, none is lost or folded twice, each poison reaches the DLQ once."""
    runs = scale("RUNS", 4000)
    conf = {"bootstrap.servers": kafka_bootstrap}
    topics = make_topics(
        kafka_admin, partitions=PARTITIONS, events_config={"max.message.bytes": _BIG}
    )
    config = fleet_config(runs=runs, seed=808, faults=FAULTS)
    truth = fleet_truth(config)
    group = f"rel8-{uuid.uuid4().hex[:6]}"
    poison = [case for case in CATALOGUE if case.expect.startswith("dlq:")]
    waves = [poison[i::4] for i in range(4)]
    producer = produce_proc(
        kafka_bootstrap,
        topics,
        tmp_path,
        "produce",
        config,
        "--rate",
        str(max(1000, len(truth.sent) // 40)),
    ).start()
    consumer = consume_proc(kafka_bootstrap, topics, tmp_path, "c0", "--group", group).start()
    subjects: set[tuple[int, int]] = set()
    sent_positions: set[tuple[int, int]] = set()
    kills = 0
    for number, wave in enumerate(waves, 1):
        time.sleep(4)
        records = [record for case in wave for record in case.records]
        positions = send_records(
            conf, topics.events, records, extra={"message.max.bytes": int(_BIG) + 1024}
        )
        sent_positions.update(positions)
        at = 0
        for case in wave:
            at += len(case.records)
            subjects.add(positions[at - 1])
        time.sleep(2)
        consumer.kill9()
        kills += 1
        consumer = consume_proc(
            kafka_bootstrap, topics, tmp_path, f"c{number}", "--group", group
        ).start()
    assert producer.wait(timeout=600) == 0, producer.stderr_text()[-2000:]
    consumer.stop()
    drain = consume_proc(
        kafka_bootstrap,
        topics,
        tmp_path,
        "drain",
        "--group",
        group,
        "--instance-id",
        "drain",
        "--until-idle",
        "8",
    ).start()
    assert drain.wait(timeout=1800) == 0, drain.stderr_text()[-3000:]

    folded = read_output(conf, topics, PARTITIONS)
    dead = {}
    for msg in folded.dlq:
        at = _source(msg)
        dead[at] = dead.get(at, 0) + 1
    poison_letters = sum(dead.get(at, 0) for at in subjects)
    case_runs = {str(case.run_id) for case in CATALOGUE}
    result = measure(
        truth,
        read_events(conf, topics.events, PARTITIONS),
        _without(folded, case_runs, sent_positions),
    )
    twice = sum(1 for at in subjects if dead.get(at, 0) > 1)
    write_row(
        Row(
            scenario="8. poison records, kill -9",
            injected=f"{len(poison)} poison records of every DLQ class of the bad-input catalogue, "
            f"in 4 waves during production, the consumer killed after each ({kills}x)",
            events=truth.events,
            lost=result.lost,
            duplicated=result.duplicated + twice,
            order_violations=result.order_violations,
            state_equals_truth=result.state_equals_truth,
            recovery_s=None,
            details={
                "poison_records": len(poison),
                "poison_in_dlq": poison_letters,
                "poison_in_dlq_twice": twice,
                "kills": kills,
                "drain_stats": stats_of(drain),
            },
        )
    )
    assert poison_letters == len(poison) and twice == 0, (poison_letters, twice)
    assert (result.lost, result.duplicated, result.order_violations) == (0, 0, 0), summary(result)
    assert result.state_equals_truth, summary(result)


_HOUR = 3_600_000_000_000


def _event(
    run: uuid.UUID, seq: int, at: int, kind: Any, payload: Any = None
) -> tuple[bytes, bytes]:
    from schemas.avro_binary import PINNED

    event = Event(run_id=run, seq=seq, timestamp=Timestamp(at), kind=kind, payload=payload)
    return str(run).encode(), SINGLE_OBJECT_MAGIC + PINNED["Event"] + encode_event(event)


def _short_run(
    run: uuid.UUID, at: int, *, lose: int | None = None, end: bool = True
) -> list[tuple[bytes, bytes]]:
    """graph_started, two nodes in and out, graph_completed (seq 6), minus ``lose``; without
    the end when ``end`` is false (its agent died)."""
    kinds: list[tuple[Any, Any]] = [
        (GraphStarted(), {"agent_spec_digest": "spec", "git_sha": "sha", "inputs": {"q": 1}}),
        (NodeEntered(node_id="plan", iteration=1), None),
        (NodeExited(node_id="plan", next_node="act", duration_ms=5), None),
        (NodeEntered(node_id="act", iteration=1), None),
        (NodeExited(node_id="act", duration_ms=5), None),
        (GraphCompleted(iterations=2, duration_ms=20), {"answer": 42}),
    ]
    if not end:
        kinds = kinds[:3]
    return [
        _event(run, seq, at + seq * 1_000_000, kind, payload)
        for seq, (kind, payload) in enumerate(kinds, 1)
        if seq != lose
    ]


def test_9_stalled_runs_and_lost_last_events(
    kafka_bootstrap: str, kafka_admin: AdminClient, tmp_path: Path
) -> None:
    """Runs whose agent died (no end, no more events) and runs that lost the event before
    their ``graph_completed``, then a fleet that moves every partition's clock on. The lost
    event is declared (a ``gap``, the run COMPLETED) although nothing more of its run comes;
    each dead run is flagged ``stalled`` once, with ``stalled_since``, its status unchanged."""
    runs = scale("RUNS", 4000) // 4
    conf = {"bootstrap.servers": kafka_bootstrap}
    topics = make_topics(kafka_admin, partitions=PARTITIONS)
    config = fleet_config(runs=runs, seed=909, faults=FAULTS)
    truth = fleet_truth(config)
    group = f"rel9-{uuid.uuid4().hex[:6]}"
    before = int(DEFAULT_START) - _HOUR
    lost_last = [uuid.uuid5(uuid.NAMESPACE_URL, f"rel9-lost-{i}") for i in range(60)]
    stalled = [uuid.uuid5(uuid.NAMESPACE_URL, f"rel9-stalled-{i}") for i in range(60)]
    records = [r for i, run in enumerate(lost_last) for r in _short_run(run, before + i, lose=5)]
    records += [r for i, run in enumerate(stalled) for r in _short_run(run, before + i, end=False)]
    send_records(conf, topics.events, records)
    stall_after = 3.0
    consumer = consume_proc(
        kafka_bootstrap,
        topics,
        tmp_path,
        "c0",
        "--group",
        group,
        "--stall-after",
        str(stall_after),
    ).start()
    producer = produce_proc(kafka_bootstrap, topics, tmp_path, "produce", config).start()
    assert producer.wait(timeout=600) == 0, producer.stderr_text()[-2000:]
    started = time.monotonic()

    def all_flagged() -> bool:
        folded = read_output(conf, topics, PARTITIONS)
        return all(
            folded.runs.get(str(run)) is not None
            and folded.runs[str(run)].stalled_since is not None
            for run in stalled
        )

    wait_until(all_flagged, timeout=120, what="every dead run flagged stalled")
    flagged_s = time.monotonic() - started
    consumer.stop()
    folded = read_output(conf, topics, PARTITIONS)
    special = {str(run) for run in lost_last + stalled}
    result = measure(
        truth, read_events(conf, topics.events, PARTITIONS), _without(folded, special, set())
    )

    problems: list[str] = []
    for run in lost_last:
        state = folded.runs.get(str(run))
        gaps = [v for v in folded.violations if v.run_id == run and v.kind is ViolationKind.GAP]
        if state is None or state.status.value != "COMPLETED" or state.last_seq != 6:
            problems.append(f"lost-last {run}: {state!r}")
        elif [(g.first_seq, g.last_seq) for g in gaps] != [(5, 5)]:
            problems.append(f"lost-last {run}: gaps {gaps}")
    for run in stalled:
        state = folded.runs.get(str(run))
        flags = [
            v for v in folded.violations if v.run_id == run and v.kind is ViolationKind.STALLED
        ]
        if state is None or state.status.value != "RUNNING" or state.stalled_since is None:
            problems.append(f"stalled {run}: {state!r}")
        elif len(flags) != 1:
            problems.append(f"stalled {run}: {len(flags)} stalled violations")
    write_row(
        Row(
            scenario="9. stalled runs, lost last events",
            injected=f"{len(stalled)} runs whose agent died mid-run and {len(lost_last)} runs that "
            f"lost the event before graph_completed, then a fleet of {runs:,} runs; stall_after "
            f"{stall_after:g} s",
            events=truth.events + len(records),
            lost=result.lost,
            duplicated=result.duplicated,
            order_violations=result.order_violations,
            state_equals_truth=result.state_equals_truth and not problems,
            recovery_s=round(flagged_s, 2),
            details={
                "lost_last_declared": sum(1 for p in problems if p.startswith("lost")) == 0,
                "stalled_flagged_once": sum(1 for p in problems if p.startswith("stalled")) == 0,
                "problems": problems[:5],
                "recovery": "end of production until every dead run is flagged",
            },
        )
    )
    assert not problems, problems[:5]
    assert (result.lost, result.duplicated, result.order_violations) == (0, 0, 0), summary(result)
    assert result.state_equals_truth, summary(result)
