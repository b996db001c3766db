"""Scenario harness: real processes, real brokers, injected faults, measured against ground truth.

A scenario starts ``runfold produce`` / ``runfold consume`` as subprocesses (so SIGKILL,
SIGSTOP and SIGCONT hit real processes), breaks things, heals them, then measures:

- ground truth: the simulator's manifest, regenerated in-process from the same
  deterministic :class:`~producers.fleet.FleetConfig` (a killed producer never writes one),
  plus the producer's delivery accounting (scraped from its metrics endpoint);
- what Kafka holds: every record of the events topic (read_committed), decoded;
- what the service folded: ``agent-runs``, ``agent-run-violations``, the DLQ.

:mod:`truth` turns these into a row of the table (lost, duplicated, order violations,
state == truth); ``tests/reliability/report.py`` renders ``docs/reliability.md`` from the rows.

Scale knobs are plain environment variables (``RELIABILITY_*``, not ``RUNFOLD_*``: the
settings object rejects unknown ``RUNFOLD_`` names), so CI can run the scenarios smaller.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from clients.settings import TopicNames
from consumers.service.edge import FoldEdge
from consumers.service.restore import iter_partition, read_latest_by_key
from consumers.state import RunState
from producers import FleetConfig
from runfold.topics import ensure_topics
from schemas import Violation
from schemas.codec import decode_event, decode_violation
from schemas.errors import RunfoldError


def scale(name: str, default: int) -> int:
    """``$RELIABILITY_<NAME>`` as an int, else ``default`` (CI passes smaller numbers)."""
    return int(os.environ.get(f"RELIABILITY_{name}", default))


# -- processes ---------------------------------------------------------------------------------


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a runfold subprocess: ours without RUNFOLD_*/bootstrap, plus extra."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RUNFOLD_", "RELIABILITY_")) and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    env.update(extra or {})
    return env


def runfold_argv(*args: str) -> list[str]:
    """``python -m runfold <args>`` with this interpreter."""
    return [sys.executable, "-m", "runfold", *args]


@dataclass
class Proc:
    """One runfold subprocess with its stdout/stderr in files (read them any time)."""

    name: str
    argv: list[str]
    log_dir: Path
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None

    @property
    def out(self) -> Path:
        return self.log_dir / f"{self.name}.out"

    @property
    def err(self) -> Path:
        return self.log_dir / f"{self.name}.err"

    def start(self) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.out.open("ab") as out, self.err.open("ab") as err:
            self.popen = subprocess.Popen(
                self.argv, stdout=out, stderr=err, env=self.env, stdin=subprocess.DEVNULL
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(sig)

    def kill9(self) -> None:
        """SIGKILL and reap."""
        self.signal(signal.SIGKILL)
        self.wait(30)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        """Make sure it is gone (SIGCONT first: a stopped process ignores SIGTERM)."""
        if self.alive():
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()

    def stderr_text(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""

    def stdout_text(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""


def consume_proc(
    bootstrap: str,
    topics: TopicNames,
    log_dir: Path,
    name: str,
    *args: str,
    env: Mapping[str, str] | None = None,
) -> Proc:
    """A ``runfold consume`` process (not started) on ``topics``."""
    prefix = topics.events[: -len(TopicNames().events)]
    argv = runfold_argv(
        "consume", "--bootstrap-servers", bootstrap, "--prefix", prefix, "--stats-json", *args
    )
    return Proc(name, argv, log_dir, clean_env(env))


def produce_proc(
    bootstrap: str,
    topics: TopicNames,
    log_dir: Path,
    name: str,
    config: FleetConfig,
    *args: str,
    env: Mapping[str, str] | None = None,
) -> Proc:
    """A ``runfold produce`` process (not started) sending ``config``'s fleet, with metrics."""
    argv = runfold_argv(
        "produce",
        "--bootstrap",
        bootstrap,
        "--topic",
        topics.events,
        "--no-ensure-topics",
        "--runs",
        str(config.runs),
        "--agents",
        str(config.agents),
        "--seed",
        str(config.seed),
        "--faults",
        config.faults.as_text(),
        "--metrics-port",
        "0",
        *args,
    )
    return Proc(name, argv, log_dir, clean_env(env))


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
) -> float:
    """Poll ``check`` until true; return the seconds it took, or raise naming ``what``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def stats_of(proc: Proc) -> dict[str, Any]:
    """The ``--stats-json`` line a finished ``runfold consume`` printed (``{}`` if none)."""
    lines = [ln for ln in proc.stdout_text().splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def metrics_url(proc: Proc, timeout: float = 60.0) -> str:
    """The metrics URL a process printed on stderr (``metrics: http://...``)."""
    found: list[str] = []

    def printed() -> bool:
        for line in proc.stderr_text().splitlines():
            if "metrics: http" in line:
                found.append(line.split("metrics: ", 1)[1].strip())
                return True
        return False

    wait_until(printed, timeout, f"{proc.name} to print its metrics URL")
    return found[0]


def scrape(url: str, name: str, labels: str = "") -> float | None:
    """One sample of a Prometheus endpoint (``None`` if it cannot be read)."""
    try:
        text = urllib.request.urlopen(url, timeout=2).read().decode()
    except OSError:
        return None
    want = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return None


def delivered(url: str) -> float | None:
    """The producer's delivered count, from its metrics."""
    return scrape(url, "runfold_producer_deliveries_total", 'result="delivered"')


# -- topics and raw records --------------------------------------------------------------------


def make_topics(
    admin: AdminClient,
    *,
    partitions: int = 3,
    replication: int = 1,
    events_config: Mapping[str, str] | None = None,
    dlq_config: Mapping[str, str] | None = None,
) -> TopicNames:
    """The four topics under a unique prefix (events/DLQ configs added when given)."""
    names = TopicNames().prefixed(f"rel-{uuid.uuid4().hex[:8]}-")
    isr = "2" if replication >= 3 else "1"
    extra = []
    if events_config:
        extra.append(
            NewTopic(
                names.events,
                partitions,
                replication,
                config={"min.insync.replicas": isr, **events_config},
            )
        )
    if dlq_config:
        extra.append(
            NewTopic(
                names.dlq,
                partitions,
                replication,
                config={"min.insync.replicas": isr, **dlq_config},
            )
        )
    if extra:
        for future in admin.create_topics(extra, operation_timeout=60).values():
            future.result(timeout=60)
    report = ensure_topics(admin, names, partitions=partitions, replication=replication, timeout=60)
    assert report.ok, report.mismatches
    return names


def send_records(
    config: Mapping[str, Any],
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    extra: Mapping[str, Any] | None = None,
) -> list[tuple[int, int]]:
    """Produce ``(key, value)`` records synchronously; ``(partition, offset)`` of each, in order."""
    from producers.kafka import DEFAULT_PRODUCER_CONFIG

    positions: dict[int, tuple[int, int]] = {}
    errors: list[str] = []
    producer = Producer({**DEFAULT_PRODUCER_CONFIG, **config, **(extra or {})})
    count = 0
    for index, (key, value) in enumerate(records):

        def report(err: KafkaError | None, msg: Any, index: int = index) -> None:
            if err is not None:
                errors.append(err.str())
            else:
                positions[index] = (msg.partition(), msg.offset())

        while True:
            try:
                producer.produce(topic, value, key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
    assert producer.flush(120) == 0, "records still in flight after 120 s"
    assert not errors, f"delivery failed: {errors[:3]}"
    return [positions[i] for i in range(count)]


# -- reading Kafka -----------------------------------------------------------------------------


@dataclass
class EventsOnTopic:
    """The decodable events of the events topic: per run, the seqs in topic order."""

    seqs: dict[str, list[int]]
    undecodable: int
    records: int


def read_events(config: Mapping[str, Any], topic: str, partitions: int) -> EventsOnTopic:
    """Every committed record of ``topic``, decoded."""
    seqs: dict[str, list[int]] = {}
    bad = records = 0
    for p in range(partitions):
        for msg in iter_partition(config, topic, p, timeout=120):
            records += 1
            try:
                event = decode_event(msg.value() or b"")
            except RunfoldError:
                bad += 1
                continue
            seqs.setdefault(str(event.run_id), []).append(event.seq)
    return EventsOnTopic(seqs, bad, records)


@dataclass
class Folded:
    """What the service left in its output topics."""

    runs: dict[str, RunState]
    """As readers see them in ``agent-runs`` (a summary's resume part is empty)."""
    violations: list[Violation]
    dlq: list[Any]
    pending: dict[str, int] = field(default_factory=dict)
    """Events held in each run's reorder buffer (the summary's ``pending``)."""


def read_output(config: Mapping[str, Any], topics: TopicNames, partitions: int) -> Folded:
    """Latest state per run, every violation, every DLQ record (read_committed)."""
    edge = FoldEdge.default()
    parts = list(range(partitions))
    restored = read_latest_by_key(config, topics.runs, parts, timeout=120)
    views = {
        key.decode(): edge.read_run(value)
        for part in restored.values()
        for key, value in part.latest.items()
    }
    runs = {run_id: view.state for run_id, view in views.items()}
    pending = {run_id: view.pending for run_id, view in views.items()}
    violations = [
        decode_violation(msg.value() or b"")
        for p in parts
        for msg in iter_partition(config, topics.violations, p, timeout=120)
    ]
    dlq = [msg for p in parts for msg in iter_partition(config, topics.dlq, p, timeout=120)]
    return Folded(runs, violations, dlq, pending)


def committed_total(config: Mapping[str, Any], topic: str, group: str, partitions: int) -> int:
    """Sum of ``group``'s committed offsets on ``topic`` (0 where none)."""
    consumer = Consumer({**config, "group.id": group, "isolation.level": "read_uncommitted"})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=30))
    finally:
        consumer.close()
