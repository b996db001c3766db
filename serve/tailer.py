"""The view's tailer: reads ``agent-runs``, ``agent-run-violations`` and ``agent-run-events``
into the SQLite view (:mod:`serve.store`), in a background thread.

It is a plain reader, never a member of the folding group: partitions are ``assign()``-ed
(new topics and partitions are picked up every few seconds), records are read
``read_committed`` (the fold's aborted transactions are never seen), and nothing is
committed to Kafka: the position lives in the view's file, written in the same SQLite
transaction as the rows, so a restart resumes where the file is and a deleted file is
read again from the beginning of each topic.

Records are decoded with the project's codec: agent-runs values with the one reader of
them (:meth:`consumers.service.FoldEdge.read_run`: new summaries and old states) and
shown as ``runfold runs show --json`` shows them
(:func:`runfold.commands.runs.run_document`), violations with
:func:`schemas.decode_violation`, events with :func:`schemas.decode_event`. A record that
does not decode is counted and skipped (the fold sent its event to the DLQ already).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from runfold.commands.runs import run_document
from schemas import decode_event, decode_violation
from schemas.errors import RunfoldError
from serve.store import EventRow, RunRow, ViewBatch, ViewWriter, ViolationRow, kind_mask

__all__ = ["ViewTailer", "run_row"]

log = logging.getLogger(__name__)
_kafka_log = logging.getLogger("serve.tailer.librdkafka")

_BATCH = 5_000
"""Records per consume call, written in one SQLite transaction."""
_METADATA_EVERY_S = 5.0
_LAG_EVERY_S = 2.0
_EXPIRE_EVERY_S = 60.0
_RATE_WINDOW_S = 10


def run_row(view: Any, kafka_ms: int) -> RunRow:
    """The view's row for a decoded agent-runs record (a :class:`consumers.run_view.RunView`),
    published at ``kafka_ms``."""
    state = view.state
    counts = {kind: n for kind, n in state.violation_counts.items() if n}
    stalled = getattr(state, "stalled_since", None)
    return RunRow(
        run_id=str(state.run_id),
        status=state.status.value,
        agent_spec_digest=state.agent_spec_digest,
        started_ns=int(state.started_at),
        finished_ns=None if state.finished_at is None else int(state.finished_at),
        events_applied=state.events_applied,
        violation_mask=kind_mask(counts),
        violations=sum(counts.values()),
        updated_ms=kafka_ms,
        stalled_ns=None if stalled is None else int(stalled),
        doc=json.dumps(run_document(view), separators=(",", ":")),
    )


class ViewTailer:
    """Keeps the view up to date with three topics, in its own thread."""

    def __init__(
        self,
        kafka_config: dict[str, Any],
        writer: ViewWriter,
        *,
        runs_topic: str,
        violations_topic: str,
        events_topic: str,
        retention_s: float,
        fold_group: str | None = None,
        on_change: Callable[[int], None] = lambda change: None,
    ) -> None:
        """Prepare (not connect); ``on_change(change_seq)`` is called after each write of runs.

        ``fold_group``: the folding consumer group whose lag on the events topic
        :meth:`status` reports (its committed offsets are read, never written).
        """
        self._config = {
            **kafka_config,
            # Required by the client; never used to commit (no subscribe, no commit).
            "group.id": "runfold-serve-view",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "logger": _kafka_log,
        }
        self.fold_group = fold_group
        self._fold_lag: int | None = None
        self._group_offsets: Consumer | None = None
        self._known_watermarks: dict[tuple[str, int], tuple[int, int]] = {}
        self.writer = writer
        self.runs_topic = runs_topic
        self.violations_topic = violations_topic
        self.events_topic = events_topic
        self.retention_ms = int(retention_s * 1000)
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._assigned: set[tuple[str, int]] = set()
        self._lag: dict[str, int | None] = {}
        self._rate: Counter[int] = Counter()
        self.records = 0
        self.undecodable = 0
        self.error: str | None = None
        self.caught_up = threading.Event()
        """Set once every assigned partition was read to its end (lag 0) at least once."""

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the background thread."""
        self._thread = threading.Thread(target=self._run, name="runfold-serve-tailer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and wait for it (it closes its consumer)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        """Lag per topic, events/s arriving in Kafka, records read, last error."""
        now = int(time.time())
        window = range(now - _RATE_WINDOW_S, now)
        return {
            "lag": dict(self._lag),
            "fold_lag": self._fold_lag,
            "events_per_s": sum(self._rate.get(s, 0) for s in window) / _RATE_WINDOW_S,
            "records_read": self.records,
            "undecodable": self.undecodable,
            "partitions": len(self._assigned),
            "caught_up": self.caught_up.is_set(),
            "error": self.error,
        }

    # ---------------------------------------------------------------- the loop

    def _run(self) -> None:
        consumer: Consumer | None = None
        try:
            consumer = Consumer(self._config)
            if self.fold_group is not None:
                # Only for committed() of the folding group: never subscribes (never joins)
                # nor commits; read_uncommitted, as read_committed would wait for "stable"
                # offsets while the fold's transaction is open.
                self._group_offsets = Consumer({
                    **self._config, "group.id": self.fold_group,
                    "isolation.level": "read_uncommitted",
                })
            self._loop(consumer)
        except Exception as exc:  # reported through status(); the API keeps serving the file
            log.exception("the view's tailer stopped")
            self.error = f"tailer stopped: {exc}"
        finally:
            for client in (consumer, self._group_offsets):
                if client is not None:
                    client.close()

    def _loop(self, consumer: Consumer) -> None:
        from consumers.service import FoldEdge

        read_run = FoldEdge.default().read_run
        next_metadata = next_lag = 0.0
        next_expire = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_metadata:
                self._assign_new(consumer)
                next_metadata = now + _METADATA_EVERY_S
            if now >= next_expire:
                self.writer.expire_events(int(time.time() * 1000) - self.retention_ms)
                next_expire = now + _EXPIRE_EVERY_S
            messages = consumer.consume(_BATCH, timeout=0.2) if self._assigned else []
            if not self._assigned:
                self._stop.wait(0.5)
            batch = self._batch(messages, read_run)
            if batch:
                change = self.writer.apply(batch)
                if batch.runs or batch.forgotten:
                    self._on_change(change)
            if now >= next_lag or (not messages and not self.caught_up.is_set()):
                self._measure_lag(consumer)
                next_lag = time.monotonic() + _LAG_EVERY_S

    def _assign_new(self, consumer: Consumer) -> None:
        try:
            metadata = consumer.list_topics(timeout=5.0)
        except KafkaException as exc:
            self.error = f"cannot read topic metadata: {exc.args[0].str() if exc.args else exc}"
            return
        stored = self.writer.offsets()
        new: list[TopicPartition] = []
        for topic in (self.runs_topic, self.violations_topic, self.events_topic):
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                continue
            for partition in found.partitions:
                if (topic, partition) not in self._assigned:
                    offset = stored.get((topic, partition), OFFSET_BEGINNING)
                    new.append(TopicPartition(topic, partition, offset))
        if new:
            consumer.incremental_assign(new)
            self._assigned.update((tp.topic, tp.partition) for tp in new)
            self.caught_up.clear()
        self.error = None if self._assigned else (
            f"waiting for topics {self.runs_topic}, {self.violations_topic}, {self.events_topic}"
        )

    def _batch(self, messages: list[Message], read_run: Callable[[bytes], Any]) -> ViewBatch:
        batch = ViewBatch()
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    self.error = f"{msg.topic()}: {error.str()}"
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            if topic is None or partition is None or offset is None:
                continue
            batch.offsets[(topic, partition)] = offset + 1
            self.records += 1
            kafka_ms = msg.timestamp()[1]
            value = msg.value()
            try:
                if topic == self.events_topic:
                    self._rate[kafka_ms // 1000] += 1
                    if value is not None:
                        event = decode_event(value)
                        batch.events.append(
                            EventRow(str(event.run_id), event.seq, kafka_ms, event.kind.type,
                                     value)
                        )
                elif topic == self.runs_topic:
                    key = (msg.key() or b"").decode()
                    if value is None:
                        batch.runs.pop(key, None)
                        batch.forgotten.add(key)
                    else:
                        batch.forgotten.discard(key)
                        batch.runs[key] = run_row(read_run(value), kafka_ms)
                elif topic == self.violations_topic and value is not None:
                    v = decode_violation(value)
                    batch.violations.append(
                        ViolationRow(partition, offset, str(v.run_id), v.kind.value,
                                     v.first_seq, v.last_seq, v.message, kafka_ms)
                    )
            except (RunfoldError, ValueError) as exc:
                self.undecodable += 1
                log.debug("skipped %s[%d]@%d: %s", topic, partition, offset, exc)
        self._trim_rate()
        return batch

    def _trim_rate(self) -> None:
        if len(self._rate) > 4 * _RATE_WINDOW_S:
            keep = int(time.time()) - 2 * _RATE_WINDOW_S
            for second in [s for s in self._rate if s < keep]:
                del self._rate[second]

    def _measure_lag(self, consumer: Consumer) -> None:
        """Records between the view's position and each partition's end, per topic."""
        tps = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        if not tps:
            return
        try:
            positions = consumer.position(tps)
        except KafkaException:
            return
        stored = self.writer.offsets()
        lag: dict[str, int | None] = {}
        for tp in positions:
            low, high = self._watermarks(consumer, tp)
            if high < 0:
                lag[tp.topic] = None
                continue
            at = tp.offset if tp.offset >= 0 else stored.get((tp.topic, tp.partition), low)
            behind = max(0, high - max(at, low))
            current = lag.get(tp.topic, 0)
            lag[tp.topic] = None if current is None else current + behind
        self._lag = lag
        if lag and all(value == 0 for value in lag.values()):
            self.caught_up.set()
        self._fold_lag = self._measure_fold_lag(consumer)

    def _measure_fold_lag(self, consumer: Consumer) -> int | None:
        """Records of the events topic the folding group has not committed yet."""
        group = self._group_offsets
        tps = [TopicPartition(t, p) for t, p in sorted(self._assigned) if t == self.events_topic]
        if group is None or not tps:
            return None
        try:
            committed = group.committed(tps, timeout=2.0)
        except KafkaException:
            return None  # the coordinator is not there yet: unknown until the next try
        behind = 0
        for tp in committed:
            low, high = self._watermarks(consumer, tp)
            if high < 0:
                return None
            behind += max(0, high - (tp.offset if tp.offset >= 0 else max(low, 0)))
        return behind

    def _watermarks(self, consumer: Consumer, tp: TopicPartition) -> tuple[int, int]:
        """(low, high) of a partition as the last fetch response said (no request per
        partition: those took up to a second each); the last known ones while a fetch
        has not said yet; (-1, -1) before any."""
        key = (tp.topic, tp.partition)
        try:
            low, high = consumer.get_watermark_offsets(tp, cached=True)
        except KafkaException:
            low = high = -1
        if high >= 0:
            self._known_watermarks[key] = (low, high)
            return low, high
        return self._known_watermarks.get(key, (-1, -1))
