"""runfold's own numbers: producer, folding service (both guarantees) and its final state.

The folding service runs as a child process (``python -m runfold consume``), as a user
would run it, with its topics named through ``RUNFOLD_TOPICS__*`` so several services read
the same pre-loaded events topic and each writes its own state topic. Its rate is the
events of the topic divided by the time from its "restored" log line (assignment done,
consumption starts) to the moment the group's committed offsets reach the end of the topic,
as seen by a separate consumer.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.kafka_env import (
    BenchError,
    Watched,
    cpu_seconds,
    create_topic,
    end_offsets,
    rss_bytes,
    wait_committed,
)
from bench.producer_bench import record_runs, recorded_runs
from bench.results import Measurement
from consumers.service.edge import FoldEdge
from consumers.service.restore import read_latest_by_key
from producers import EventProducer, Fleet, FleetConfig, RunRecorder, produce_fleet

__all__ = [
    "FinalState",
    "ServiceTopics",
    "Workload",
    "expected_state",
    "fold_service",
    "read_run_states",
    "runfold_produce",
    "runfold_record",
    "RUNFOLD",
    "service_env",
    "start_service",
]

STAGE = "runfold"
FinalState = dict[str, tuple[str, int, int]]
"""run_id -> (status, last_seq, events applied): what every fold must agree on."""


@dataclass(frozen=True)
class Workload:
    """The simulated fleet every stage uses (no faults: every fold must agree exactly)."""

    runs: int
    agents: int = 16
    seed: int = 2026

    def config(self) -> FleetConfig:
        """The fleet configuration."""
        return FleetConfig(runs=self.runs, agents=self.agents, seed=self.seed)

    @classmethod
    def for_events(cls, events: int) -> Workload:
        """About ``events`` records: the run count from a sample's average run length."""
        sample = Fleet(FleetConfig(runs=200, agents=16, seed=2026))
        per_run = sum(1 for _ in sample.records()) / 200
        return cls(runs=max(1, round(events / per_run)))

    def events(self) -> list[Any]:
        """The fleet's events as models (no encoding), before any clock starts."""
        built: list[Any] = []

        def keep(event: Any) -> bytes:
            built.append(event)
            return b""

        for _ in Fleet(self.config(), encode=keep).records():
            pass
        return built

    def records(self) -> list[tuple[bytes, bytes]]:
        """Every record (key, value), encoded, before any clock starts."""
        return [(key, value) for key, value, _ in Fleet(self.config()).records()]


@dataclass(frozen=True)
class ServiceTopics:
    """The topics of one folding service (events shared, the rest its own)."""

    events: str
    runs: str
    violations: str
    dlq: str
    changelog: str

    @classmethod
    def own(cls, events: str, prefix: str) -> ServiceTopics:
        """Shared ``events``; runs, violations, DLQ and changelog topics named ``<prefix>...``."""
        return cls(
            events, f"{prefix}runs", f"{prefix}violations", f"{prefix}dlq", f"{prefix}changelog"
        )

    def create(
        self, admin: Any, partitions: int, changelog: dict[str, str] | None = None
    ) -> None:
        """Create the service's own topics (the events topic exists already); the
        changelog compacted, with ``changelog``'s settings if given."""
        create_topic(admin, self.runs, partitions, {"cleanup.policy": "compact"})
        create_topic(
            admin, self.changelog, partitions, changelog or {"cleanup.policy": "compact"}
        )
        create_topic(admin, self.violations, partitions)
        create_topic(admin, self.dlq, partitions)


def service_env(topics: ServiceTopics) -> dict[str, str]:
    """Environment naming the service's topics (runfold settings' nested variables)."""
    return {
        "RUNFOLD_TOPICS__EVENTS": topics.events,
        "RUNFOLD_TOPICS__RUNS": topics.runs,
        "RUNFOLD_TOPICS__VIOLATIONS": topics.violations,
        "RUNFOLD_TOPICS__DLQ": topics.dlq,
        "RUNFOLD_TOPICS__CHANGELOG": topics.changelog,
        "RUNFOLD_TOPIC_PREFIX": "",
    }


RUNFOLD = (sys.executable, "-m", "runfold")
"""How the bench starts runfold's CLI (as a user would: ``python -m runfold``)."""


def start_service(
    bootstrap: str, topics: ServiceTopics, group: str, guarantee: str, *,
    until_idle: float, extra: list[str] | None = None, launcher: tuple[str, ...] = RUNFOLD,
) -> Watched:
    """``runfold consume`` as a child process, its log lines watched."""
    cmd = [
        *launcher, "consume",
        "--bootstrap-servers", bootstrap,
        "--group", group,
        "--instance-id", "0",
        "--guarantee", guarantee,
        "--until-idle", str(until_idle),
        "--stats-json",
        "-v",
        *(extra or []),
    ]
    return Watched(
        cmd,
        marks={
            "assigned": r"assigned .* partitions",
            "restored": r"restored (\d+) runs of partitions .* in ([\d.]+)s",
        },
        env=service_env(topics),
    )


def _stats_line(service: Watched) -> dict[str, Any]:
    for line in reversed(service.lines):
        if line.startswith("{") and '"consumed"' in line:
            parsed: dict[str, Any] = json.loads(line)
            return parsed
    return {}


def runfold_produce(bootstrap: str, topic: str, workload: Workload) -> tuple[Measurement, Fleet]:
    """Simulator + codec + ``EventProducer`` into ``topic``, flush included."""
    fleet = Fleet(workload.config())
    producer = EventProducer(topic, bootstrap_servers=bootstrap)
    producer.connect()
    cpu = time.process_time()
    result = produce_fleet(fleet, producer, flush_timeout=120)
    cpu = time.process_time() - cpu
    producer.close()
    report = result.report
    if not report.ok:
        raise BenchError(f"runfold producer did not deliver every record: {report.summary()}")
    measurement = Measurement(
        "runfold.produce", STAGE, "runfold producer (simulate+encode+produce)",
        result.records_per_second, "ev/s",
        detail=f"{result.records:,} events of {workload.runs:,} runs from {workload.agents} "
        f"agents{per_cpu(result.records, cpu)}; timed: Fleet plans and scheduler draws, Avro "
        "bytes from the plan, EventProducer.produce_many (acks=all idempotent, every delivery "
        "accounted), final flush; the manifest is built after the clock stops",
        extra={"cpu_seconds": cpu},
    )
    return measurement, fleet


def runfold_record(bootstrap: str, topic: str, workload: Workload) -> Measurement:
    """``RunRecorder`` over ``EventProducer``: the path an agent embedding runfold takes.

    Per event: ``RunHandle.emit`` (seq, clock, the Event built and its payload
    validated), ``EventProducer.send`` (Avro encode, produce, delivery accounting),
    flush included. The kind models and payload dicts are the agent's own data,
    built before the clock starts (as ``runfold.send``'s events are).
    """
    runs = recorded_runs(workload.config())
    producer = EventProducer(topic, bootstrap_servers=bootstrap)
    producer.connect()
    recorder = RunRecorder(producer)
    started = time.perf_counter()
    cpu = time.process_time()
    sent = record_runs(recorder, runs)
    report = recorder.close(timeout=120)
    cpu = time.process_time() - cpu
    seconds = time.perf_counter() - started
    if not report.ok:
        raise BenchError(f"RunRecorder did not deliver every record: {report.summary()}")
    return Measurement(
        "runfold.record", STAGE, "runfold RunRecorder.emit (kinds, payloads built beforehand)",
        sent / seconds, "ev/s",
        detail=f"{sent:,} events of {len(runs):,} runs, one run after another"
        f"{per_cpu(sent, cpu)}; timed: run()/emit (seq, clock, Event, payload validation), "
        "EventProducer.send (Avro encode, produce, delivery accounting), flush included",
        extra={"cpu_seconds": cpu},
    )


def per_cpu(events: int, cpu: float | None) -> str:
    """``" (N ev per CPU-s)"`` for a detail text, or nothing when CPU was not measured."""
    if not cpu:
        return ""
    return f" ({events / cpu:,.0f} ev per CPU-s)"


def runfold_send(bootstrap: str, topic: str, workload: Workload) -> Measurement:
    """``EventProducer.send`` of pre-built events: encode + produce + delivery accounting.

    The producer without the simulator: what an agent's ``RunRecorder`` pays per event on
    top of building the event.
    """
    events = workload.events()
    producer = EventProducer(topic, bootstrap_servers=bootstrap)
    producer.connect()
    started = time.perf_counter()
    cpu = time.process_time()
    send = producer.send
    for event in events:
        send(event)
    report = producer.close(timeout=120)
    cpu = time.process_time() - cpu
    seconds = time.perf_counter() - started
    if not report.ok:
        raise BenchError(f"EventProducer did not deliver every record: {report.summary()}")
    return Measurement(
        "runfold.send", STAGE, "runfold EventProducer.send (pre-built events)",
        len(events) / seconds, "ev/s",
        detail=f"{len(events):,} Event models built beforehand{per_cpu(len(events), cpu)}; "
        "Avro encode + produce + delivery accounting, flush included",
        extra={"cpu_seconds": cpu},
    )


def expected_state(fleet: Fleet) -> FinalState:
    """The simulator's ground truth for a fault-free fleet."""
    manifest = fleet.manifest()
    return {
        entry["run_id"]: (entry["run"]["status"], entry["events"], entry["applied"])
        for entry in manifest["runs"]
    }


def read_run_states(bootstrap: str, topic: str, partitions: int) -> FinalState:
    """runfold's committed final state per run, read back from its state topic."""
    edge = FoldEdge.default()
    latest = read_latest_by_key(
        {"bootstrap.servers": bootstrap}, topic, list(range(partitions)), timeout=120
    )
    states: FinalState = {}
    for part in latest.values():
        for key, value in part.latest.items():
            state = edge.read_run(value).state
            states[key.decode()] = (state.status.value, state.last_seq, state.events_applied)
    return states


def compare_states(name: str, got: Mapping[str, tuple[str, int, int]],
                   want: Mapping[str, tuple[str, int, int]]) -> str:
    """An empty string when equal, else a sentence naming the first differences."""
    if got == want:
        return ""
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    differ = [k for k in want if k in got and got[k] != want[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} runs missing")
    if extra:
        parts.append(f"{len(extra)} unexpected runs")
    if differ:
        k = differ[0]
        parts.append(
            f"{len(differ)} runs differ, e.g. {k}: {got[k]} instead of {want[k]} "
            "(status, last_seq, events)"
        )
    return f"{name}: " + "; ".join(parts)


def fold_service(
    bootstrap: str, admin: Any, events_topic: str, partitions: int, total: int,
    guarantee: str, prefix: str, expected: FinalState, *, timeout: float,
    consume_args: tuple[str, ...] = (), variant: str = "", variant_label: str = "",
    launcher: tuple[str, ...] = RUNFOLD,
) -> Measurement:
    """The folding service over the pre-loaded topic; its final state checked.

    ``variant`` names one of the bench's other streams (key ``runfold.fold.eos.<variant>``,
    ``variant_label`` appended to the label); ``launcher`` replaces ``python -m runfold``
    (the Confluent-framed stream needs a registry configured in the service's process).
    """
    tag = "eos" if guarantee == "exactly-once" else "alo"
    key, label = f"runfold.fold.{tag}", f"runfold fold, {guarantee}"
    if variant:
        key, label, tag = f"{key}.{variant}", f"{label}, {variant_label}", f"{tag}-{variant}"
    topics = ServiceTopics.own(events_topic, f"{prefix}{tag}-")
    topics.create(admin, partitions)
    group = f"{prefix}{tag}"
    targets = end_offsets(bootstrap, events_topic, partitions)
    # Stopped by SIGTERM once everything is committed (it commits its open transaction and
    # exits 0); --until-idle is only a safety net should the benchmark die first.
    service = start_service(bootstrap, topics, group, guarantee, until_idle=120.0,
                            extra=list(consume_args), launcher=launcher)
    try:
        started = service.wait_mark("restored", 90)
        cpu_start = cpu_seconds(service.pid)
        rss_start = rss_bytes(service.pid)
        try:
            done = wait_committed(
                bootstrap, group, events_topic, targets, timeout=timeout, alive=service.alive
            )
        except BenchError as exc:
            raise BenchError(f"{exc}; its output: {service.tail(8)}") from exc
        cpu_end = cpu_seconds(service.pid)
        rss_end = rss_bytes(service.pid)
        service.proc.terminate()
        code = service.finish(timeout=60)
    finally:
        service.stop()
    stats = _stats_line(service)
    if code != 0:
        raise BenchError(f"runfold consume exited with {code}: {service.tail()}")
    seconds = done - started
    states = read_run_states(bootstrap, topics.runs, partitions)
    problem = compare_states("runfold", states, expected)
    cpu = cpu_end - cpu_start if cpu_start is not None and cpu_end is not None else None
    return Measurement(
        key, STAGE, label, total / seconds, "ev/s",
        detail=f"{total:,} events in {seconds:.2f}s{per_cpu(total, cpu)}, subprocess "
        f"`runfold consume {' '.join(consume_args) or '(defaults)'}`; "
        f"{stats.get('transactions', '?')} commits",
        valid=not problem,
        note=problem or "final state = simulator manifest",
        extra={"seconds": seconds, "cpu_seconds": cpu, "stats": stats, "runs": len(states),
               "rss_start": rss_start, "rss_end": rss_end},
    )


def wait_idle(seconds: float) -> None:
    """Let the broker settle between stages (log flushes, group coordinator work)."""
    time.sleep(seconds)
