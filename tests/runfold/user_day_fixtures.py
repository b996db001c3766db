"""Helpers for the demo/top/metrics/export tests: send a small fleet, fold it in-process.

Everything runs against the session's real broker; the folding service is the real
:class:`~consumers.service.FoldService` in a thread of the test process.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from clients.settings import RunfoldSettings, TopicNames
from consumers.service import FoldService, ServiceConfig
from consumers.service.stats import ServiceStats
from producers import EventProducer, FaultRates, Fleet, FleetConfig, produce_fleet

EVERY_FAULT = "gap=0.15,dup=0.15,conflict=0.15,after_end=0.15,corrupt=0.15,reorder=0.15"


def prefix_of(topics: TopicNames) -> str:
    """The topic prefix that turns the default names into ``topics``."""
    return topics.events[: -len(TopicNames().events)]


def settings_for(bootstrap: str, topics: TopicNames) -> RunfoldSettings:
    """Settings naming the session broker and the test's topics."""
    return RunfoldSettings(bootstrap_servers=bootstrap, topic_prefix=prefix_of(topics))


def send_fleet(
    settings: RunfoldSettings, *, runs: int = 20, seed: int = 3, faults: str = EVERY_FAULT,
    on_producer: Callable[[EventProducer], None] | None = None,
) -> tuple[dict[str, Any], Any]:
    """Produce a fleet to the events topic; returns ``(manifest, FleetResult)``."""
    fleet = Fleet(FleetConfig(runs=runs, agents=4, seed=seed, faults=FaultRates.parse(faults)))
    producer = EventProducer(settings.topic_names.events, settings=settings)
    if on_producer is not None:
        on_producer(producer)
    result = produce_fleet(fleet, producer)
    assert result.report.ok, result.report.summary()
    return fleet.manifest(), result


def fold_service(settings: RunfoldSettings, group: str | None = None,
                 **overrides: Any) -> FoldService:
    """A folding service on the test's topics that stops after 2 s without records."""
    config = ServiceConfig.on_topics(
        dict(settings.client_config()),
        settings.topic_names,
        group=group or f"test-{uuid.uuid4().hex[:8]}",
        until_idle=2.0,
        txn_interval_ms=200,
        **overrides,
    )
    return FoldService(config)


def fold(settings: RunfoldSettings, group: str | None = None) -> ServiceStats:
    """Fold everything in the events topic (until idle) and return the counters."""
    return fold_service(settings, group).run()


def expected_violations(manifest: dict[str, Any]) -> dict[str, int]:
    """Violations by kind, counted from the manifest's per-run lists."""
    counts: dict[str, int] = {}
    for run in manifest["runs"]:
        for violation in run["violations"]:
            counts[violation["kind"]] = counts.get(violation["kind"], 0) + 1
    return counts


def expected_statuses(manifest: dict[str, Any]) -> dict[str, int]:
    """Runs by final status, counted from the manifest's per-run ``run`` documents."""
    counts = dict.fromkeys(("RUNNING", "COMPLETED", "FAILED", "CANCELLED"), 0)
    for run in manifest["runs"]:
        counts[run["run"]["status"]] += 1
    return counts
