"""In-process recovery: a fatal producer error that is not fencing no longer stops the
service; it rebuilds its producer (same ``transactional.id``), restores, rewinds and goes
on, and the output is still exact (real broker, real clients)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from service_fixtures import load_fleet, mismatches, read_output, total_records

from clients.settings import TopicNames
from consumers.service import FoldService, ServiceConfig, ServiceStopped

pytestmark = pytest.mark.integration

# What scenario 2 of docs/reliability.md (partition leader kill -9) ended with before the
# service recovered in process: the abort after a failover failed with this fatal error,
# and `runfold consume` exited 1.
_FAILOVER_ERROR = KafkaError(
    KafkaError.INVALID_TXN_STATE,
    "Failed to end transaction: Broker: Producer attempted a transactional operation in an "
    "invalid state",
    fatal=True,
)


class _FailingOverProducer(Producer):
    """A real producer whose ``fail_at``-th commit meets the failover's fatal error.

    From then on it is dead like a producer in a fatal state: every transactional call
    raises the same error, so its open transaction (states, violations, DLQ records
    already produced to the broker) can only be settled by the next producer's
    ``init_transactions``.
    """

    instances: list[_FailingOverProducer] = []
    fail_at = 3
    only_first = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commits = 0
        self.dead = False
        self.failing = not self.only_first or not self.instances
        self.instances.append(self)

    def _check(self) -> None:
        if self.dead:
            raise KafkaException(_FAILOVER_ERROR)

    def begin_transaction(self, *args: Any) -> None:
        self._check()
        super().begin_transaction(*args)

    def send_offsets_to_transaction(self, *args: Any) -> None:
        self._check()
        super().send_offsets_to_transaction(*args)

    def abort_transaction(self, *args: Any) -> None:
        self._check()
        super().abort_transaction(*args)

    def commit_transaction(self, *args: Any) -> None:
        self._check()
        self.commits += 1
        if self.failing and self.commits == self.fail_at:
            self.dead = True
            self._check()
        super().commit_transaction(*args)


def _fold_config(bootstrap: str, topics: TopicNames, **options: Any) -> ServiceConfig:
    """A service config in a group of its own; ``options`` override the defaults."""
    defaults: dict[str, Any] = {"until_idle": 8, "batch_size": 200}
    return ServiceConfig.on_topics(
        {"bootstrap.servers": bootstrap},
        topics,
        group=f"recover-{uuid.uuid4().hex[:8]}",
        **{**defaults, **options},
    )


@pytest.fixture
def failing_over(monkeypatch: pytest.MonkeyPatch) -> type[_FailingOverProducer]:
    monkeypatch.setattr(_FailingOverProducer, "instances", [])
    monkeypatch.setattr("consumers.service.recovery.Producer", _FailingOverProducer)
    return _FailingOverProducer


def test_fatal_producer_error_rebuilds_in_process_and_folds_exactly_once(
    kafka_bootstrap: str,
    unique_topics: TopicNames,
    failing_over: type[_FailingOverProducer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    manifest = load_fleet(kafka_bootstrap, unique_topics, runs=200, seed=81)
    # Several transactions: the third one fails with work in it.
    config = _fold_config(kafka_bootstrap, unique_topics, until_idle=2, batch_size=300)
    service = FoldService(config)

    with caplog.at_level(logging.WARNING, logger="runfold.consume"):
        stats = service.run()  # raises ServiceStopped if the service gave up

    assert [p.dead for p in failing_over.instances] == [True, False]
    assert stats.recoveries == 1
    assert any("recovering from commit_transaction" in r.message for r in caplog.records)
    assert any(r.message.startswith("recovered") for r in caplog.records)
    # Exactly once: the dropped transaction's records and offsets never committed, its
    # counts were dropped, the refold counted each record once.
    assert stats.consumed == total_records(manifest)
    assert stats.balanced()
    assert mismatches(read_output(kafka_bootstrap, unique_topics), manifest) == []


def test_recovery_is_bounded(
    kafka_bootstrap: str,
    unique_topics: TopicNames,
    failing_over: type[_FailingOverProducer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    load_fleet(kafka_bootstrap, unique_topics, runs=20, seed=82)
    # Every producer fails at its first commit: nothing ever commits, so the rebuilds
    # are "in a row" and the service stops after max_recoveries of them (exit 1).
    monkeypatch.setattr(_FailingOverProducer, "fail_at", 1)
    monkeypatch.setattr(_FailingOverProducer, "only_first", False)
    config = _fold_config(
        kafka_bootstrap, unique_topics, until_idle=30, max_recoveries=2, recovery_backoff_max_s=0.2
    )
    service = FoldService(config)

    with pytest.raises(ServiceStopped, match="giving up after 2 client rebuilds") as info:
        service.run()

    assert not info.value.fenced
    assert service.stats.recoveries == 2
    assert service.stats.transactions == 0
    assert len(failing_over.instances) == 3


def _run_in_thread(service: FoldService) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["stats"] = service.run()
        except BaseException as exc:  # handed to the test thread, which asserts on it
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def _wait(check: Any, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _join_as(bootstrap: str, config: ServiceConfig) -> Consumer:
    """A consumer that joins the group with the service's own ``group.instance.id``: the
    group fences the service's consumer, exactly as when librdkafka's rejoin after a
    coordinator failover races its old membership."""
    impostor = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": config.group,
            "group.instance.id": f"{config.group}-{config.instance_id}",
            "enable.auto.commit": False,
            "session.timeout.ms": config.session_timeout_ms,
        }
    )
    impostor.subscribe([config.events_topic])
    return impostor


def test_group_fence_without_a_newer_producer_is_recovered(
    kafka_bootstrap: str, unique_topics: TopicNames, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="runfold.consume")
    manifest = load_fleet(kafka_bootstrap, unique_topics, runs=300, seed=83)
    config = _fold_config(kafka_bootstrap, unique_topics)
    service = FoldService(config)
    thread, result = _run_in_thread(service)
    _wait(lambda: service.stats.transactions >= 1 or not thread.is_alive(), "a commit", 120)
    impostor = _join_as(kafka_bootstrap, config)
    try:
        # The impostor polls until the service has recovered (its rejoin fences the
        # impostor in turn) or stopped.
        _wait(
            lambda: (
                impostor.poll(0.1) is not None
                or service.stats.recoveries >= 1
                or not thread.is_alive()
            ),
            "the service to notice the fence",
            120,
        )
        _wait(lambda: service.stats.recoveries >= 1 or not thread.is_alive(), "recovery", 120)
    finally:
        impostor.close()
    thread.join(timeout=300)

    assert "error" not in result, result.get("error")
    stats = result["stats"]
    assert stats.recoveries >= 1
    assert any("producer epoch is current" in r.message for r in caplog.records)
    assert stats.consumed == total_records(manifest)
    assert mismatches(read_output(kafka_bootstrap, unique_topics), manifest) == []


def test_group_fence_by_a_newer_instance_still_stops_fenced(
    kafka_bootstrap: str, unique_topics: TopicNames
) -> None:
    load_fleet(kafka_bootstrap, unique_topics, runs=300, seed=84)
    config = _fold_config(kafka_bootstrap, unique_topics)
    config.until_idle = 60
    service = FoldService(config)
    thread, result = _run_in_thread(service)
    _wait(lambda: service.stats.transactions >= 1 or not thread.is_alive(), "a commit", 120)
    # A newer instance: its producer (same transactional.id) first, then its consumer.
    newer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": config.transactional_id}
    )
    newer.init_transactions(60)
    impostor = _join_as(kafka_bootstrap, config)
    try:
        _wait(lambda: impostor.poll(0.1) is not None or not thread.is_alive(), "the stop", 120)
    finally:
        impostor.close()
    thread.join(timeout=120)

    error = result.get("error")
    assert isinstance(error, ServiceStopped), error
    assert error.fenced and "fenced" in str(error)
    assert service.stats.recoveries == 0
