"""Configuration of one folding-service instance, and the librdkafka configs derived from it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    ResourceType,
)

from consumers.state import DEFAULT_CONFIG
from schemas.errors import ConfigError

__all__ = [
    "ASSIGNMENT_STRATEGY",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_STALL_AFTER_S",
    "DEFAULT_TXN_INTERVAL_MS",
    "KAFKA_DEFAULT_MAX_MESSAGE_BYTES",
    "Guarantee",
    "Lifecycle",
    "OutputLimits",
    "ServiceConfig",
    "TopicSet",
    "check_consumer_overrides",
    "consumer_config",
    "output_limits",
    "producer_config",
]

log = logging.getLogger("runfold.consume")

KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
"""The broker's default ``max.message.bytes``: assumed for a topic whose config is unknown."""

Guarantee = Literal["exactly-once", "at-least-once"]

DEFAULT_BATCH_SIZE = 10_000
"""Events per transaction at most (consumed in chunks of at most
:data:`consumers.service.loop.CONSUME_CHUNK`). Measured (docs/benchmarks.md): a
commit costs ~8 ms on a local broker, so 2,000 per transaction spent a third of the wall
clock committing at 40k events/s."""
DEFAULT_TXN_INTERVAL_MS = 100
"""An open transaction commits at least this often: the bound on how long an event waits
to be folded into a committed state at a low rate (end-to-end latency)."""
DEFAULT_STALL_AFTER_S = 1800.0
"""A RUNNING run with no event for this long (wall clock, 30 min) is flagged ``stalled``."""
_STALL_AFTER_MAX_S = 100 * 365 * 86400.0
_SECONDS_MAX = _STALL_AFTER_MAX_S
"""Longest duration setting accepted: a century (finite, so it converts to nanoseconds)."""
ASSIGNMENT_STRATEGY = "range"
"""The consumer's ``partition.assignment.strategy``, pinned. The service's rebalance
handling is eager: on revoke it commits and drops the state of *every* owned partition,
on assign it restores every assigned one. A cooperative (incremental) strategy revokes
and assigns only some partitions and keeps the rest folding across the rebalance, which
that handling does not support; so an override is rejected (:func:`consumer_config`)."""
_PINNED_CONSUMER = {
    "partition.assignment.strategy": ASSIGNMENT_STRATEGY,
    "group.protocol": "classic",
}
"""Consumer settings an override may not change, with their only accepted value.
``group.protocol=consumer`` (KIP-848) assigns incrementally whatever the strategy says."""


@dataclass(frozen=True)
class Lifecycle:
    """The run lifecycle and the bounds a service's state store enforces (docs/operations.md,
    "Run lifecycle and bounds"); built from :class:`ServiceConfig`'s fields."""

    grace_ns: int = DEFAULT_CONFIG.marker_grace_ns
    """Event time a finished run stays whole before it shrinks to a marker."""
    retention_ns: int = DEFAULT_CONFIG.marker_retention_ns
    """Event time after it finished that a run's marker is kept, then tombstoned."""
    max_markers: int = DEFAULT_CONFIG.max_markers
    """Markers held (all partitions); over it the oldest are shed (tombstoned, counted)."""
    max_active_runs: int = 200_000
    """Decoded runs held; over it idle RUNNING runs are paged out to packed bytes."""
    page_idle_ns: int = 60 * 10**9
    """Wall time a decoded RUNNING run may go unchanged before it is paged out."""
    max_buffered_events: int = 100_000
    """Events in all watched reorder buffers; over it the oldest buffers are flushed."""
    max_clock_skew_ns: int = 3_600_000_000_000
    """How far past the wall clock an event time may move a partition's clock."""


class TopicSet(Protocol):
    """The five topic names a service uses (e.g. :class:`clients.settings.TopicNames`)."""

    @property
    def events(self) -> str: ...
    @property
    def runs(self) -> str: ...
    @property
    def violations(self) -> str: ...
    @property
    def dlq(self) -> str: ...
    @property
    def changelog(self) -> str: ...


@dataclass
class ServiceConfig:
    """What one folding-service instance needs; Kafka settings as librdkafka keys."""

    kafka: dict[str, Any]
    """Connection settings shared by every client (``bootstrap.servers``, security)."""
    group: str = "runfold"
    instance_id: str = "0"
    guarantee: Guarantee = "exactly-once"
    batch_size: int = DEFAULT_BATCH_SIZE
    txn_interval_ms: int = DEFAULT_TXN_INTERVAL_MS
    until_idle: float | None = None
    events_topic: str = "agent-run-events"
    runs_topic: str = "agent-runs"
    violations_topic: str = "agent-run-violations"
    dlq_topic: str = "agent-run-events-dlq"
    changelog_topic: str = "agent-runs-changelog"
    """The internal state changelog: each changed run's whole state (``runfold.RunState``),
    written with its ``agent-runs`` summary; restore reads it (DESIGN.md §3, §5)."""
    transaction_timeout_ms: int = 15_000
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 120_000
    consumer_overrides: dict[str, Any] = field(default_factory=dict)
    producer_overrides: dict[str, Any] = field(default_factory=dict)
    max_message_bytes: int | None = None
    """Largest record the service writes to ``agent-runs`` and the DLQ. ``None``: read each
    topic's ``max.message.bytes`` when the service starts (:func:`output_limits`)."""
    max_recoveries: int = 20
    """Client rebuilds in a row (no transaction committed in between) before the service
    gives up and stops (exit 1): a failover heals in one or two, an outage that outlasts
    this many backoffs is a supervisor's (or an operator's) business."""
    recovery_backoff_max_s: float = 30.0
    """Longest wait before a client rebuild (the wait doubles from 0.5 s per rebuild in a
    row)."""
    finished_grace_s: float = DEFAULT_CONFIG.marker_grace_ns / 1e9
    """Event time (seconds) a finished run stays whole, to judge late duplicates and
    conflicts on its full digest window; then it shrinks to a marker (5 minutes)."""
    finished_retention_s: float = DEFAULT_CONFIG.marker_retention_ns / 1e9
    """Event time (seconds) after it finished that a run's marker is kept (7 days); then
    its changelog key gets a tombstone, and an event of it is ``forgotten_run``."""
    max_markers: int = DEFAULT_CONFIG.max_markers
    """Markers of finished runs held (~55 bytes each); over it the oldest are shed first."""
    max_active_runs: int = Lifecycle.max_active_runs
    """Decoded runs held in memory (~1.7 KiB each for a short run); over it idle RUNNING
    runs are paged out to packed bytes (~0.3 KiB) until their next event. Never dropped."""
    page_idle_after_s: float = Lifecycle.page_idle_ns / 1e9
    """Wall time (seconds) a RUNNING run may go without an event before it is paged out to
    packed bytes, as restored runs are held until touched: a fleet's runs mostly wait
    (on a model, a tool, a human), and a waiting run needs no decoded state. Its next
    event decodes it again (~35 µs)."""
    max_buffered_events: int = Lifecycle.max_buffered_events
    """Events held in all reorder buffers; over it the buffers with the oldest event are
    flushed (their gaps declared as ``gap`` violations)."""
    max_run_bytes: int | None = None
    """Largest RunState record written; a larger state is shrunk before anything commits
    (:mod:`~consumers.service.oversize`). None: the state topic's ``max.message.bytes``."""
    runs_tombstones: bool = False
    """Also write a tombstone to ``agent-runs`` when a finished run is forgotten (after
    ``finished_retention_s``): compaction then removes it there too, and downstream
    readers see the key deleted (a null value). Off: ``agent-runs`` keeps every run's
    last record; only the service's own state is bounded."""
    stall_after_s: float = DEFAULT_STALL_AFTER_S
    """A RUNNING run with no event for this long (wall clock) is flagged ``stalled`` once
    (:mod:`consumers.service.stalls`). The wait restarts when the service restores."""
    fail_stalled_runs: bool = False
    """End a stalled run as FAILED (an error in its outputs says why) instead of only
    flagging it; by default only the agent's own events change a run's status."""
    max_clock_skew_s: float = 3600.0
    """How far past the wall clock an event's time may move its partition's clock (the
    clock of the reorder buffers, the finished-run grace and retention, and of forgetting).
    An event stamped later is folded as usual but moves no partition clock: one record
    stamped in the year 2262 (valid Avro, a broken agent clock or a hostile one) would
    otherwise expire every buffer and forget every finished run of its partition, and
    make every new run's first event look ``forgotten_run``."""
    publish_duplicates: bool = False
    """Also publish a ``duplicate`` violation to ``agent-run-violations`` for every dropped
    duplicate. Off by default: duplicates are counted (the run's ``duplicates``, the
    ``duplicate`` outcome), not violations (DESIGN.md §5)."""

    def __post_init__(self) -> None:
        check_consumer_overrides(self.kafka, "kafka setting")
        check_consumer_overrides(self.consumer_overrides)
        if self.max_recoveries < 0:
            raise ConfigError(f"max_recoveries must be >= 0, got {self.max_recoveries}")
        if not 0 < self.stall_after_s < _STALL_AFTER_MAX_S:  # also refuses NaN
            raise ConfigError(
                f"stall_after_s must be more than 0 seconds (and finite), got "
                f"{self.stall_after_s!r}: a RUNNING run silent that long is flagged stalled"
            )
        for name in (
            "finished_grace_s",
            "finished_retention_s",
            "max_clock_skew_s",
            "page_idle_after_s",
        ):
            value = getattr(self, name)
            if not 0 < value < _SECONDS_MAX:  # also refuses NaN and infinity
                raise ConfigError(
                    f"{name} must be a positive, finite number of seconds, got {value!r}"
                )
        if self.finished_retention_s < self.finished_grace_s:
            raise ConfigError(
                f"finished_retention_s ({self.finished_retention_s:g}) must not be shorter "
                f"than finished_grace_s ({self.finished_grace_s:g}): a finished run is kept "
                "whole for the grace, then as a marker until the retention is over"
            )
        for name in ("max_markers", "max_active_runs", "max_buffered_events"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.max_run_bytes is not None and self.max_run_bytes < 4096:
            raise ConfigError(
                f"max_run_bytes must be at least 4096 (a shrunk state takes a few KiB), "
                f"got {self.max_run_bytes}"
            )

    @property
    def lifecycle(self) -> Lifecycle:
        """The lifecycle and bounds of the service's state store, in its units."""
        return Lifecycle(
            grace_ns=round(self.finished_grace_s * 1e9),
            retention_ns=round(self.finished_retention_s * 1e9),
            max_markers=self.max_markers,
            max_active_runs=self.max_active_runs,
            max_buffered_events=self.max_buffered_events,
            max_clock_skew_ns=round(self.max_clock_skew_s * 1e9),
            page_idle_ns=round(self.page_idle_after_s * 1e9),
        )

    @classmethod
    def on_topics(cls, kafka: dict[str, Any], topics: TopicSet, **options: Any) -> ServiceConfig:
        """A config whose five topics are ``topics``; ``options`` are the other fields."""
        return cls(
            kafka=kafka,
            events_topic=topics.events,
            runs_topic=topics.runs,
            violations_topic=topics.violations,
            dlq_topic=topics.dlq,
            changelog_topic=topics.changelog,
            **options,
        )

    @property
    def transactional_id(self) -> str:
        """Stable per instance, so a restarted instance fences its own zombie."""
        return f"runfold-{self.group}-{self.instance_id}"


def check_consumer_overrides(overrides: dict[str, Any], what: str = "consumer override") -> None:
    """Raise :class:`~schemas.errors.ConfigError` if ``overrides`` would change a pinned
    consumer setting (the assignment strategy, see :data:`ASSIGNMENT_STRATEGY`)."""
    for name, pinned in _PINNED_CONSUMER.items():
        if name not in overrides:
            continue
        value = overrides[name]
        if str(value).strip().lower() != pinned:
            raise ConfigError(
                f"{what} {name}={value!r} is not supported: the folding service "
                f"restores and drops the state of all its partitions on every rebalance "
                f"(eager assignment), so {name} is pinned to {pinned!r}; remove the override"
            )


def consumer_config(
    config: ServiceConfig, error_cb: Callable[[KafkaError], None] | None = None
) -> dict[str, Any]:
    """The events consumer: no auto-commit, read_committed, eager (range) assignment.

    Raises :class:`~schemas.errors.ConfigError` if ``config.consumer_overrides`` would
    change the assignment strategy (checked here too: overrides may be added after the
    config was made)."""
    check_consumer_overrides(config.kafka, "kafka setting")
    check_consumer_overrides(config.consumer_overrides)
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
        **_PINNED_CONSUMER,
        "session.timeout.ms": config.session_timeout_ms,
        "max.poll.interval.ms": config.max_poll_interval_ms,
        # librdkafka stops fetching a partition for fetch.queue.backoff.ms (1 s by
        # default) whenever its local queue is over its thresholds: a fold that keeps up
        # with the fetcher then drains the queue and waits for the rest of that second.
        "fetch.queue.backoff.ms": 10,
    }
    if error_cb is not None:
        cfg["error_cb"] = error_cb
    cfg.update(config.consumer_overrides)
    return cfg


@dataclass(frozen=True)
class OutputLimits:
    """The largest record (bytes) each output topic accepts."""

    runs: int
    """The largest record of a run's state: the smaller of ``agent-runs``' and the
    changelog's limits (a run's two records are shrunk together until both fit)."""
    dlq: int

    @property
    def producer(self) -> int:
        """``message.max.bytes`` for the producer: the largest of the topics' limits (each
        record is checked against its own topic's limit before it is produced)."""
        return max(self.runs, self.dlq, _LIBRDKAFKA_DEFAULT_MESSAGE_MAX_BYTES)


_LIBRDKAFKA_DEFAULT_MESSAGE_MAX_BYTES = 1_000_000


def output_limits(config: ServiceConfig, timeout: float = 10.0) -> OutputLimits:
    """The ``max.message.bytes`` of ``agent-runs`` (and the changelog) and the DLQ.

    ``config.max_message_bytes`` when set; else read from the broker (one DescribeConfigs
    request). A topic whose config cannot be read is assumed to have Kafka's default
    limit, with a warning: the service then truncates more than it needs to, but runs.
    """
    if config.max_message_bytes is not None:
        return OutputLimits(config.max_message_bytes, config.max_message_bytes)
    found: dict[str, int] = {}
    topics = (config.runs_topic, config.dlq_topic, config.changelog_topic)
    try:
        admin = AdminClient({**config.kafka})
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in topics]
        for resource, future in admin.describe_configs(resources, request_timeout=timeout).items():
            entry = future.result(timeout=timeout).get("max.message.bytes")
            if entry is not None and entry.value is not None:
                found[resource.name] = int(entry.value)
    except (KafkaException, ValueError, FutureTimeout) as exc:
        # A timeout too: at start during a failover the controller may not answer in time.
        log.warning("cannot read max.message.bytes of %s: %r", ", ".join(topics), exc)
    for name in topics:
        if name not in found:
            log.warning(
                "assuming %s accepts records up to %d bytes (its config could not be read)",
                name,
                KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
            )
    default = KAFKA_DEFAULT_MAX_MESSAGE_BYTES
    runs = min(found.get(config.runs_topic, default), found.get(config.changelog_topic, default))
    return OutputLimits(runs=runs, dlq=found.get(config.dlq_topic, default))


def producer_config(
    config: ServiceConfig,
    error_cb: Callable[[KafkaError], None] | None = None,
    limits: OutputLimits | None = None,
) -> dict[str, Any]:
    """The output producer: idempotent, transactional in exactly-once mode.

    ``limits`` (the output topics' record size limits) sets ``message.max.bytes``, so
    that whatever the topics accept the producer can send.
    """
    cfg: dict[str, Any] = {
        **config.kafka,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
    }
    if limits is not None:
        cfg["message.max.bytes"] = limits.producer
    if config.guarantee == "exactly-once":
        cfg["transactional.id"] = config.transactional_id
        cfg["transaction.timeout.ms"] = config.transaction_timeout_ms
    if error_cb is not None:
        cfg["error_cb"] = error_cb
    cfg.update(config.producer_overrides)
    return cfg
