"""Fixtures for ``runfold serve``: a folding service on unique topics, a server over them.

Everything is real: the session's broker, the folding service (in a thread, as the demo
runs it), the server under uvicorn on a free port, HTTP through httpx. Helpers that tests
import are in serve_fixtures.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_fixtures import ServerFactory, folding

from clients import RunfoldSettings, TopicNames
from consumers.service import FoldService
from serve import ServeHandle, ServeSettings, start_in_thread


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


@pytest.fixture(scope="module")
def module_server(
    module_kafka: RunfoldSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeHandle]:
    """One server (auth off) over the module's topics, with the fold running behind it."""
    group = f"serve-test-{uuid.uuid4().hex[:8]}"
    fold = folding(module_kafka, group)
    next(fold)
    settings = ServeSettings(data_dir=tmp_path_factory.mktemp("serve"), port=0, fold_group=group)
    handle = start_in_thread(settings, module_kafka, port=0)
    yield handle
    handle.stop()
    next(fold, None)


@pytest.fixture(scope="module")
def module_client(module_server: ServeHandle) -> Iterator[httpx.Client]:
    """An HTTP client on ``module_server``."""
    with httpx.Client(base_url=module_server.url, timeout=30) as http:
        yield http


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
