"""The Kafka producer under :class:`~producers.recorder.RunRecorder` and the fleet simulator.

One :class:`EventProducer` wraps one ``confluent_kafka.Producer``:

- built lazily on the first send (no network in ``__init__``), after a bounded
  metadata check so that a broker that never answers gives a
  :class:`~schemas.errors.KafkaSetupError` instead of a hang;
- idempotent (``enable.idempotence=true``, ``acks=all``), compressed and batched,
  with the Java client's hash (``partitioner=murmur2_random``) so a run lands on the
  same partition whichever language produced it;
- key = run_id text (UTF-8), value = codec bytes;
- back-pressure: when librdkafka's local queue is full, serve delivery reports and
  retry, never drop;
- every record's fate is accounted: failed (with the broker's reason) or indeterminate
  (``_MSG_TIMED_OUT``: it may have been written) by the delivery callback, delivered as
  what is neither and no longer in librdkafka (reports for failures only, by measurement).
  :meth:`EventProducer.close` flushes and returns the counts as a :class:`DeliveryReport`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from clients import RunfoldSettings
from clients.connection import unreachable_message
from clients.librdkafka_log import LIBRDKAFKA_LOGGER
from schemas import Event
from schemas.codec import event_encoder, keyed_event_encoder
from schemas.errors import ConfigError, KafkaSetupError

__all__ = [
    "DEFAULT_PRODUCER_CONFIG",
    "EVENT_PRODUCER_CONFIG",
    "DeliveryReport",
    "EventProducer",
    "load_settings",
    "producer_config",
]

DEFAULT_PRODUCER_CONFIG: dict[str, str | int | float | bool] = {
    "enable.idempotence": True,
    "acks": "all",
    # The Java client's hash: a key lands where a Java, Go or Rust agent would put it.
    "partitioner": "murmur2_random",
    # Chosen with bench/producer_bench.py --matrix (2 shared cores, 127k simulated events of
    # ~94 bytes): lz4 sends 40 bytes/event instead of 140 uncompressed at the same CPU
    # (~3-4 us/event with librdkafka's threads) and throughput; zstd sends 25 bytes but
    # costs ~40% more CPU and was slower. linger.ms 5/20/100 made no difference beyond
    # noise at full speed (batches fill first); 20 ms bounds what a slow agent waits.
    "compression.type": "lz4",
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 200_000,
    # Bounded: a record that cannot be delivered in this time is reported (indeterminate)
    # rather than retried for librdkafka's default five minutes.
    "message.timeout.ms": 60_000,
}
"""librdkafka settings runfold uses unless the caller overrides them."""

EVENT_PRODUCER_CONFIG: dict[str, str | int | float | bool] = {
    **DEFAULT_PRODUCER_CONFIG,
    # Delivery reports for failed records only: a report per record cost ~0.7 us of the
    # sending thread per event (a tenth of the producer's budget). EventProducer counts
    # delivered records as produced - failed - indeterminate - still in librdkafka (see
    # EventProducer.report); set it to false to count each success from its own report.
    # Not in DEFAULT_PRODUCER_CONFIG: other clients built from it count their successes.
    "delivery.report.only.error": True,
}
"""What :class:`EventProducer` uses unless overridden: the defaults plus failure-only reports."""

_FORBIDDEN = {
    # Turning these off would break the guarantees the rest of runfold relies on.
    "enable.idempotence": ("false", "0", "False"),
    "acks": ("0", "1"),
}

_MAX_FAILURE_SAMPLES = 20
_KEY_CACHE_SIZE = 4096  # runs in flight whose keys are kept (then started afresh)


@dataclass
class DeliveryReport:
    """How many records were produced and what became of each.

    ``produced == delivered + failed + indeterminate + pending`` always holds;
    ``pending`` is what was still in flight when a bounded flush gave up.
    ``failure_reasons`` counts the broker's reasons (``KafkaError.str()``).
    """

    produced: int = 0
    delivered: int = 0
    failed: int = 0
    indeterminate: int = 0
    failure_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def pending(self) -> int:
        """Records produced whose delivery report has not arrived yet."""
        return self.produced - self.delivered - self.failed - self.indeterminate

    @property
    def ok(self) -> bool:
        """True when every produced record was delivered."""
        return self.delivered == self.produced

    def copy(self) -> DeliveryReport:
        """A snapshot that later deliveries do not change."""
        return DeliveryReport(
            self.produced, self.delivered, self.failed, self.indeterminate,
            Counter(self.failure_reasons),
        )

    def summary(self) -> str:
        """One line for people: the four counts and the commonest failure reasons."""
        text = (
            f"produced={self.produced} delivered={self.delivered} failed={self.failed} "
            f"indeterminate={self.indeterminate} pending={self.pending}"
        )
        if self.failure_reasons:
            reasons = "; ".join(f"{r} x{n}" for r, n in self.failure_reasons.most_common(3))
            text += f" (failures: {reasons})"
        return text


def producer_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    bootstrap_servers: str | None = None,
    settings: RunfoldSettings | None = None,
) -> dict[str, Any]:
    """The librdkafka configuration: :data:`EVENT_PRODUCER_CONFIG`, settings, ``overrides``.

    ``settings`` (a :class:`clients.RunfoldSettings`; loaded from the environment
    and ``$RUNFOLD_CONFIG`` when not given) supplies the connection (bootstrap servers,
    security); ``overrides`` (librdkafka dotted keys) wins over both, and an explicit
    ``bootstrap_servers`` over everything. Settings that would weaken delivery
    (``enable.idempotence=false``, ``acks`` other than ``all``) are refused.
    """
    conf: dict[str, Any] = dict(EVENT_PRODUCER_CONFIG)
    conf.update(_settings_config(settings))
    if overrides:
        conf.update(overrides)
    if bootstrap_servers:
        conf["bootstrap.servers"] = bootstrap_servers
    for key, bad in _FORBIDDEN.items():
        if str(conf.get(key)) in bad:
            raise ConfigError(
                f"producer setting {key}={conf[key]!r} would give up idempotent delivery; "
                f"runfold requires enable.idempotence=true and acks=all"
            )
    if not conf.get("bootstrap.servers"):
        raise ConfigError(
            "no Kafka bootstrap servers: pass --bootstrap / bootstrap_servers= or set "
            "RUNFOLD_BOOTSTRAP_SERVERS"
        )
    return conf


def load_settings() -> RunfoldSettings:
    """The settings from the environment and ``$RUNFOLD_CONFIG`` (:meth:`RunfoldSettings.load`)."""
    return RunfoldSettings.load()


def _settings_config(settings: RunfoldSettings | None) -> dict[str, Any]:
    """Connection settings (librdkafka keys) from the runfold settings object."""
    settings = settings if settings is not None else load_settings()
    return dict(settings.producer_config())


class EventProducer:
    """Publishes events (or ready key/value bytes) to one topic, accounting every delivery.

    Not thread-safe for sends; :class:`~producers.recorder.AsyncRunRecorder` serves
    delivery reports from one background thread while the loop sends, which is safe
    because each counter has a single writer.
    """

    def __init__(
        self,
        topic: str | None = None,
        *,
        bootstrap_servers: str | None = None,
        config: Mapping[str, Any] | None = None,
        settings: RunfoldSettings | None = None,
        framing: str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        """Prepare (not connect) a producer for ``topic`` (default: the settings' events topic).

        ``config`` holds librdkafka overrides; ``startup_timeout`` bounds the wait for the
        broker's first answer. ``framing`` defaults to the Confluent wire format when the
        settings name a schema registry (``schema_registry_url``, DESIGN.md §2), so that
        Connect, ksqlDB or Flink read the topic directly, else single-object encoding.
        """
        settings = settings if settings is not None else load_settings()
        if topic is None:
            topic = settings.topic_names.events
        self.topic: str = topic
        self._registry = settings.schema_registry_url
        if framing is None:
            framing = "confluent" if self._registry else "single-object"
        self.framing = framing
        self.startup_timeout = startup_timeout
        self._conf = producer_config(config, bootstrap_servers=bootstrap_servers,
                                     settings=settings)
        self._producer: Producer | None = None
        self._report = DeliveryReport()
        self._encode: Callable[[Event], bytes] | None = None
        self._keyed: Callable[[Event, bytes], bytes] | None = None
        self._keys: dict[int, tuple[object, bytes]] = {}
        self._derive_delivered = str(self._conf.get("delivery.report.only.error")).lower() in (
            "true", "1")
        self._delivered_seen = 0
        self._count_lock = threading.Lock()  # not _lock: building the client takes seconds
        self._abandoned = 0
        """Records still in a client that close() gave up on: never reported, so pending."""
        self._since_poll = 0
        self._lock = threading.Lock()

    @property
    def config(self) -> dict[str, Any]:
        """The librdkafka configuration this producer uses (a copy)."""
        return dict(self._conf)

    @property
    def report(self) -> DeliveryReport:
        """A snapshot of the counts so far (serve callbacks with :meth:`poll` first).

        With ``delivery.report.only.error`` (the default) ``delivered`` is derived: the
        records produced that are neither failed, indeterminate nor still counted by
        librdkafka (its count includes reports and logs waiting for :meth:`poll`, so
        the figure may lag, never lead; exact once :meth:`flush` returns with nothing
        left). It never decreases between snapshots.
        """
        if not self._derive_delivered:
            return self._report.copy()
        # Read in this order, each count errs towards fewer delivered (see _lower_bound).
        produced = self._report.produced
        producer = self._producer
        outstanding = len(producer) if producer is not None else 0
        snapshot = self._report.copy()
        snapshot.produced = produced
        derived = (produced - outstanding - self._abandoned
                   - snapshot.failed - snapshot.indeterminate)
        # produced read before librdkafka's count, failures after: whatever happens in
        # between makes the difference smaller, never larger than the records delivered.
        with self._count_lock:
            self._delivered_seen = max(self._delivered_seen, derived)
            snapshot.delivered = self._delivered_seen
        return snapshot

    def _client(self) -> Producer:
        with self._lock:
            if self._producer is None:
                self._producer = self._build()
            return self._producer

    def _build(self) -> Producer:
        conf = dict(self._conf)
        conf["on_delivery"] = self._on_delivery
        # librdkafka's lines into Python logging at DEBUG (served by poll), off the terminal.
        conf.setdefault("logger", LIBRDKAFKA_LOGGER)
        try:
            producer = Producer(conf)
        except KafkaException as exc:
            raise ConfigError(f"librdkafka rejected the producer configuration: {exc}") from exc
        try:
            metadata = producer.list_topics(self.topic, timeout=self.startup_timeout)
        except KafkaException as exc:
            raise KafkaSetupError(unreachable_message(
                conf["bootstrap.servers"], self.startup_timeout,
                conf.get("security.protocol", "PLAINTEXT"),
                exc.args[0].str() if exc.args else str(exc),
            )) from exc
        topic_meta = metadata.topics.get(self.topic)
        if topic_meta is not None and topic_meta.error is not None:
            code = topic_meta.error.code()
            if code != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise KafkaSetupError(
                    f"topic {self.topic!r} is not usable: {topic_meta.error.str()}"
                )
        return producer

    def connect(self) -> None:
        """Build the client and check the broker answers now (otherwise on the first send)."""
        self._client()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        # Runs inside poll()/flush(); one thread at a time serves callbacks.
        report = self._report
        if err is None:
            report.delivered += 1
        elif err.code() == KafkaError._MSG_TIMED_OUT:
            report.indeterminate += 1
        else:
            report.failed += 1
            if len(report.failure_reasons) < _MAX_FAILURE_SAMPLES or (
                err.str() in report.failure_reasons
            ):
                report.failure_reasons[err.str()] += 1

    def produce(self, key: bytes | str, value: bytes) -> None:
        """Queue one record; waits (serving delivery reports) while the local queue is full."""
        producer = self._producer or self._client()
        while True:
            try:
                producer.produce(self.topic, value, key)
                break
            except BufferError:
                # Queue full: back-pressure. Serving callbacks frees room; never drop.
                producer.poll(0.05)
        self._report.produced += 1
        self._since_poll += 1
        if self._since_poll >= 1000:
            self._since_poll = 0
            producer.poll(0)

    def produce_many(
        self,
        records: Iterable[Sequence[Any]],
        *,
        on_progress: Callable[[int], None] | None = None,
        every: int = 500,
    ) -> int:
        """Queue every record of ``records``, each a sequence starting ``(key, value, ...)``.

        What :meth:`produce` does per record (back-pressure, accounting, serving delivery
        reports every 1,000 records) in one loop: the per-call overhead was a fifth of
        the fleet's cost per event. ``on_progress(n)`` is called every ``every`` records
        with how many this call queued. Returns how many it queued.
        """
        producer = self._producer or self._client()
        produce, poll, topic, report = producer.produce, producer.poll, self.topic, self._report
        sent = counted = 0
        # One count and one comparison per record: the next poll (1,000 records after the
        # last, as produce() does) or progress report, whichever comes first.
        next_poll = 1000 - self._since_poll
        next_progress = every if on_progress is not None else -1
        mark = min(next_poll, next_progress) if next_progress > 0 else next_poll
        try:
            for record in records:
                try:
                    produce(topic, record[1], record[0])
                except BufferError:
                    report.produced += sent - counted  # before poll() counts deliveries
                    counted = sent
                    while True:
                        # Queue full: back-pressure. Serving callbacks frees room; never drop.
                        poll(0.05)
                        try:
                            produce(topic, record[1], record[0])
                            break
                        except BufferError:
                            continue
                sent += 1
                if sent < mark:
                    continue
                if sent >= next_poll:
                    report.produced += sent - counted
                    counted = sent
                    next_poll = sent + 1000
                    poll(0)
                if sent == next_progress:
                    next_progress = sent + every
                    on_progress(sent)  # type: ignore[misc]
                mark = min(next_poll, next_progress) if next_progress > 0 else next_poll
        finally:
            report.produced += sent - counted
            self._since_poll = 1000 - (next_poll - sent)
        return sent

    def send(self, event: Event) -> None:
        """Encode ``event`` with the codec and queue it under its run_id."""
        encode = self._encode
        if encode is None:
            encode = self._encode = event_encoder(self.framing, self._registry)
            self._keyed = keyed_event_encoder(self.framing)
        run_id = event.run_id
        # A run's key is formatted once (UUID.__str__ was a tenth of a send): the cache
        # holds the UUID itself, so an id() cannot be reused while its entry lives.
        keys = self._keys
        cached = keys.get(id(run_id))
        if cached is not None and cached[0] is run_id:
            key = cached[1]
        else:
            if len(keys) >= _KEY_CACHE_SIZE:
                keys.clear()
            key = str(run_id).encode()
            keys[id(run_id)] = (run_id, key)
        keyed = self._keyed
        value: bytes | None = None
        if keyed is not None:
            try:
                value = keyed(event, key)
            except Exception:  # noqa: BLE001 - the codec below raises the precise EncodeError
                value = None
        self.produce(key, value if value is not None else encode(event))

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery callbacks; returns how many were served."""
        if self._producer is None:
            return 0
        return int(self._producer.poll(timeout))

    def in_flight(self) -> int:
        """Records queued or in flight in librdkafka."""
        return 0 if self._producer is None else len(self._producer)

    def flush(self, timeout: float = 30.0) -> DeliveryReport:
        """Wait up to ``timeout`` seconds for in-flight records; returns the counts so far."""
        if self._producer is not None:
            self._producer.flush(timeout)
        return self.report

    def close(self, timeout: float = 30.0) -> DeliveryReport:
        """Flush (bounded by ``timeout``) and return the final :class:`DeliveryReport`."""
        producer = self._producer
        if producer is not None:
            producer.flush(timeout)
            producer.poll(0)  # reports and logs that arrived since
            report = self.report
            # What is left will never be reported: it stays pending, not delivered.
            self._abandoned += len(producer)
            self._producer = None
            return report
        return self.report

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

