"""Helpers of the ``runfold serve`` tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx

from clients import RunfoldSettings
from consumers.service import FoldService, ServiceConfig
from producers import EventProducer, FaultRates, Fleet, FleetConfig, produce_fleet
from serve import ServeHandle

T = TypeVar("T")
QUIET = {"log_level": 2}
ServerFactory = Callable[..., ServeHandle]


def wait_for(check: Callable[[], T | None], timeout: float = 60.0, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what or check}; last {last!r}")


def folding(kafka: RunfoldSettings, group: str | None = None) -> Iterator[FoldService]:
    """Run the folding service on ``kafka``'s topics while the generator is suspended."""
    service = FoldService(ServiceConfig.on_topics(
        dict(kafka.client_config()), kafka.topic_names,
        group=group or f"serve-test-{uuid.uuid4().hex[:8]}", instance_id="t", txn_interval_ms=100,
        consumer_overrides=dict(QUIET), producer_overrides=dict(QUIET),
    ))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as exc:  # re-raised below, in the test's thread
            failure.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield service
    service.stop()
    thread.join(30)
    assert not failure, failure


def load_fleet(kafka: RunfoldSettings, *, runs: int, seed: int = 7, faults: str = "") -> Any:
    """Produce a simulated fleet to the events topic; its manifest."""
    fleet = Fleet(FleetConfig(runs=runs, agents=4, seed=seed, faults=FaultRates.parse(faults)))
    producer = EventProducer(kafka.topic_names.events, settings=kafka, config=dict(QUIET))
    produce_fleet(fleet, producer)
    report = producer.close()
    assert report.ok, report.summary()
    return fleet.manifest()


def view_has(client: httpx.Client, manifest: dict[str, Any]) -> Callable[[], bool]:
    """Whether the view holds every run of ``manifest`` as the fold ends it (status and
    events applied), read through the uncached runs list."""
    expected = {r["run_id"]: (r["run"]["status"], r["applied"]) for r in manifest["runs"]}

    def check() -> bool:
        runs = client.get("/v1/runs", params={"limit": 1000}).json()["runs"]
        return {r["run_id"]: (r["status"], r["events_applied"]) for r in runs} == expected

    return check
