"""The topics of DESIGN §3, created idempotently with the right partitions and configs.

``ensure_topics(admin_or_conf, names, partitions, replication)`` is the one place that knows
topic configs: the CLI (``runfold topics create``), the tests and the demo call it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from runfold.settings import TopicNames
from schemas.errors import ConfigError, KafkaSetupError

__all__ = [
    "DEFAULT_PARTITIONS",
    "DLQ_RETENTION_MS",
    "EnsureReport",
    "TopicSpec",
    "ensure_topics",
    "topic_specs",
]

DEFAULT_PARTITIONS = 6
DLQ_RETENTION_MS = 30 * 24 * 3600 * 1000
"""A DLQ is read by a person, days later: keep 30 days (events keep the broker default, 7)."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic to create: name, partitions, replication factor, topic configs."""

    name: str
    partitions: int
    replication: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass
class EnsureReport:
    """What :func:`ensure_topics` did: created, already there, and existing topics that differ."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every topic exists as specified."""
        return not self.mismatches


def topic_specs(names: TopicNames, partitions: int, replication: int) -> list[TopicSpec]:
    """The four topics with their configs.

    ``agent-runs`` is compacted and has as many partitions as the events (co-partitioned: the
    folder of events partition p writes state partition p). ``min.insync.replicas`` is 2 when
    there are 3+ replicas (one broker may fail without losing an acknowledged write), else 1.
    """
    if partitions < 1:
        raise ConfigError(f"partitions must be at least 1, not {partitions}")
    if replication < 1:
        raise ConfigError(f"replication must be at least 1, not {replication}")
    base = {"min.insync.replicas": "2" if replication >= 3 else "1"}
    return [
        TopicSpec(names.events, partitions, replication, {**base}),
        TopicSpec(names.runs, partitions, replication, {**base, "cleanup.policy": "compact"}),
        TopicSpec(names.violations, partitions, replication, {**base}),
        TopicSpec(
            names.dlq, partitions, replication, {**base, "retention.ms": str(DLQ_RETENTION_MS)}
        ),
    ]


def ensure_topics(
    admin_or_conf: AdminClient | Mapping[str, Any],
    names: TopicNames | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    replication: int | None = None,
    *,
    timeout: float = 30.0,
) -> EnsureReport:
    """Create the missing topics of ``names``; report existing ones whose partition count differs.

    ``admin_or_conf`` is an ``AdminClient`` or its librdkafka config (e.g.
    ``RunfoldSettings.admin_config()``). ``replication`` defaults to ``min(3, brokers)``.
    Raises :class:`KafkaSetupError` when the broker cannot be reached or refuses a topic.
    """
    admin = (
        admin_or_conf
        if isinstance(admin_or_conf, AdminClient)
        else AdminClient(dict(admin_or_conf))
    )
    names = names or TopicNames()
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaSetupError(
            f"cannot reach Kafka to create topics: {exc.args[0]}; is a broker running "
            "(`runfold kafka up`) and KAFKA_BOOTSTRAP_SERVERS right?"
        ) from exc
    if replication is None:
        replication = min(3, max(1, len(metadata.brokers)))
    specs = topic_specs(names, partitions, replication)
    report = EnsureReport()
    missing: list[TopicSpec] = []
    for spec in specs:
        topic = metadata.topics.get(spec.name)
        if topic is None or topic.error is not None:
            missing.append(spec)
            continue
        report.existing.append(spec.name)
        if len(topic.partitions) != spec.partitions:
            report.mismatches.append(
                f"{spec.name} has {len(topic.partitions)} partitions, expected {spec.partitions}"
            )
    if not missing:
        return report
    futures = admin.create_topics(
        [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=s.replication,
                config=dict(s.config),
            )
            for s in missing
        ],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    wanted = {spec.name: spec.partitions for spec in missing}
    for name, future in futures.items():
        try:
            future.result()
            report.created.append(name)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise KafkaSetupError(f"could not create topic {name}: {error.str()}") from exc
            # Created concurrently, or our metadata was older than the broker's: check it now.
            report.existing.append(name)
            actual = _partition_count(admin, name, timeout)
            if actual is not None and actual != wanted[name]:
                report.mismatches.append(f"{name} has {actual} partitions, expected {wanted[name]}")
    _await_visible(admin, report.created, timeout)
    return report


def _await_visible(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Return once every topic in ``names`` shows all partitions with a leader.

    CreateTopics answers before every broker's metadata has the topic; waiting here lets a
    caller produce, or list the topics, the moment ``ensure_topics`` returns.
    """
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        topics = admin.list_topics(timeout=timeout).topics
        for name in list(pending):
            topic = topics.get(name)
            if (
                topic is not None
                and topic.error is None
                and topic.partitions
                and all(p.leader >= 0 for p in topic.partitions.values())
            ):
                pending.discard(name)
        if pending:
            if time.monotonic() > deadline:
                raise KafkaSetupError(
                    f"topics {', '.join(sorted(pending))} were created but have no leader "
                    f"after {timeout:.0f}s; check the brokers' logs"
                )
            time.sleep(0.1)


def _partition_count(admin: AdminClient, name: str, timeout: float) -> int | None:
    """Partitions of an existing topic, polling briefly while its metadata propagates."""
    deadline = time.monotonic() + min(timeout, 10.0)
    while True:
        topic = admin.list_topics(topic=name, timeout=timeout).topics.get(name)
        if topic is not None and topic.error is None and topic.partitions:
            return len(topic.partitions)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)
