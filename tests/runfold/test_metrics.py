"""Prometheus metrics: scraped over HTTP, the counters equal what the run produced."""

from __future__ import annotations

import json
import re
import urllib.request
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from user_day_fixtures import expected_violations, fold_service, send_fleet, settings_for

from clients.settings import TopicNames
from runfold.metrics import (
    METRIC_NAMES,
    ProducerCollector,
    ServiceCollector,
    serve_metrics,
    start_producer_metrics,
    start_service_metrics,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics`` by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: v for (n, labels), v in samples.items() if n == name}


def test_scraped_counters_equal_what_the_run_produced(
    kafka_bootstrap: str, unique_topics: TopicNames
) -> None:
    settings = settings_for(kafka_bootstrap, unique_topics)
    ports: list[int] = []
    stops = []

    def serve_producer(producer: object) -> None:
        port, stop = start_producer_metrics(producer, 0)
        ports.append(port)
        stops.append(stop)

    manifest, sent = send_fleet(settings, runs=20, on_producer=serve_producer)
    produced = scrape(ports[0])
    assert produced[("runfold_producer_records_produced_total", ())] == sent.records
    deliveries = by_label(produced, "runfold_producer_deliveries_total", "result")
    assert deliveries == {"delivered": sent.records, "failed": 0, "indeterminate": 0}
    assert produced[("runfold_producer_records_pending", ())] == 0

    service = fold_service(settings, consumer_overrides={"statistics.interval.ms": 300})
    port, stop = start_service_metrics(service, 0)
    stops.append(stop)
    stats = service.run()
    try:
        samples = scrape(port)
    finally:
        for stop_server in stops:
            stop_server()

    records = manifest["totals"]["records"]
    assert samples[("runfold_consumer_records_consumed_total", ())] == records == stats.consumed
    outcomes = by_label(samples, "runfold_consumer_outcomes_total", "outcome")
    assert outcomes == {name: getattr(stats, name) for name in outcomes}
    assert outcomes["dlq"] == manifest["totals"]["dlq"] > 0
    assert outcomes["duplicate"] == manifest["totals"]["duplicates"] > 0
    violations = by_label(samples, "runfold_consumer_violations_total", "kind")
    assert {k: v for k, v in violations.items() if v} == expected_violations(manifest)
    assert sum(by_label(samples, "runfold_consumer_dlq_total", "reason").values()) == stats.dlq
    assert samples[("runfold_consumer_transactions_total", ())] == stats.transactions > 0
    # One histogram observation per committed transaction; their records add up.
    commits = samples[("runfold_consumer_transaction_commit_seconds_count", ())]
    assert commits == stats.transactions
    assert samples[("runfold_consumer_transaction_commit_seconds_sum", ())] > 0
    assert samples[("runfold_consumer_transaction_records_sum", ())] == records
    assert samples[("runfold_consumer_restore_seconds_count", ())] >= 1
    lag = by_label(samples, "runfold_consumer_lag_records", "partition")
    assert set(lag) == {"0", "1", "2"}, "librdkafka statistics gave no per-partition lag"
    assert set(lag.values()) == {0}, "the service read everything before it went idle"


@pytest.mark.unit
def test_service_collector_reads_stats_and_keeps_only_committed_violations() -> None:
    from consumers.service.stats import ServiceStats

    class FakeService:
        stats = ServiceStats(consumed=7, applied=5, duplicate=1, dlq=1,
                             dlq_reasons=Counter({"bad-magic": 1}))

    collector = ServiceCollector(FakeService())
    staged: Counter[tuple[int, str]] = Counter()
    collector.stage_violation(0, "gap", staged)  # this transaction aborts (epoch 0) ...
    collector.stage_violation(1, "conflict", staged)  # ... and this one commits
    collector.commit_violations(1, staged)
    collector.on_stats(json.dumps({"topics": {"ev": {"partitions": {
        "0": {"ls_offset": 10, "app_offset": 6, "consumer_lag": -1, "fetch_state": "active"},
        "1": {"consumer_lag": 2, "fetch_state": "active"},
        "-1": {"consumer_lag": -1, "fetch_state": "none"},
    }}}}))
    registry, port, stop = serve_metrics(0, [collector])
    try:
        samples = scrape(port)
    finally:
        stop()
    assert samples[("runfold_consumer_records_consumed_total", ())] == 7
    assert by_label(samples, "runfold_consumer_violations_total", "kind")["conflict"] == 1
    assert by_label(samples, "runfold_consumer_violations_total", "kind")["gap"] == 0
    assert by_label(samples, "runfold_consumer_dlq_total", "reason") == {"bad-magic": 1}
    assert by_label(samples, "runfold_consumer_lag_records", "partition") == {"0": 4, "1": 2}
    assert not staged


@pytest.mark.unit
def test_every_documented_metric_is_exported() -> None:
    from consumers.service import FoldService, ServiceConfig
    from producers.kafka import DeliveryReport

    registry = CollectorRegistry()
    from runfold.metrics import instrument_service

    instrument_service(FoldService(ServiceConfig(kafka={})), registry)
    registry.register(ProducerCollector(lambda: DeliveryReport(produced=3, delivered=3)))
    families = {metric.name for metric in registry.collect()}
    # prometheus_client strips _total from counter family names.
    assert {name.removesuffix("_total") for name in METRIC_NAMES} <= families


@pytest.mark.unit
def test_grafana_dashboard_plots_only_exported_metrics_and_all_of_them() -> None:
    from pathlib import Path

    dashboard = json.loads(
        (Path(__file__).parents[2] / "dashboards" / "grafana-runfold.json").read_text()
    )
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for expr in exprs for m in re.findall(r"runfold_[a-z_]+", expr)}
    families = {re.sub(r"_(bucket|sum|count)$", "", m) for m in used}
    assert families == set(METRIC_NAMES)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
