"""Prometheus metrics of the folding service and the producer (``--metrics-port``).

Counters are not kept twice: a collector reads the service's own
:class:`~consumers.service.stats.ServiceStats` (and the producer's
:class:`~producers.kafka.DeliveryReport`) at scrape time, so a scrape shows exactly
what ``runfold consume --stats-json`` would print. Like those stats, the consumer's
counters move only when a transaction commits.

What the stats do not hold is measured around the service, without changing it:

- transaction commit latency and records per committed transaction: the instance's
  commit step is wrapped (:func:`instrument_service`), and the records a commit
  accounted are the growth of ``stats.consumed`` across it;
- restore time: the instance's restore step is wrapped the same way;
- violations by kind: the ``encode_violation`` of the service's
  :class:`~consumers.service.edge.FoldEdge` is wrapped to count; counts of an aborted
  transaction are discarded;
- events pending in the reorder buffers and the age of the oldest, per partition: read
  from the service's partition store right after each commit (on the service's thread;
  a scrape reads that snapshot), :meth:`~consumers.service.owned.OwnedRuns.pending`;
- consumer lag per partition: from librdkafka's statistics (last stable offset minus
  the next offset the fold will get), requested through the service's
  ``consumer_overrides``. The group's *committed* lag is what ``runfold top`` shows.

Metric names (all prefixed ``runfold_``) are listed in :data:`METRIC_NAMES`; the
Grafana dashboard ``dashboards/grafana-runfold.json`` plots them.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas import ViolationKind

__all__ = [
    "METRIC_NAMES",
    "ProducerCollector",
    "ServiceCollector",
    "instrument_service",
    "serve_metrics",
    "start_producer_metrics",
    "start_service_metrics",
]

METRIC_NAMES = (
    "runfold_consumer_records_consumed_total",
    "runfold_consumer_outcomes_total",
    "runfold_consumer_violations_total",
    "runfold_consumer_dlq_total",
    "runfold_consumer_runs_written_total",
    "runfold_consumer_transactions_total",
    "runfold_consumer_aborts_total",
    "runfold_consumer_rebalances_total",
    "runfold_consumer_restores_total",
    "runfold_consumer_recoveries_total",
    "runfold_consumer_restored_runs_total",
    "runfold_consumer_transaction_commit_seconds",
    "runfold_consumer_transaction_records",
    "runfold_consumer_restore_seconds",
    "runfold_consumer_lag_records",
    "runfold_consumer_active_runs",
    "runfold_consumer_markers",
    "runfold_consumer_buffered_events",
    "runfold_consumer_state_bytes",
    "runfold_consumer_lifecycle_total",
    "runfold_consumer_stalled_flagged_total",
    "runfold_consumer_runs_stalled",
    "runfold_consumer_pending_events",
    "runfold_consumer_pending_oldest_age_seconds",
    "runfold_producer_records_produced_total",
    "runfold_producer_deliveries_total",
    "runfold_producer_records_pending",
)
"""Every metric runfold exports (histograms and counters by their family name)."""

_OUTCOMES = ("applied", "duplicate", "violation", "buffered", "dlq", "replayed", "released")
_LAG_INTERVAL_MS = 5000


class ServiceCollector(Collector):
    """Reads a :class:`~consumers.service.FoldService`'s stats, violation counts and lag."""

    def __init__(self, service: Any) -> None:
        self._service = service
        self._lock = threading.Lock()
        self.violations: Counter[str] = Counter()
        """Violations by kind, of committed transactions."""
        self.lag: dict[tuple[str, int], int] = {}
        """(topic, partition) -> records behind, from librdkafka's last statistics."""
        self.pending: dict[int, tuple[int, int]] = {}
        """partition -> (events in its reorder buffers, age of the oldest in event time,
        ns), as of the last commit (:meth:`note_pending`)."""

    def collect(self) -> Iterator[Metric]:
        """Called by the registry at each scrape."""
        stats = self._service.stats
        yield _counter("consumer_records_consumed", "Records consumed and committed.",
                       stats.consumed)
        outcomes = CounterMetricFamily(
            "runfold_consumer_outcomes", "Consumed records by outcome (DESIGN.md §5): "
            "consumed = applied + duplicate + violation + (buffered - released) + dlq + replayed; "
            "a buffered event resolved later counts in 'released' and in 'applied' or "
            "'violation'.", labels=["outcome"])
        for name in _OUTCOMES:
            outcomes.add_metric([name], getattr(stats, name))
        yield outcomes
        with self._lock:
            violations = dict(self.violations)
            lag = dict(self.lag)
            pending = dict(self.pending)
        by_kind = CounterMetricFamily(
            "runfold_consumer_violations", "Violations emitted, by kind.", labels=["kind"])
        for kind in ViolationKind:
            by_kind.add_metric([kind.value], violations.get(kind.value, 0))
        yield by_kind
        dlq = CounterMetricFamily(
            "runfold_consumer_dlq", "Records sent to the dead-letter topic, by reason.",
            labels=["reason"])
        for reason, count in sorted(stats.dlq_reasons.items()):
            dlq.add_metric([reason], count)
        yield dlq
        for name, attr, text in (
            ("consumer_runs_written", "runs_written", "Run states written to agent-runs."),
            ("consumer_transactions", "transactions", "Committed transactions (or batches)."),
            ("consumer_aborts", "aborts", "Aborted transactions."),
            ("consumer_rebalances", "rebalances", "Partition assignments received."),
            ("consumer_restores", "restores", "State restores from agent-runs."),
            ("consumer_recoveries", "recoveries", "Client rebuilds after a broker failover "
             "or a fatal error that was not fencing (the service went on)."),
            ("consumer_restored_runs", "restored_runs", "Runs restored from agent-runs."),
            ("consumer_stalled_flagged", "stalled_flagged", "Runs flagged stalled: RUNNING "
             "with no event for --stall-after (wall clock)."),
        ):
            yield _counter(name, text, getattr(stats, attr))
        yield from _store_metrics(self._service)
        watch = getattr(self._service, "_stalls", None)
        yield GaugeMetricFamily(
            "runfold_consumer_runs_stalled", "Runs of the owned partitions flagged stalled and "
            "still RUNNING with no event since (a restored one counts from its first check, "
            "--stall-after after the restore).", value=getattr(watch, "stalled", 0))
        gauge = GaugeMetricFamily(
            "runfold_consumer_lag_records", "Records of the input partition this instance has "
            "not read yet (last stable offset - next offset).", labels=["topic", "partition"])
        for (topic, partition), value in sorted(lag.items()):
            gauge.add_metric([topic, str(partition)], value)
        yield gauge
        events = GaugeMetricFamily(
            "runfold_consumer_pending_events", "Events held in the reorder buffers of the "
            "partition's runs, waiting for a missing seq (pending = buffered - released), as "
            "of the last commit.", labels=["partition"])
        age = GaugeMetricFamily(
            "runfold_consumer_pending_oldest_age_seconds", "Event time of the partition "
            "(its newest event timestamp) minus the timestamp of its oldest pending event; "
            "0 when none. The reorder bound declares a gap past max_delay.",
            labels=["partition"])
        for partition, (count, age_ns) in sorted(pending.items()):
            events.add_metric([str(partition)], count)
            age.add_metric([str(partition)], age_ns / 1e9)
        yield events
        yield age

    def note_pending(self, store: Any) -> None:
        """Take the pending snapshot of ``store`` (a PartitionStore); call it on the
        service's thread, right after a commit, when every buffer has been held to its
        bound and every changed run observed."""
        pending = store.pending()
        with self._lock:
            self.pending = pending

    def stage_violation(self, epoch: int, kind: str, staged: Counter[tuple[int, str]]) -> None:
        """Count a violation produced in the open transaction (``epoch`` = aborts so far)."""
        staged[(epoch, kind)] += 1

    def commit_violations(self, epoch: int, staged: Counter[tuple[int, str]]) -> None:
        """Keep the staged counts of the transaction that just committed, drop the rest."""
        with self._lock:
            for (when, kind), count in staged.items():
                if when == epoch:
                    self.violations[kind] += count
        staged.clear()

    def on_stats(self, payload: str) -> None:
        """librdkafka ``stats_cb``: keep each assigned partition's ``consumer_lag``."""
        try:
            data = json.loads(payload)
        except ValueError:
            return
        lag: dict[tuple[str, int], int] = {}
        for topic, info in (data.get("topics") or {}).items():
            for key, part in (info.get("partitions") or {}).items():
                partition = int(key)
                if partition < 0 or part.get("fetch_state") == "none":
                    continue
                # librdkafka's consumer_lag needs offsets committed through the consumer;
                # the service commits them in its transactions, so that stays -1. The
                # distance from the last stable offset to the next record handed to the
                # fold is what this instance still has to read.
                end, position = part.get("ls_offset", -1), part.get("app_offset", -1)
                if end >= 0 and position >= 0:
                    lag[(topic, partition)] = max(0, end - position)
                elif part.get("consumer_lag", -1) >= 0:
                    lag[(topic, partition)] = part["consumer_lag"]
        with self._lock:
            self.lag = lag


_LIFECYCLE = (
    "markers_made", "markers_forgotten", "markers_shed", "marker_events",
    "forgotten_run_events", "runs_paged_out", "forced_flushes",
)


def _store_metrics(service: Any) -> Iterator[Metric]:
    """The state store's gauges as of the last commit (``service.gauges``, replaced whole
    there, so one consistent set) and the lifecycle's counters (docs/operations.md, "Run
    lifecycle and bounds")."""
    gauges: dict[str, int] = getattr(service, "gauges", {})
    runs = GaugeMetricFamily(
        "runfold_consumer_active_runs", "Runs not finished (or finished within the grace) "
        "held for the owned partitions: decoded, or paged out to packed bytes "
        "(--max-active-runs bounds the decoded ones).", labels=["held"])
    runs.add_metric(["decoded"], gauges.get("decoded_runs", 0))
    runs.add_metric(["packed"], gauges.get("active_runs", 0) - gauges.get("decoded_runs", 0))
    yield runs
    yield GaugeMetricFamily(
        "runfold_consumer_markers", "Finished runs held as markers (--max-markers).",
        value=gauges.get("markers", 0))
    yield GaugeMetricFamily(
        "runfold_consumer_buffered_events", "Events in the watched reorder buffers "
        "(--max-buffered-events).", value=gauges.get("buffered_events", 0))
    size = GaugeMetricFamily(
        "runfold_consumer_state_bytes", "Bytes of the packed run states and of the marker "
        "tables (decoded runs are counted in runfold_consumer_active_runs).", labels=["part"])
    size.add_metric(["packed_runs"], gauges.get("stored_bytes", 0))
    size.add_metric(["markers"], gauges.get("marker_bytes", 0))
    yield size
    lifecycle = CounterMetricFamily(
        "runfold_consumer_lifecycle", "What the run lifecycle and the bounds did: finished "
        "runs made markers, markers forgotten or shed, events judged by a marker or "
        "forgotten, runs paged out, buffers flushed.", labels=["event"])
    stats = service.stats
    for name in _LIFECYCLE:
        lifecycle.add_metric([name], getattr(stats, name, 0))
    yield lifecycle


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"runfold_{name}", documentation, value=value)


def instrument_service(service: Any, registry: CollectorRegistry) -> ServiceCollector:
    """Register the metrics of ``service`` (a FoldService not yet running) in ``registry``."""
    collector = ServiceCollector(service)
    registry.register(collector)
    commit_seconds = Histogram(
        "runfold_consumer_transaction_commit_seconds",
        "Time to produce the changed runs and commit them with the offsets.",
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    )
    batch_records = Histogram(
        "runfold_consumer_transaction_records",
        "Consumed records per committed transaction.",
        registry=registry,
        buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000),
    )
    restore_seconds = Histogram(
        "runfold_consumer_restore_seconds",
        "Time to restore the assigned partitions' runs from agent-runs.",
        registry=registry,
        buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    )
    staged: Counter[tuple[int, str]] = Counter()
    commit: Callable[[], None] = service._commit
    restore: Callable[[list[int]], None] = service._restore
    encode_violation: Callable[[Any], bytes] = service.edge.encode_violation

    def timed_commit() -> None:
        before = service.stats.consumed
        started = time.perf_counter()
        commit()
        commit_seconds.observe(time.perf_counter() - started)
        collector.note_pending(service._store)
        batch_records.observe(service.stats.consumed - before)
        collector.commit_violations(service.stats.aborts, staged)

    def timed_restore(partitions: list[int]) -> None:
        started = time.perf_counter()
        restore(partitions)
        if partitions:
            restore_seconds.observe(time.perf_counter() - started)

    def counting_encode(violation: Any) -> bytes:
        collector.stage_violation(service.stats.aborts, violation.kind.value, staged)
        return encode_violation(violation)

    # Instance attributes shadow the methods; the service calls them through self.
    setattr(service, "_commit", timed_commit)  # noqa: B010
    setattr(service, "_restore", timed_restore)  # noqa: B010
    service.edge.encode_violation = counting_encode
    previous_cb = service.config.consumer_overrides.get("stats_cb")

    def stats_cb(payload: str) -> None:
        collector.on_stats(payload)
        if callable(previous_cb):
            previous_cb(payload)

    service.config.consumer_overrides.setdefault("statistics.interval.ms", _LAG_INTERVAL_MS)
    service.config.consumer_overrides["stats_cb"] = stats_cb
    return collector


class ProducerCollector(Collector):
    """Reads a producer's :class:`~producers.kafka.DeliveryReport` at scrape time."""

    def __init__(self, report: Callable[[], Any]) -> None:
        """``report`` returns the current report, e.g. ``lambda: producer.report``."""
        self._report = report

    def collect(self) -> Iterator[Metric]:
        """Called by the registry at each scrape."""
        report = self._report()
        yield _counter("producer_records_produced", "Records handed to the producer.",
                       report.produced)
        deliveries = CounterMetricFamily(
            "runfold_producer_deliveries", "Delivery reports by result; indeterminate = timed "
            "out, may have been written.", labels=["result"])
        for result in ("delivered", "failed", "indeterminate"):
            deliveries.add_metric([result], getattr(report, result))
        yield deliveries
        yield GaugeMetricFamily("runfold_producer_records_pending",
                                "Records without a delivery report yet.", value=report.pending)


def serve_metrics(
    port: int, collectors: Iterable[Collector] = (), *, registry: CollectorRegistry | None = None,
    addr: str = "0.0.0.0",
) -> tuple[CollectorRegistry, int, Callable[[], None]]:
    """Serve ``/metrics`` on ``port`` (0: any free port) from a background thread.

    Returns the registry, the port actually bound and a function that stops the server.
    """
    registry = registry if registry is not None else CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    server, thread = start_http_server(port, addr=addr, registry=registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return registry, int(server.server_port), stop


def start_service_metrics(service: Any, port: int) -> tuple[int, Callable[[], None]]:
    """Instrument ``service`` and serve its metrics on ``port``; returns (port, stop)."""
    registry = CollectorRegistry()
    instrument_service(service, registry)
    _, bound, stop = serve_metrics(port, registry=registry)
    return bound, stop


def start_producer_metrics(producer: Any, port: int) -> tuple[int, Callable[[], None]]:
    """Serve the delivery counts of ``producer`` (an EventProducer) on ``port``."""
    _, bound, stop = serve_metrics(port, [ProducerCollector(lambda: producer.report)])
    return bound, stop
