"""One benchmark run: every stage, in order, against one broker; the report with ratios and goals.

Order matters on a 2-core machine: each stage runs alone. The events topic is loaded once
by runfold's producer and then read by the client ceiling, both folding-service modes and
the peers, so every fold sees the same records.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from confluent_kafka import KafkaException

from bench import ceilings, hand_producer, live_stages, runfold_stages, week, workloads
from bench.kafka_env import BenchBroker, create_topic, warm_up
from bench.peers.runner import (
    FAUST,
    QUIX,
    QUIX_OWN,
    STREAMS,
    PeerStream,
    run_peer,
    streams_live,
)
from bench.results import Goal, Measurement, Ratio, Report, machine_notes
from schemas.errors import RunfoldError

__all__ = ["STAGES", "SuiteOptions", "run_suite"]

STAGES = ("anchors", "producer", "fold", "peers", "workloads", "latency", "restore", "week")
Echo = Callable[[str], None]


@dataclass
class SuiteOptions:
    """What to measure and how much."""

    events: int = 500_000
    """At 100k events/s a 200k-event fold lasts 2 s, and its start-up and last commit are
    a visible share of that: 500k measures the steady state."""
    quick: bool = False
    bootstrap: str | None = None
    partitions: int = 6
    latency_rate: float = 10_000.0
    latency_seconds: float = 30.0
    restore_runs: int = 1_000_000
    week_runs: int = 1_000_000
    """Finished runs of the larger simulated week (the smaller has a quarter of them)."""
    week_active: int = 10_000
    """Runs still open at the end of each week."""
    peers: bool | None = None
    """Build missing peer environments: ``None`` means yes unless ``quick``."""
    stages: tuple[str, ...] = STAGES
    consume_args: tuple[str, ...] = ()
    """Extra ``runfold consume`` options for the fold and latency stages (tuning runs)."""

    @classmethod
    def quick_defaults(cls, **overrides: Any) -> SuiteOptions:
        """The short run CI can afford (well under two minutes with a broker start)."""
        values: dict[str, Any] = {
            "events": 10_000, "quick": True, "latency_seconds": 3.0, "restore_runs": 10_000,
            "week_runs": 20_000, "week_active": 1_000,
        }
        values.update(overrides)
        return cls(**values)


_VARIANT_KEYS = tuple(v.name for v in workloads.VARIANTS)

RATIOS = [
    Ratio("of client ceiling", "runfold.produce", "client.produce"),
    Ratio("of client ceiling", "runfold.send", "client.produce"),
    Ratio("× hand-written", "runfold.record", "client.serializing"),
    Ratio("of client ceiling", "runfold.record", "client.produce"),
    Ratio("of client ceiling", "client.serializing", "client.produce"),
    Ratio("of broker ceiling", "client.produce", "broker.produce"),
    Ratio("of client ceiling", "runfold.fold.eos", "client.consume"),
    Ratio("of client ceiling", "runfold.fold.alo", "client.consume"),
    Ratio("of broker ceiling", "client.consume", "broker.consume"),
    Ratio("× Kafka Streams EOS", "runfold.fold.eos", "peer.streams.eos"),
    Ratio("× Quix EOS", "runfold.fold.eos", "peer.quix.eos"),
    Ratio("× faust EOS", "runfold.fold.eos", "peer.faust.eos"),
    Ratio("× Quix EOS", "peer.streams.eos", "peer.quix.eos"),
    Ratio("× Kafka Streams", "latency.p50", "latency.streams.p50"),
    Ratio("× Kafka Streams", "latency.p99", "latency.streams.p99"),
    *[r for v in _VARIANT_KEYS for r in (
        Ratio("of clean stream", f"runfold.fold.eos.{v}", "runfold.fold.eos"),
        Ratio("× Kafka Streams EOS", f"runfold.fold.eos.{v}", f"peer.streams.eos.{v}"),
        Ratio("× Quix EOS", f"runfold.fold.eos.{v}", f"peer.quix.eos.{v}"),
    )],
    Ratio("of client ceiling", "cpu.runfold.produce", "cpu.client.produce"),
    Ratio("of client ceiling", "cpu.runfold.send", "cpu.client.produce"),
    Ratio("× hand-written", "cpu.runfold.record", "cpu.client.serializing"),
    Ratio("× Kafka Streams EOS", "cpu.runfold.fold.eos", "cpu.peer.streams.eos"),
    Ratio("× Quix EOS", "cpu.runfold.fold.eos", "cpu.peer.quix.eos"),
    *[r for v in _VARIANT_KEYS for r in (
        Ratio("× Kafka Streams EOS", f"cpu.runfold.fold.eos.{v}", f"cpu.peer.streams.eos.{v}"),
        Ratio("× Quix EOS", f"cpu.runfold.fold.eos.{v}", f"cpu.peer.quix.eos.{v}"),
    )],
]
_PRODUCERS = ("client.produce", "runfold.produce", "runfold.send", "runfold.record",
              "client.serializing")
_FOLDS = ("runfold.fold.eos", "runfold.fold.alo", "peer.streams.eos", "peer.quix.eos",
          "peer.faust.eos")
_CPU_RATES = (*_PRODUCERS, *_FOLDS, *[f"{fold}.{v}" for v in _VARIANT_KEYS
                                      for fold in ("runfold.fold.eos", "peer.streams.eos",
                                                   "peer.quix.eos")])


def _derive_cpu_rates(report: Report) -> None:
    """Events per CPU-second of the process doing the work: what a dedicated core would do.

    On a shared machine the wall-clock rate also measures the neighbours; this one does not.
    """
    found = report.by_key()
    for key in _CPU_RATES:
        m = found.get(key)
        cpu = m.extra.get("cpu_seconds") if m is not None else None
        if m is None or m.value is None or not cpu:
            continue
        events = m.value * float(m.extra.get("seconds", 0) or 0) or None
        if key in _PRODUCERS:
            records = report.options.get("records")
            events = float(records) if isinstance(records, int) else None
        if not events:
            continue
        report.add(Measurement(
            f"cpu.{key}", "per CPU-second", m.label, events / cpu, "ev/CPU-s",
            detail=f"{events:,.0f} events / {cpu:.2f} CPU-s of the process (all its threads)",
            valid=m.valid, note="" if m.valid else m.note,
        ))


def _value(found: dict[str, Measurement], key: str) -> float | None:
    m = found.get(key)
    return m.value if m is not None and m.usable else None


def _goal_producer(found: dict[str, Measurement]) -> tuple[bool | None, str]:
    rate, hand = _value(found, "runfold.record"), _value(found, "client.serializing")
    ceiling = _value(found, "client.produce")
    if rate is None or hand is None or ceiling is None:
        return None, "not measured"
    by_hand, of_ceiling = rate / hand, rate / ceiling
    return by_hand >= 2 and of_ceiling >= 0.5, (
        f"RunRecorder.emit {rate:,.0f} ev/s = {by_hand:.2f}× hand-written "
        f"SerializingProducer ({hand:,.0f}), {of_ceiling:.2f}× client ceiling")


def _goal_streams(found: dict[str, Measurement]) -> tuple[bool | None, str]:
    rate, streams = _value(found, "runfold.fold.eos"), _value(found, "peer.streams.eos")
    if rate is None or streams is None:
        return None, "not measured"
    cpu, streams_cpu = _value(found, "cpu.runfold.fold.eos"), _value(found, "cpu.peer.streams.eos")
    text = f"{rate:,.0f} vs {streams:,.0f} ev/s = {rate / streams:.2f}× Kafka Streams"
    if cpu and streams_cpu:
        text += f" (per CPU-second {cpu / streams_cpu:.2f}×)"
    return rate >= streams, text


def _goal_streams_users_have(found: dict[str, Measurement]) -> tuple[bool | None, str]:
    clean = _value(found, "runfold.fold.eos")
    confluent, faulty = _value(found, "runfold.fold.eos.confluent"), _value(
        found, "runfold.fold.eos.faulty")
    large = _value(found, "runfold.fold.eos.large")
    if None in (clean, confluent, faulty, large):
        return None, "not measured"
    assert clean and confluent and faulty and large
    met = confluent >= 0.8 * clean and faulty >= 0.8 * clean and large >= 50_000
    return met, (f"Confluent {confluent / clean:.2f}×, faulty {faulty / clean:.2f}× clean; "
                 f"2 KB payloads {large:,.0f} ev/s")


def _goal_fold(found: dict[str, Measurement]) -> tuple[bool | None, str]:
    rows = [("clean", "runfold.fold.eos", "peer.quix.eos"),
            *[(v, f"runfold.fold.eos.{v}", f"peer.quix.eos.{v}") for v in _VARIANT_KEYS]]
    parts: list[str] = []
    met = True
    for name, ours, quix in rows:
        rate, theirs = _value(found, ours), _value(found, quix)
        if rate is None or theirs is None:
            return None, f"{name}: not measured" + (f"; {'; '.join(parts)}" if parts else "")
        met = met and rate >= 5 * theirs and (name == "large" or rate >= 100_000)
        parts.append(f"{name} {rate / 1000:,.0f}k = {rate / theirs:.1f}× Quix")
    return met, "; ".join(parts) + " (100k asked of the ~94 B streams)"


def _goal_latency(found: dict[str, Measurement]) -> tuple[bool | None, str]:
    p99 = _value(found, "latency.p99")
    m = found.get("latency.p99")
    if p99 is None or m is None:
        return None, "not measured"
    text = f"p99 {p99:,.0f} ms ({m.detail.split(';')[0]})"
    streams = _value(found, "latency.streams.p99")
    if streams is not None:
        text += f"; Kafka Streams p99 {streams:,.0f} ms at the same offered rate"
    return p99 <= 100, text


def _goal_restore(found: dict[str, Measurement]) -> tuple[bool | None, str]:
    seconds = _value(found, "restore.seconds")
    m = found.get("restore.seconds")
    if seconds is None or m is None:
        return None, "not measured"
    runs = int(m.extra.get("runs", 0))
    per_million = seconds * 1_000_000 / runs if runs else seconds
    text = f"{runs:,} runs in {seconds:.1f}s"
    if runs != 1_000_000:
        text += f" (≈{per_million:.1f}s per 1M, extrapolated)"
    return per_million <= 10, text


def _goal_week(found: dict[str, Measurement]) -> tuple[bool | None, str]:
    parts, met = [], True
    for name in ("small", "large"):
        rss, restore = found.get(f"week.rss.{name}"), _value(found, f"week.restore_seconds.{name}")
        if rss is None or rss.value is None or restore is None:
            return None, "not measured"
        budget = rss.extra["budget"] / 2**20
        parts.append(f"{name}: {rss.value:,.1f} MiB of a {budget:,.1f} MiB budget, restore "
                     f"{restore:.1f}s")
        met = met and rss.value <= budget and restore <= 10
    return met, "; ".join(parts)


GOALS = [
    Goal("EOS fold ≥ 1.0× Kafka Streams EOS, same events", _goal_streams),
    Goal("Confluent ≥ 0.8× single-object; faulty ≥ 0.8× clean; 2 KB payloads ≥ 50k ev/s",
         _goal_streams_users_have),
    Goal("EOS fold ≥ 100k ev/s and ≥ 5× Quix EOS on every row", _goal_fold),
    Goal("p99 end-to-end ≤ 100 ms at 10,000 ev/s, exactly-once", _goal_latency),
    Goal("RunRecorder.emit ≥ 2× hand-written SerializingProducer, ≥ 0.5× client ceiling",
         _goal_producer),
    Goal("restore 1M runs ≤ 10 s (issue 8)", _goal_restore),
    Goal("a week of a fleet: RSS ≤ 1 KiB per active run + 100 B per finished-run marker, "
         "restore ≤ 10 s, at both sizes (issue 15)", _goal_week),
]


def _guard(report: Report, echo: Echo, key: str, stage: str, label: str, unit: str,
           action: Callable[[], Measurement | list[Measurement]]) -> None:
    """Run one stage; a failure becomes a missing number with its reason, not a crash."""
    echo(f"measuring: {label}")
    started = time.monotonic()
    try:
        result = action()
    except (RunfoldError, KafkaException, OSError) as exc:
        echo(f"  {label} failed: {exc}")
        report.add(Measurement.missing(key, stage, label, unit, f"failed: {exc}"))
        return
    for m in result if isinstance(result, list) else [result]:
        report.add(m)
        shown = f"{m.value:,.1f} {m.unit}" if m.value is not None else "n/a"
        echo(f"  {m.label}: {shown}{'' if m.valid else ' (INVALID: ' + m.note + ')'}")
    echo(f"  ({time.monotonic() - started:.1f}s)")


def run_suite(options: SuiteOptions, *, echo: Echo) -> Report:
    """Run the benchmark and return its report (a stage that fails is reported, not raised)."""
    from runfold.kafka.jars import kafka_lib

    began = time.monotonic()
    java: str | None = None
    report = Report(
        ratios=list(RATIOS), goals=list(GOALS),
        options={k: v for k, v in asdict(options).items() if k != "bootstrap"},
        started=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    java = _find_java()
    report.machine = machine_notes(java)
    wanted = set(options.stages)
    prefix = f"bench-{uuid.uuid4().hex[:6]}-"
    workload = runfold_stages.Workload.for_events(options.events)
    echo(f"workload: {workload.runs:,} runs (≈{options.events:,} events), "
         f"{options.partitions} partitions; topics {prefix}*")
    records = workload.records()
    total = len(records)
    size = round(sum(len(v) for _, v in records) / total)
    report.options["records"] = total
    report.options["record_bytes"] = size

    with BenchBroker(options.bootstrap, echo=echo) as broker:
        bootstrap, admin = broker.bootstrap, broker.admin
        report.machine["broker"] = (
            "local KRaft broker started by the bench (1 node, same machine)"
            if broker.started_here else "given with --bootstrap"
        )
        echo("warming up the broker's coordinators")
        warm_up(bootstrap, admin(), f"{prefix}warmup")
        events_topic = create_topic(admin(), f"{prefix}events", options.partitions)
        expected: runfold_stages.FinalState = {}
        timeout = 120 + total / 2_000

        if "anchors" in wanted:
            client_topic = create_topic(admin(), f"{prefix}client", options.partitions)
            _guard(report, echo, "client.produce", ceilings.STAGE,
                   "client ceiling: confluent-kafka produce", "ev/s",
                   lambda: ceilings.client_produce(bootstrap, client_topic, records))
        if wanted & {"producer", "anchors", "fold", "peers"}:
            holder: dict[str, Any] = {}

            def produce() -> Measurement:
                measurement, fleet = runfold_stages.runfold_produce(
                    bootstrap, events_topic, workload)
                holder["expected"] = runfold_stages.expected_state(fleet)
                return measurement

            _guard(report, echo, "runfold.produce", runfold_stages.STAGE,
                   "runfold producer", "ev/s", produce)
            expected = holder.get("expected", {})
            send_topic = create_topic(admin(), f"{prefix}send", options.partitions)
            _guard(report, echo, "runfold.send", runfold_stages.STAGE,
                   "runfold EventProducer.send", "ev/s",
                   lambda: runfold_stages.runfold_send(bootstrap, send_topic, workload))
            record_topic = create_topic(admin(), f"{prefix}record", options.partitions)
            _guard(report, echo, "runfold.record", runfold_stages.STAGE,
                   "runfold RunRecorder.emit", "ev/s",
                   lambda: runfold_stages.runfold_record(bootstrap, record_topic, workload))
            hand_topic = create_topic(admin(), f"{prefix}hand", options.partitions)
            _guard(report, echo, "client.serializing", hand_producer.STAGE,
                   "hand-written: SerializingProducer + AvroSerializer", "ev/s",
                   lambda: hand_producer.hand_produce(bootstrap, hand_topic, workload))
        if "anchors" in wanted:
            _guard(report, echo, "client.consume", ceilings.STAGE,
                   "client ceiling: confluent-kafka consume", "ev/s",
                   lambda: ceilings.client_consume(bootstrap, events_topic, total, timeout))
            if java is None:
                for key, label in (("broker.produce", "ProducerPerformance"),
                                   ("broker.consume", "ConsumerPerformance")):
                    report.add(Measurement.missing(key, ceilings.STAGE, f"broker ceiling: {label}",
                                                   "ev/s", "skipped: no Java 17+ found"))
            else:
                lib = str(kafka_lib(echo=echo))
                perf_topic = create_topic(admin(), f"{prefix}perf", options.partitions)
                _guard(report, echo, "broker.produce", ceilings.STAGE,
                       "broker ceiling: ProducerPerformance", "ev/s",
                       lambda: ceilings.broker_produce(java or "java", lib, bootstrap, perf_topic,
                                                       total, size, timeout))
                _guard(report, echo, "broker.consume", ceilings.STAGE,
                       "broker ceiling: ConsumerPerformance", "ev/s",
                       lambda: ceilings.broker_consume(java or "java", lib, bootstrap,
                                                       perf_topic, total, timeout))
        if "fold" in wanted and expected:
            for guarantee in ("exactly-once", "at-least-once"):
                tag = "eos" if guarantee == "exactly-once" else "alo"
                _guard(report, echo, f"runfold.fold.{tag}", runfold_stages.STAGE,
                       f"runfold fold, {guarantee}", "ev/s",
                       lambda g=guarantee: runfold_stages.fold_service(  # type: ignore[misc]
                           bootstrap, admin(), events_topic, options.partitions, total, g,
                           prefix, expected, timeout=timeout,
                           consume_args=options.consume_args))
        if "peers" in wanted and expected:
            build = options.peers if options.peers is not None else not options.quick
            # faust is ~20x slower than Quix here: only in full runs, within its budget.
            for peer in (STREAMS, QUIX) if options.quick else (STREAMS, QUIX, QUIX_OWN, FAUST):
                _guard(report, echo, peer.key, "peers", peer.label, "ev/s",
                       lambda p=peer: run_peer(  # type: ignore[misc]
                           p, bootstrap, events_topic, options.partitions, total, expected,
                           create_venv=build, timeout=timeout, echo=echo,
                           group=f"{prefix}{p.key}"))
        if "workloads" in wanted:
            _workloads(report, echo, options, bootstrap, admin, prefix)
        if "latency" in wanted:
            _guard(report, echo, "latency.p99", live_stages.STAGE_LATENCY,
                   "end-to-end latency", "ms",
                   lambda: live_stages.measure_latency(
                       bootstrap, admin(), options.partitions, prefix,
                       rate=options.latency_rate, seconds=options.latency_seconds,
                       consume_args=options.consume_args))
            # The anchor row: a JVM start-up and a 30 s load, only in full runs.
            folder = streams_live(create=options.peers is not False, echo=echo)
            if options.quick or isinstance(folder, str):
                reason = folder if isinstance(folder, str) else "skipped: not with --quick"
                for q in ("p50", "p99"):
                    report.add(Measurement.missing(
                        f"latency.streams.{q}", live_stages.STAGE_LATENCY,
                        f"Kafka Streams end-to-end latency {q}", "ms", reason))
            else:
                _guard(report, echo, "latency.streams.p99", live_stages.STAGE_LATENCY,
                       "Kafka Streams end-to-end latency", "ms",
                       lambda: live_stages.measure_latency(
                           bootstrap, admin(), options.partitions, f"{prefix}ks-",
                           rate=options.latency_rate, seconds=options.latency_seconds,
                           folder=folder))
        if "restore" in wanted:
            _guard(report, echo, "restore.seconds", live_stages.STAGE_RESTORE,
                   "restore on assignment", "s",
                   lambda: live_stages.measure_restore(
                       bootstrap, admin(), options.partitions, prefix,
                       runs=options.restore_runs, timeout=120 + options.restore_runs / 2_000))
        if "week" in wanted:
            _guard(report, echo, "week.rss.large", week.STAGE_WEEK,
                   "a week of a fleet", "MiB",
                   lambda: week.measure_week(
                       bootstrap, admin(), options.partitions, prefix, runs=options.week_runs,
                       active=options.week_active, consume_args=options.consume_args))
        if not broker.started_here:
            _delete_prefixed(admin(), prefix)
    _derive_cpu_rates(report)
    report.seconds = time.monotonic() - began
    return report


def _workloads(report: Report, echo: Echo, options: SuiteOptions, bootstrap: str,
               admin: Callable[[], Any], prefix: str) -> None:
    """The streams users have: runfold and the peers on each; RSS per active run."""
    build = options.peers if options.peers is not None else not options.quick
    for variant in workloads.VARIANTS:
        echo(f"building the {variant.label} stream")
        records, expected = variant.build(options.events)
        total = len(records)
        topic = create_topic(admin(), f"{prefix}{variant.name}", options.partitions)
        workloads.load(bootstrap, topic, records)
        size = round(sum(len(v) for _, v in records) / total)
        launcher = (workloads.registry_launcher() if variant.framing == "confluent"
                    else runfold_stages.RUNFOLD)
        timeout = 120 + total / 2_000
        key = f"runfold.fold.eos.{variant.name}"
        # Calls bound now (partial), not late-binding lambdas over the loop's variables.
        _guard(report, echo, key, "workloads", f"runfold fold, {variant.label}", "ev/s",
               partial(runfold_stages.fold_service, bootstrap, admin(), topic,
                       options.partitions, total, "exactly-once", prefix, expected,
                       timeout=timeout, consume_args=options.consume_args,
                       variant=variant.name, variant_label=variant.label, launcher=launcher))
        found = report.by_key().get(key)
        if found is not None:
            found.detail += f"; {variant.detail}, {size:,} B average record"
        faulty = variant.faults.any
        peer_expected = workloads.peer_reference(records) if faulty else expected
        stream = PeerStream(
            key_suffix=f".{variant.name}", label_suffix=f", {variant.label}",
            framing=variant.framing, detail=f"{variant.detail}, {size:,} B average record",
            agreed=("final state = the peer fold run in the bench over the same records "
                    "(its lighter fold differs from runfold's on faults by design)")
            if faulty else "final state = runfold's (status, last_seq, events per run)",
        )
        # Peers on these streams only in full runs: each costs a JVM or Quix start-up.
        for peer in () if options.quick else (STREAMS, QUIX):
            _guard(report, echo, peer.key + stream.key_suffix, "workloads",
                   peer.label + stream.label_suffix, "ev/s",
                   partial(run_peer, peer, bootstrap, topic, options.partitions, total,
                           peer_expected, create_venv=build, timeout=timeout, echo=echo,
                           group=f"{prefix}{peer.key}.{variant.name}", stream=stream))
    _active_runs(report, echo, options, bootstrap, admin, prefix)


def _active_runs(report: Report, echo: Echo, options: SuiteOptions, bootstrap: str,
                 admin: Callable[[], Any], prefix: str) -> None:
    """RSS per active, touched run: the service's growth over a fold of open runs."""
    records, expected = workloads.active_records(options.events)
    topic = create_topic(admin(), f"{prefix}active", options.partitions)
    workloads.load(bootstrap, topic, records)
    runs = len(expected)

    def measure() -> Measurement:
        fold = runfold_stages.fold_service(
            bootstrap, admin(), topic, options.partitions, len(records), "exactly-once",
            prefix, expected, timeout=120 + len(records) / 2_000,
            consume_args=options.consume_args, variant="active", variant_label="open runs")
        before, after = fold.extra.get("rss_start"), fold.extra.get("rss_end")
        per_run = (after - before) / runs if before is not None and after is not None else None
        return Measurement(
            "memory.rss_per_active_run", "memory", "RSS per active, touched run", per_run, "B",
            detail=f"(RSS when all committed - RSS at assignment) / {runs:,} open runs, each "
            f"folded from its first {workloads.ACTIVE_SEQS} events "
            f"({fold.value or 0:,.0f} ev/s); compare: the week's active runs below",
            valid=fold.valid and per_run is not None, note=fold.note,
            extra={"rss_start": before, "rss_end": after, "runs": runs})

    _guard(report, echo, "memory.rss_per_active_run", "memory", "RSS per active, touched run",
           "B", measure)


def _find_java() -> str | None:
    """Java 17+'s path, or ``None`` (the broker-ceiling stage is then skipped)."""
    from runfold.kafka.jars import find_java

    try:
        return find_java()
    except RunfoldError:
        return None


def _delete_prefixed(admin: Any, prefix: str) -> None:
    """Delete this run's topics from a broker we did not start (best effort)."""
    try:
        # Peers' internal topics (Quix changelogs) carry the prefix inside their names.
        names = [t for t in admin.list_topics(timeout=30).topics if prefix in t]
        if names:
            admin.delete_topics(names, operation_timeout=30)
    except KafkaException:
        pass
