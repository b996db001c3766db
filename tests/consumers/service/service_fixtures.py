"""Helpers for the folding-service tests: load a fleet, run ``runfold consume``, read results.

Everything goes through the real broker and the real CLI (as a subprocess), so a
kill -9 or SIGSTOP hits a process exactly as it would in production; except
:class:`OfflineService`, the one stand-in for the unit tests of the service's own
decisions (no broker: a recording producer, an idle consumer, the test's clocks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Message, Producer

from clients.settings import TopicNames
from consumers.lifecycle import Marker
from consumers.service.edge import FoldEdge
from consumers.service.restore import iter_partition, read_latest_by_key
from consumers.state import RunState
from consumers.state_bytes import MARKER_HEADER, read_marker
from producers import FaultRates, Fleet, FleetConfig
from producers.kafka import DEFAULT_PRODUCER_CONFIG
from schemas import Event, Timestamp, Violation, ViolationKind
from schemas.codec import decode_violation, encode_event

ALL_FAULTS = "gap=0.05,dup=0.05,conflict=0.05,after_end=0.05,corrupt=0.05,reorder=0.05"


def prefix_of(topics: TopicNames) -> str:
    """The ``--prefix`` that turns the default topic names into ``topics``."""
    return topics.events[: -len(TopicNames().events)]


def load_fleet(
    bootstrap: str, topics: TopicNames, *, runs: int, seed: int = 1, faults: str = ALL_FAULTS
) -> dict[str, Any]:
    """Produce a simulated fleet into the events topic; return its manifest."""
    fleet = Fleet(
        FleetConfig(runs=runs, seed=seed, faults=FaultRates.parse(faults)),
        encode=lambda event: encode_event(event),
    )
    producer = Producer({**DEFAULT_PRODUCER_CONFIG, "bootstrap.servers": bootstrap})
    for key, value, _meta in fleet.records():
        while True:
            try:
                producer.produce(topics.events, value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    return fleet.manifest()


def consume_command(bootstrap: str, topics: TopicNames, *args: str) -> list[str]:
    """The argv of ``runfold consume`` on these topics."""
    return [
        sys.executable,
        "-m",
        "runfold",
        "consume",
        "--bootstrap-servers",
        bootstrap,
        "--prefix",
        prefix_of(topics),
        *args,
    ]


def start_consume(
    bootstrap: str, topics: TopicNames, *args: str, log: Path
) -> subprocess.Popen[bytes]:
    """Start ``runfold consume`` in the background, stderr to ``log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFOLD_")}
    return subprocess.Popen(
        consume_command(bootstrap, topics, *args),
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        env=env,
    )


def run_consume(
    bootstrap: str, topics: TopicNames, *args: str, timeout: float = 120
) -> tuple[int, dict[str, Any], str]:
    """Run ``runfold consume --stats-json ...`` to the end: (exit status, stats, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFOLD_")}
    done = subprocess.run(
        consume_command(bootstrap, topics, "--stats-json", *args),
        capture_output=True,
        timeout=timeout,
        env=env,
    )
    lines = done.stdout.decode().strip().splitlines()
    stats = json.loads(lines[-1]) if lines else {}
    return done.returncode, stats, done.stderr.decode()


@dataclass
class Folded:
    """What the service left in its output topics."""

    runs: dict[str, RunState]
    """From ``agent-runs`` (summaries: what a reader sees)."""
    violations: list[Violation]
    dlq: list[Any]
    runs_records: int
    changelog: dict[str, RunState | Marker]
    """From the changelog (what a restore reads): whole states, and the markers of runs
    finished longer ago than the grace (consumers.lifecycle)."""


def read_output(bootstrap: str, topics: TopicNames, partitions: int = 3) -> Folded:
    """The latest state per run (in ``agent-runs`` and in the changelog), every violation
    and every DLQ record (read_committed)."""
    config = {"bootstrap.servers": bootstrap}
    edge = FoldEdge.default()
    restored = read_latest_by_key(config, topics.runs, list(range(partitions)))
    runs = {
        key.decode(): edge.read_run(value).state
        for part in restored.values()
        for key, value in part.latest.items()
    }
    logged = read_latest_by_key(config, topics.changelog, list(range(partitions)))
    changelog = {
        key.decode(): read_marker(value)[1]
        if value.startswith(MARKER_HEADER)
        else edge.decode_state(value)
        for part in logged.values()
        for key, value in part.latest.items()
    }
    violations = [
        decode_violation(msg.value() or b"")
        for p in range(partitions)
        for msg in iter_partition(config, topics.violations, p)
    ]
    dlq = [msg for p in range(partitions) for msg in iter_partition(config, topics.dlq, p)]
    records = sum(part.records for part in restored.values())
    return Folded(
        runs=runs, violations=violations, dlq=dlq, runs_records=records, changelog=changelog
    )


def mismatches(folded: Folded, manifest: dict[str, Any]) -> list[str]:
    """Every difference between the folded output and the fleet's ground truth."""
    problems: list[str] = []
    expected_runs = {entry["run_id"]: entry for entry in manifest["runs"]}
    if set(folded.runs) != set(expected_runs):
        problems.append(f"run ids differ: {len(set(folded.runs) ^ set(expected_runs))} not in both")
    if set(folded.changelog) != set(folded.runs):
        problems.append(f"{len(set(folded.changelog) ^ set(folded.runs))} runs not in both "
                        "agent-runs and the changelog")  # fmt: skip
    for run_id, state in folded.runs.items():
        whole = folded.changelog.get(run_id)
        if isinstance(whole, Marker):
            if (whole.status, whole.last_seq) != (state.status, state.last_seq):
                problems.append(f"{run_id}: the changelog's marker is not agent-runs' summary")
        elif whole is not None and (whole.run, whole.counters()) != (
            state.run,
            state.counters(),
        ):
            problems.append(f"{run_id}: the changelog's state is not agent-runs' summary")
    by_run: dict[str, list[tuple[str, int, int]]] = {}
    for v in folded.violations:
        by_run.setdefault(str(v.run_id), []).append((v.kind.value, v.first_seq, v.last_seq))
    for run_id, entry in expected_runs.items():
        state = folded.runs.get(run_id)
        if state is None:
            continue
        got_run = json.loads(state.run.to_json())
        if got_run != entry["run"]:
            problems.append(f"{run_id}: run {got_run} != {entry['run']}")
        if state.events_applied != entry["applied"]:
            problems.append(f"{run_id}: applied {state.events_applied} != {entry['applied']}")
        if state.duplicates != entry["duplicates"]:
            problems.append(f"{run_id}: duplicates {state.duplicates} != {entry['duplicates']}")
        want = sorted((v["kind"], v["first_seq"], v["last_seq"]) for v in entry["violations"])
        got = sorted(by_run.get(run_id, []))
        if got != want:
            problems.append(f"{run_id}: violations {got} != {want}")
    dlq = len(folded.dlq)
    if dlq != manifest["totals"].get("dlq", 0):
        problems.append(f"DLQ has {dlq} records, manifest says {manifest['totals'].get('dlq')}")
    return problems


def committed_total(bootstrap: str, topics: TopicNames, group: str, partitions: int = 3) -> int:
    """Sum of the group's committed offsets on the events topic (0 where none)."""
    from confluent_kafka import Consumer, TopicPartition

    # read_uncommitted: do not wait for a pending transactional commit (require_stable).
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": "read_uncommitted"}
    )
    try:
        tps = [TopicPartition(topics.events, p) for p in range(partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=30))
    finally:
        consumer.close()


def total_records(manifest: dict[str, Any]) -> int:
    """Records the fleet sent (events, duplicates, conflicts, late and corrupt ones)."""
    return int(manifest["totals"]["records"])


def header_map(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    """Kafka headers as a dict of text."""
    return {name: (value or b"").decode() for name, value in headers or []}


def edge_with(**methods: Any) -> FoldEdge:
    """A default :class:`FoldEdge` with the named methods replaced (a test spying on, or
    breaking, what the service asks of the codec and the fold)."""
    edge = FoldEdge.default()
    for name, method in methods.items():
        if not callable(getattr(edge, name, None)):
            raise AttributeError(f"FoldEdge has no method {name!r}")
        setattr(edge, name, method)
    return edge


WALL = Timestamp.parse("2026-12-06T21:00:00Z")
"""Where an :class:`OfflineService`'s wall clock starts (ns)."""
POLL_STEP_NS = 60 * 10**9
"""Wall time each poll of an :class:`OfflineService`'s idle consumer lets pass."""


class RecordingProducer:
    """Stands in for the transactional producer: keeps what the service would send, and the
    calls of a commit in the same order (as the topics ``<offsets>`` and ``<commit>``)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    @property
    def commits(self) -> int:
        """Transactions committed."""
        return sum(topic == "<commit>" for topic, _ in self.sent)

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.sent.append((topic, kwargs))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0

    def begin_transaction(self) -> None:
        pass

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, timeout: float) -> None:
        self.sent.append(("<offsets>", {"offsets": offsets}))

    def commit_transaction(self, timeout: float) -> None:
        self.sent.append(("<commit>", {}))


class IdleConsumer:
    """Stands in for the consumer: nothing to read, and each poll lets ``POLL_STEP_NS`` of
    the offline service's wall time pass."""

    def __init__(self, offline: OfflineService) -> None:
        self.offline = offline

    def consumer_group_metadata(self) -> None:
        return None

    def poll(self, timeout: float) -> Message | None:
        self.offline.wall += POLL_STEP_NS
        return None

    def consume(self, count: int, timeout: float) -> list[Message]:
        return []

    def commit(self, **_: Any) -> None:
        return None


class OfflineService:
    """A FoldService with no broker: its producer records what it would send
    (:class:`RecordingProducer`), its consumer has nothing to read (:class:`IdleConsumer`),
    its clocks are the test's (``wall``, ns from :data:`WALL`; ``monotonic``, s). A test
    hands it consumed records (``fold*``, offsets counting up), commits as the loop does
    (``commit``), and reads the states and records. ``options``: other ServiceConfig
    fields (the lifecycle's, the bounds, the stall watch)."""

    def __init__(self, edge: FoldEdge | None = None, **options: Any) -> None:
        from consumers.service import FoldService, ServiceConfig

        config = ServiceConfig(
            kafka={},
            events_topic="ev",
            dlq_topic="dlq",
            violations_topic="viol",
            runs_topic="runs",
            changelog_topic="changelog",
            **options,
        )
        self.wall = int(WALL)
        self.monotonic = 0.0
        self.offset = 0
        """The offset of the next record folded."""
        self.service = FoldService(
            config, edge=edge, wall_clock=lambda: self.wall, clock=lambda: self.monotonic
        )
        self.producer = RecordingProducer()
        self.consumer = IdleConsumer(self)
        self.service._producer = self.producer  # type: ignore[assignment]
        self.service._consumer = self.consumer  # type: ignore[assignment]

    def fold(self, *events: Event, partition: int = 0) -> None:
        """Fold ``events`` as one consumed batch of ``partition``."""
        self.fold_batch([(partition, event) for event in events])

    def fold_batch(self, events: Iterable[tuple[int, Event]]) -> None:
        """Fold ``(partition, event)`` pairs as one consumed batch."""
        self.fold_bytes((p, str(e.run_id).encode(), encode_event(e)) for p, e in events)

    def fold_bytes(self, records: Iterable[tuple[int, bytes | None, bytes | None]]) -> None:
        """Fold ``(partition, key, value)`` records as one consumed batch."""
        msgs = []
        for partition, key, value in records:
            msgs.append(
                Message(topic="ev", partition=partition, offset=self.offset, key=key, value=value)
            )
            self.offset += 1
        self.service._fold_batch(msgs)

    def commit(self, at: int | None = None) -> list[tuple[int, bytes, bytes | None]]:
        """Commit as the loop does (a transaction opened if none is), the wall clock at
        ``at`` if given; the changelog records written, as ``(partition, key, value)``
        (None: a tombstone)."""
        if at is not None:
            self.wall = at
        before = len(self.producer.sent)
        self.service._ensure_txn()
        self.service._commit()
        return [
            (kw["partition"], kw["key"], kw["value"])
            for topic, kw in self.producer.sent[before:]
            if topic == "changelog"
        ]

    def violations(self, run: uuid.UUID) -> list[Violation]:
        """The run's violations published so far."""
        return [decode_violation(kw["value"]) for kw in self.records("viol", run)]

    def violation_kinds(self, run: uuid.UUID) -> list[ViolationKind]:
        """The kinds of the run's violations published so far."""
        return [violation.kind for violation in self.violations(run)]

    def records(self, topic: str, run: uuid.UUID | None = None) -> list[dict[str, Any]]:
        """What was produced to ``topic`` (of ``run`` only, if given), in order."""
        key = None if run is None else str(run).encode()
        return [
            kw
            for name, kw in self.producer.sent
            if name == topic and (key is None or kw["key"] == key)
        ]

    def written(self, run: uuid.UUID) -> list[RunState]:
        """The run's states as written to the changelog, each checked against the summary
        written beside it to agent-runs (stalled_since is in both)."""
        edge = self.service.edge
        states = [edge.decode_state(kw["value"]) for kw in self.records("changelog", run)]
        summaries = [edge.read_run(kw["value"]).state for kw in self.records("runs", run)]
        assert [s.stalled_since for s in summaries] == [s.stalled_since for s in states]
        return states

    def state(self, run: uuid.UUID, partition: int = 0) -> RunState:
        """The run's state in the store (decoded)."""
        return self.service._store.runs[partition][str(run).encode()]
