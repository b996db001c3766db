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
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from clients.settings import TopicNames
from schemas.errors import ConfigError, KafkaSetupError

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_PARTITIONS",
    "DLQ_RETENTION_MS",
    "OUTPUT_HEADROOM",
    "EnsureReport",
    "TopicSpec",
    "ensure_topics",
    "output_max_bytes",
    "topic_specs",
]

DEFAULT_PARTITIONS = 6
DLQ_RETENTION_MS = 30 * 24 * 3600 * 1000
"""A DLQ is read by a person, days later: keep 30 days (events keep the broker default, 7)."""

DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
"""``max.message.bytes`` of an events topic runfold creates: Kafka's own default, explicit so
that the outputs' limits below are derived from a known number."""

OUTPUT_HEADROOM = 64 * 1024
"""Bytes the outputs allow beyond what the input carries: DLQ headers, RunState fields."""


def output_max_bytes(events_max_bytes: int) -> tuple[int, int]:
    """``(dlq, runs)`` ``max.message.bytes`` for an events topic allowing ``events_max_bytes``.

    The DLQ copies an events record byte for byte and adds headers; a RunState holds the
    ``inputs`` of one event and the ``outputs`` of another, so it may be twice as large.
    Anything the service still cannot write is truncated, never a reason to stop
    (docs/guarantees.md, "Oversized records").
    """
    return events_max_bytes + OUTPUT_HEADROOM, 2 * events_max_bytes + OUTPUT_HEADROOM


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
    warnings: list[str] = field(default_factory=list)
    """Existing topics whose size limits do not fit the events topic's (not a mismatch: the
    service truncates what does not fit, see docs/guarantees.md)."""

    @property
    def ok(self) -> bool:
        """True when every topic exists as specified."""
        return not self.mismatches


def topic_specs(
    names: TopicNames,
    partitions: int,
    replication: int,
    events_max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> list[TopicSpec]:
    """The five topics with their configs.

    ``max.message.bytes`` is consistent: the events topic gets ``events_max_bytes`` and the
    DLQ and ``agent-runs`` at least as much (:func:`output_max_bytes`), so that whatever
    the events topic accepts can be dead-lettered, or kept in a run's state.

    ``agent-runs`` and the changelog are compacted and have as many partitions as the events
    (co-partitioned: the folder of events partition p writes their partition p, and
    restores from the changelog's partition p). The changelog record holds what the
    summary in ``agent-runs`` holds and more: it gets the same limit.
    ``min.insync.replicas`` is 2 when there are 3+ replicas (one broker may fail without
    losing an acknowledged write), else 1.
    """
    if partitions < 1:
        raise ConfigError(f"partitions must be at least 1, not {partitions}")
    if replication < 1:
        raise ConfigError(f"replication must be at least 1, not {replication}")
    if events_max_bytes < 1:
        raise ConfigError(f"max.message.bytes must be at least 1, not {events_max_bytes}")
    base = {"min.insync.replicas": "2" if replication >= 3 else "1"}
    dlq_max, runs_max = output_max_bytes(events_max_bytes)
    return [
        TopicSpec(
            names.events,
            partitions,
            replication,
            {**base, "max.message.bytes": str(events_max_bytes)},
        ),
        TopicSpec(
            names.runs,
            partitions,
            replication,
            {**base, "cleanup.policy": "compact", "max.message.bytes": str(runs_max)},
        ),
        TopicSpec(names.violations, partitions, replication, {**base}),
        TopicSpec(
            names.changelog,
            partitions,
            replication,
            {**base, "cleanup.policy": "compact", "max.message.bytes": str(runs_max)},
        ),
        TopicSpec(
            names.dlq,
            partitions,
            replication,
            {
                **base,
                "retention.ms": str(DLQ_RETENTION_MS),
                "max.message.bytes": str(dlq_max),
            },
        ),
    ]


def ensure_topics(
    admin_or_conf: AdminClient | Mapping[str, Any],
    names: TopicNames | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    replication: int | None = None,
    *,
    timeout: float = 30.0,
    max_message_bytes: int | None = None,
) -> EnsureReport:
    """Create the missing topics of ``names``; report existing ones whose partition count differs.

    ``admin_or_conf`` is an ``AdminClient`` or its librdkafka config (e.g.
    ``RunfoldSettings.admin_config()``). ``replication`` defaults to ``min(3, brokers)``.
    ``max_message_bytes`` is the events topic's limit when it is created (default
    :data:`DEFAULT_MAX_MESSAGE_BYTES`); when the events topic exists, its actual limit is
    read and the DLQ and ``agent-runs`` are created to match it; existing outputs with a
    smaller limit are named in ``report.warnings``.
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
    report = EnsureReport()
    events_max = max_message_bytes or DEFAULT_MAX_MESSAGE_BYTES
    existing = [
        n
        for n in (names.events, names.dlq, names.runs, names.changelog)
        if (t := metadata.topics.get(n)) is not None and t.error is None
    ]
    limits = _max_message_bytes(admin, existing, timeout, report)
    events_max = limits.get(names.events, events_max)
    specs = topic_specs(names, partitions, replication, events_max)
    for spec in specs:
        want = spec.config.get("max.message.bytes")
        have = limits.get(spec.name)
        if want is not None and have is not None and have < int(want):
            report.warnings.append(
                f"{spec.name} allows {have} bytes per record, less than the {want} that "
                f"records of {names.events} ({events_max} bytes) may need; larger ones "
                "are truncated (docs/guarantees.md)"
            )
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


def _max_message_bytes(
    admin: AdminClient, names: list[str], timeout: float, report: EnsureReport
) -> dict[str, int]:
    """``max.message.bytes`` of the existing topics ``names`` (those that cannot be read are
    left out, with a warning: a missing DescribeConfigs permission must not stop the set-up)."""
    if not names:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    limits: dict[str, int] = {}
    for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
        try:
            entry = future.result(timeout=timeout).get("max.message.bytes")
        except KafkaException as exc:
            report.warnings.append(f"cannot read the configs of {resource.name}: {exc.args[0]}")
            continue
        if entry is not None and entry.value is not None:
            limits[resource.name] = int(entry.value)
    return limits


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
