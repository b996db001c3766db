"""In-process recovery: a fatal producer error that is not fencing no longer stops the
service; it rebuilds its producer (same ``transactional.id``), restores, rewinds and goes
on, and the output is still exact (real broker, real clients)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
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


@pytest.fixture
def failing_over(monkeypatch: pytest.MonkeyPatch) -> type[_FailingOverProducer]:
    monkeypatch.setattr(_FailingOverProducer, "instances", [])
    monkeypatch.setattr("consumers.service.loop.Producer", _FailingOverProducer)
    return _FailingOverProducer


def test_fatal_producer_error_rebuilds_in_process_and_folds_exactly_once(
    kafka_bootstrap: str,
    unique_topics: TopicNames,
    failing_over: type[_FailingOverProducer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    manifest = load_fleet(kafka_bootstrap, unique_topics, runs=200, seed=81)
    config = ServiceConfig.on_topics(
        {"bootstrap.servers": kafka_bootstrap},
        unique_topics,
        group="recover",
        until_idle=2,
        batch_size=300,  # several transactions: the third one fails with work in it
    )
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
    config = ServiceConfig.on_topics(
        {"bootstrap.servers": kafka_bootstrap},
        unique_topics,
        group="recover-bounded",
        until_idle=30,
        max_recoveries=2,
        recovery_backoff_max_s=0.2,
    )
    service = FoldService(config)

    with pytest.raises(ServiceStopped, match="giving up after 2 client rebuilds") as info:
        service.run()

    assert not info.value.fenced
    assert service.stats.recoveries == 2
    assert service.stats.transactions == 0
    assert len(failing_over.instances) == 3
