"""Shared fixtures: one real Kafka broker per test session, and uniquely named topics.

Where the broker comes from, first match wins:

1. ``KAFKA_BOOTSTRAP_SERVERS`` is set: that cluster (nothing is started or stopped).
2. A Docker daemon answers: testcontainers' Kafka (KRaft), stopped at the end.
3. Otherwise: runfold's local JVM broker (``LocalKafka``) in a temporary home with free
   ports, stopped at the end of the session, also when tests fail or are interrupted
   (and, via PR_SET_PDEATHSIG, when pytest itself is killed).

A test that uses ``kafka_bootstrap`` (directly or through another fixture) is marked
``integration`` automatically; pure tests mark themselves ``unit``.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from clients.settings import RunfoldSettings, TopicNames
from runfold.topics import ensure_topics

log = logging.getLogger(__name__)

TopicFactory = Callable[..., str]
TopicRecords = list[tuple[int, bytes, bytes]]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs the broker ``integration`` (so ``-m unit`` needs no Kafka)."""
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "integration"
        ):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker for the whole session."""
    explicit = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if explicit:
        yield explicit
        return

    from runfold.kafka.compose import docker_available

    if docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield _warmed_up(container.get_bootstrap_server())
        return

    from runfold.kafka.local import LocalKafka

    # Not under pytest's basetemp: concurrent pytest runs prune each other's old basetemps.
    home = Path(tempfile.mkdtemp(prefix="runfold-test-kafka-"))
    local = LocalKafka(home)
    # Registered before starting: if start-up itself is interrupted, nothing is left behind.
    atexit.register(local.down, timeout=10.0)
    try:
        # Patient: CI machines are small and shared; a healthy start takes 5-15 s.
        yield _warmed_up(local.up(nodes=1, port=0, tie_to_parent=True, ready_timeout=300.0))
    finally:
        local.down(timeout=10.0)
        shutil.rmtree(home, ignore_errors=True)


def _warmed_up(bootstrap: str) -> str:
    """Create and load the group and transaction coordinators once, before any test.

    A fresh broker creates ``__consumer_offsets`` and ``__transaction_state`` on first use and
    answers "coordinator load in progress" while loading them; on a loaded machine that first
    use can take many seconds, which would land on whichever test happens to run first.
    """
    warm = f"runfold-warm-up-{uuid.uuid4().hex[:8]}"
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": warm})
    producer.init_transactions(120)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": warm})
    deadline = time.monotonic() + 180
    try:
        while True:
            try:
                consumer.committed([TopicPartition(warm, 0)], timeout=30)
                break
            except KafkaException as exc:
                # NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS while __consumer_offsets is
                # created and loaded: exactly what this warm-up waits out.
                if time.monotonic() > deadline:
                    raise
                log.info("group coordinator not ready yet (%s); retrying", exc.args[0])
                time.sleep(0.5)
    finally:
        consumer.close()
    return bootstrap


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    """An ``AdminClient`` on the session's broker."""
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture(scope="session")
def kafka_settings(kafka_bootstrap: str) -> RunfoldSettings:
    """``RunfoldSettings`` pointing at the session's broker (default topic names)."""
    return RunfoldSettings(bootstrap_servers=kafka_bootstrap)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:60].strip("-") or "test"


@pytest.fixture
def topic_factory(
    kafka_admin: AdminClient, request: pytest.FixtureRequest
) -> Iterator[TopicFactory]:
    """``make(partitions=1, *, config=None, replication=1) -> name`` creating a unique topic.

    Names are ``test-<test name>-<random>``; the topics are deleted after the test.
    """
    created: list[str] = []

    def make(
        partitions: int = 1, *, config: Mapping[str, str] | None = None, replication: int = 1
    ) -> str:
        name = f"test-{_slug(request.node.name)}-{uuid.uuid4().hex[:8]}"
        new = NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication,
            config=dict(config or {}),
        )
        kafka_admin.create_topics([new], operation_timeout=30)[name].result(timeout=30)
        created.append(name)
        return name

    yield make
    if created:  # best effort: a temporary broker is thrown away anyway
        kafka_admin.delete_topics(created, operation_timeout=10)


@pytest.fixture
def read_topic(kafka_bootstrap: str) -> Callable[..., TopicRecords]:
    """``read(topic, expected, timeout=60.0)``: every record as (partition, key, value).

    Polls from offset 0 of every partition until ``expected`` records arrived (or the
    deadline), then once more for a second: a record beyond ``expected`` would be a
    duplicate write, and the caller's count check sees it.
    """

    def read(topic: str, expected: int, timeout: float = 60.0) -> TopicRecords:
        consumer = Consumer({"bootstrap.servers": kafka_bootstrap,
                             "group.id": f"read-{uuid.uuid4()}", "enable.auto.commit": False})
        try:
            partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            records: TopicRecords = []
            deadline = time.monotonic() + timeout
            while len(records) < expected and time.monotonic() < deadline:
                for msg in consumer.consume(1000, timeout=0.5):
                    assert msg.error() is None, msg.error()
                    records.append((msg.partition(), msg.key(), msg.value()))
            for msg in consumer.consume(1000, timeout=1.0):
                records.append((msg.partition(), msg.key(), msg.value()))
            return records
        finally:
            consumer.close()

    return read


@pytest.fixture
def unique_topics(kafka_admin: AdminClient) -> Iterator[TopicNames]:
    """The four DESIGN §3 topics under a unique prefix, created (3 partitions, RF 1)."""
    names = TopicNames().prefixed(f"test-{uuid.uuid4().hex[:8]}-")
    report = ensure_topics(kafka_admin, names, partitions=3, replication=1)
    assert report.ok, report.mismatches
    yield names
    kafka_admin.delete_topics(names.all(), operation_timeout=10)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say up front which Kafka the integration tests will use."""
    source = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    return [
        f"kafka: {source}" if source else "kafka: testcontainers if Docker answers, else local JVM"
    ]
