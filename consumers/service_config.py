"""Configuration of one folding-service instance, and the librdkafka configs derived from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import KafkaError

__all__ = ["Guarantee", "ServiceConfig", "consumer_config", "producer_config"]

Guarantee = Literal["exactly-once", "at-least-once"]


@dataclass
class ServiceConfig:
    """What one folding-service instance needs; Kafka settings as librdkafka keys."""

    kafka: dict[str, Any]
    """Connection settings shared by every client (``bootstrap.servers``, security)."""
    group: str = "runfold"
    instance_id: str = "0"
    guarantee: Guarantee = "exactly-once"
    batch_size: int = 2000
    txn_interval_ms: int = 500
    until_idle: float | None = None
    events_topic: str = "agent-run-events"
    runs_topic: str = "agent-runs"
    violations_topic: str = "agent-run-violations"
    dlq_topic: str = "agent-run-events-dlq"
    transaction_timeout_ms: int = 15_000
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 120_000
    consumer_overrides: dict[str, Any] = field(default_factory=dict)
    producer_overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def transactional_id(self) -> str:
        """Stable per instance, so a restarted instance fences its own zombie."""
        return f"runfold-{self.group}-{self.instance_id}"


def consumer_config(
    config: ServiceConfig, error_cb: Callable[[KafkaError], None] | None = None
) -> dict[str, Any]:
    """The events consumer: no auto-commit, read_committed, eager (range) assignment."""
    cfg: dict[str, Any] = {
        **config.kafka,
        "group.id": config.group,
        # Static membership: a restarted instance takes its place back without a
        # rebalance; and a second process with the same id is fenced (fatal).
        "group.instance.id": f"{config.group}-{config.instance_id}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        "session.timeout.ms": config.session_timeout_ms,
        "max.poll.interval.ms": config.max_poll_interval_ms,
    }
    if error_cb is not None:
        cfg["error_cb"] = error_cb
    cfg.update(config.consumer_overrides)
    return cfg


def producer_config(
    config: ServiceConfig, error_cb: Callable[[KafkaError], None] | None = None
) -> dict[str, Any]:
    """The output producer: idempotent, transactional in exactly-once mode."""
    cfg: dict[str, Any] = {
        **config.kafka,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
    }
    if config.guarantee == "exactly-once":
        cfg["transactional.id"] = config.transactional_id
        cfg["transaction.timeout.ms"] = config.transaction_timeout_ms
    if error_cb is not None:
        cfg["error_cb"] = error_cb
    cfg.update(config.producer_overrides)
    return cfg
