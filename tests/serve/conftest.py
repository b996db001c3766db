"""Fixtures for ``runfold serve``: a folding service on unique topics, a server over them.

Everything is real: the session's broker, the folding service (in a thread, as the demo
runs it), the server under uvicorn on a free port, HTTP through httpx.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from consumers import FoldService, ServiceConfig
from producers import EventProducer, Fleet, FleetConfig, produce_fleet
from runfold.settings import RunfoldSettings, TopicNames
from serve import ServeHandle, ServeSettings, start_in_thread

T = TypeVar("T")
_QUIET = {"log_level": 2}


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


@pytest.fixture
def kafka(kafka_bootstrap: str, unique_topics: TopicNames) -> RunfoldSettings:
    """Settings on the session's broker whose topic names are the test's unique ones."""
    prefix = unique_topics.events[: -len(TopicNames().events)]
    return RunfoldSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)


@pytest.fixture(scope="module")
def module_kafka(kafka_bootstrap: str, kafka_admin: Any) -> Iterator[RunfoldSettings]:
    """Like ``kafka``, for a whole test module (topics created once, deleted after)."""
    from runfold.topics import ensure_topics

    prefix = f"test-serve-{uuid.uuid4().hex[:8]}-"
    names = TopicNames().prefixed(prefix)
    report = ensure_topics(kafka_admin, names, partitions=3, replication=1)
    assert report.ok, report.mismatches
    yield RunfoldSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=prefix)
    kafka_admin.delete_topics(names.all(), operation_timeout=10)


@pytest.fixture
def fold(kafka: RunfoldSettings) -> Iterator[FoldService]:
    """The folding service on the test's topics, in a thread, stopped after the test."""
    yield from folding(kafka)


def folding(kafka: RunfoldSettings) -> Iterator[FoldService]:
    """Run the folding service on ``kafka``'s topics while the generator is suspended."""
    service = FoldService(ServiceConfig.on_topics(
        dict(kafka.client_config()), kafka.topic_names,
        group=f"serve-test-{uuid.uuid4().hex[:8]}", instance_id="t", txn_interval_ms=100,
        consumer_overrides=dict(_QUIET), producer_overrides=dict(_QUIET),
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


@pytest.fixture(scope="module")
def module_server(
    module_kafka: RunfoldSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeHandle]:
    """One server (auth off) over the module's topics, with the fold running behind it."""
    fold = folding(module_kafka)
    next(fold)
    handle = start_in_thread(
        ServeSettings(data_dir=tmp_path_factory.mktemp("serve"), port=0), module_kafka, port=0
    )
    yield handle
    handle.stop()
    next(fold, None)


@pytest.fixture(scope="module")
def module_client(module_server: ServeHandle) -> Iterator[httpx.Client]:
    """An HTTP client on ``module_server``."""
    with httpx.Client(base_url=module_server.url, timeout=30) as http:
        yield http


ServerFactory = Callable[..., ServeHandle]


@pytest.fixture
def serve_factory(kafka: RunfoldSettings, tmp_path: Path) -> Iterator[ServerFactory]:
    """``start(**settings) -> handle``: a server on a free port, its view under tmp_path."""
    handles: list[ServeHandle] = []

    def start(**overrides: Any) -> ServeHandle:
        options: dict[str, Any] = {"data_dir": tmp_path / "serve", "port": 0, **overrides}
        handle = start_in_thread(ServeSettings(**options), kafka, port=0)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()


@pytest.fixture
def server(serve_factory: ServerFactory) -> ServeHandle:
    """One server with auth off (loopback)."""
    return serve_factory()


@pytest.fixture
def client(server: ServeHandle) -> Iterator[httpx.Client]:
    """An HTTP client on ``server``."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def load_fleet(kafka: RunfoldSettings, *, runs: int, seed: int = 7, faults: str = "") -> Any:
    """Produce a simulated fleet to the events topic; its manifest."""
    from producers import FaultRates

    fleet = Fleet(FleetConfig(runs=runs, agents=4, seed=seed, faults=FaultRates.parse(faults)))
    producer = EventProducer(kafka.topic_names.events, settings=kafka, config=dict(_QUIET))
    produce_fleet(fleet, producer)
    report = producer.close()
    assert report.ok, report.summary()
    return fleet.manifest()


def view_has(client: httpx.Client, runs: int) -> Callable[[], bool]:
    """Whether the view lists ``runs`` runs, all folded to their end."""
    def check() -> bool:
        fleet = client.get("/v1/fleet").json()
        return bool(fleet["runs"] == runs and fleet["view"]["caught_up"])
    return check
