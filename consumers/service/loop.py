"""The folding service: consume ``agent-run-events``, fold, produce, exactly once.

One :class:`FoldService` is one consumer-group member. Its loop::

    consume a batch ──▶ lane decoder (C) ──▶ common records: fold_next (the one rule)
                        └─▶ the rest: decode ─(bad)─▶ DLQ record
                                    └──▶ apply_event ──▶ violations (produced as they come)
    every batch_size events or txn_interval_ms:
        produce the latest RunState of each run changed ──▶ agent-runs (same partition)
        send_offsets_to_transaction(next offsets, group metadata)
        commit_transaction()

Everything produced between ``begin_transaction()`` and ``commit_transaction()``
(states, violations, DLQ records) and the consumed offsets commit together; a
``read_committed`` reader sees all of it or none of it. The pure fold lives in
:mod:`consumers` (:mod:`consumers.sequence`); the owned runs in a
:class:`~consumers.service.store.PartitionStore`; this module is the loop around them.

Failure handling, by the class of the error (``KafkaException.args[0]``):

- retriable → retry the call, a bounded number of times;
- ``txn_requires_abort()`` → abort, drop the in-memory state of every owned
  partition, restore it from ``agent-runs`` and seek back to the committed offsets;
- fatal but not fencing, or retries outlasted (a broker failover, quorum lost, an
  idempotent producer's fatal error) → :meth:`FoldService._recover`: drop the open
  transaction, build a new producer with the same ``transactional.id`` (its
  ``init_transactions`` settles the old transaction and fences any zombie of this
  instance), and a new consumer if the old one failed; restore the owned partitions and
  seek back to the committed offsets; go on. Bounded backoff, at most
  ``max_recoveries`` in a row;
- fenced by a newer instance, a permanent error (authorization, versions) or any error
  of unknown class → :class:`ServiceStopped`: stop, commit nothing. Two fencing
  look-alikes of a failover are recovered instead (docs/guarantees.md, Errors): the
  group's fencing of the consumer when the producer epoch is still current
  (:meth:`FoldService._confirm_not_fenced`), and an epoch fencing after this instance was
  stuck past ``transaction.timeout.ms`` without being paused (``_txn_timed_out``).

Rebalances (eager assignment): on revoke the in-flight transaction is committed
(or aborted if that fails) and the state dropped; on lost it is aborted; on
assign the partitions' runs are restored before any of their records is folded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from consumers.sequence import fold_next
from consumers.service.config import (
    Guarantee,
    OutputLimits,
    ServiceConfig,
    consumer_config,
    output_limits,
    producer_config,
)
from consumers.service.dlq import DeadLetter, dead_letter_headers, fit_dead_letter
from consumers.service.edge import FoldEdge
from consumers.service.errors import (
    ClientsFailed,
    ErrorPolicy,
    ServiceStopped,
    TransactionAbort,
)
from consumers.service.oversize import StateTooLarge, shrink_to_fit
from consumers.service.restore import position
from consumers.service.stats import ServiceStats
from consumers.service.store import PartitionStore
from consumers.state import Outcome, RunState
from schemas.errors import RunfoldError

__all__ = [
    "FoldService",
    "ServiceConfig",
    "ServiceStopped",
    "Guarantee",
]

log = logging.getLogger("runfold.consume")

_Abort = TransactionAbort
_IDLE_WAIT = 0.2
"""Longest wait of one consume call (then the loop checks for stop and idleness)."""
_ALREADY_THERE = 0.001
"""A poll answered sooner than this found its record already fetched."""
_FIRST_BACKOFF = 0.5
"""Wait before the first client rebuild in a row (doubled for each next one)."""
_PAUSE = 2.0
"""A gap this long between two ticks of :class:`_PauseWatch` means the process was
paused (SIGSTOP, a frozen VM), not busy: a pause is how an instance becomes a zombie."""
_STEADY_AFTER = 300.0
"""A rebuild this long after the previous one is not "in a row" even without a commit
(an idle service commits nothing, yet months of occasional failovers are not a loop)."""


class FoldService:
    """One member of the folding consumer group (see the module docstring)."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        edge: FoldEdge | None = None,
        stats: ServiceStats | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.edge: FoldEdge = edge if edge is not None else FoldEdge.default()
        self._store = PartitionStore(self.edge)
        self.stats = stats if stats is not None else ServiceStats()
        self._clock = clock
        self._eos = config.guarantee == "exactly-once"
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        # The open transaction (or, at-least-once, the uncommitted batch).
        self._in_txn = False
        self._txn_started = 0.0
        # When the records of the latest consume may have started waiting: a transaction
        # they open is due txn_interval_ms after that (see _next_records).
        self._waiting_since = 0.0
        self._returned = 0.0
        self._txn_events = 0
        self._txn_stats = ServiceStats()
        self._dirty: dict[int, set[bytes]] = {}
        self._next_offsets: dict[int, int] = {}
        self._delivery_failures: list[str] = []
        # Record size limits of agent-runs and the DLQ (read at start, see run()).
        self._limits = OutputLimits(1_000_000, 1_000_000)
        self._stopping = False
        self._assigned_at = 0.0
        # Partitions assigned and restored (set by on_assign, cleared on revoke/lost).
        self._assigned = False
        self._errors = ErrorPolicy(config, in_transaction=lambda: self._eos and self._in_txn)
        # Runs whose state failed to encode at a commit: checked after each general-path
        # record until a commit writes them (see _state_records).
        self._guarded: set[bytes] = set()
        # Client rebuilds in a row (see _recover), and what "in a row" is measured from.
        self._rebuilds_in_row = 0
        self._transactions_at_rebuild = 0
        self._rebuilt_at = 0.0
        # The last moment this instance was known to be fine: a commit, an idle turn with
        # its partitions assigned, a finished rebuild (see _txn_timed_out).
        self._healthy_at = 0.0

    # ------------------------------------------------------------------ clients

    def _consumer_config(self) -> dict[str, Any]:
        return consumer_config(self.config, error_cb=self._errors.on_error)

    def _producer_config(self) -> dict[str, Any]:
        return producer_config(self.config, error_cb=self._errors.on_error, limits=self._limits)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_failures.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> ServiceStats:
        """Consume until stopped (:meth:`stop`), idle for ``until_idle`` or an error.

        Returns the stats; raises :class:`ServiceStopped` on a fatal or fenced error,
        after closing the clients without committing anything more.
        """
        # What does not fit its topic is truncated before produce(), never a reason to stop.
        self._limits = output_limits(self.config)
        watch = _PauseWatch()
        self._errors.timed_out = lambda: self._txn_timed_out(watch)
        self._healthy_at = self._clock()
        clean = False
        try:
            try:
                # The producer first: a newer instance has fenced its predecessor's epoch
                # before it joins the group (what _confirm_not_fenced relies on).
                self._start_producer()
                self._start_consumer()
            except ClientsFailed as failure:
                # Brokers unreachable at start (a failover under way): the same recovery.
                self._recover(failure)
            self._loop()
            clean = True
        finally:
            watch.stop()
            self._close(clean)
        return self.stats

    def _txn_timed_out(self, watch: _PauseWatch) -> bool:
        """True when this instance has been stuck (no commit, no healthy idle turn) for
        longer than ``transaction.timeout.ms`` and the process was not paused meanwhile:
        an epoch fencing then comes from the coordinator's abort of a transaction of its
        own (or of its own epoch bump whose answer was lost), not from a newer instance,
        which fences an instance that goes on committing (docs/guarantees.md)."""
        if not self._eos:
            return False
        stuck = self._clock() - self._healthy_at
        return stuck * 1000 > self.config.transaction_timeout_ms and not watch.paused_since(
            time.monotonic() - stuck
        )

    def _start_producer(self) -> None:
        producer = Producer(self._producer_config(), on_delivery=self._on_delivery)
        self._producer = producer
        self._errors.reset(producer)
        if self._eos:
            # Same transactional.id as any producer before it: this settles (completes or
            # aborts) the transaction a previous one left open and fences it.
            self._errors.call("init_transactions", lambda: producer.init_transactions(30))

    def _start_consumer(self) -> None:
        consumer = Consumer(self._consumer_config())
        self._consumer = consumer
        # Partitions are restored by _on_assign once the group assigns them.
        self._errors.call(
            "subscribe",
            lambda: consumer.subscribe(
                [self.config.events_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            ),
        )

    def stop(self) -> None:
        """Ask the loop to finish: the open transaction is committed, then it returns."""
        self._stopping = True

    def _producer_or_fail(self) -> Producer:
        if self._producer is None:
            raise ServiceStopped("the producer is not started")
        return self._producer

    def _consumer_or_fail(self) -> Consumer:
        if self._consumer is None:
            raise ServiceStopped("the consumer is not started")
        return self._consumer

    def _close(self, clean: bool) -> None:
        consumer, producer = self._consumer, self._producer
        if not clean and self._in_txn:
            # Failing: never commit. Try to abort (best effort: a fenced producer cannot,
            # and then the broker aborts it on timeout or when the successor starts).
            self._in_txn = False
            if producer is not None and self._eos:
                try:
                    producer.abort_transaction(5)
                except KafkaException as exc:
                    log.info("abort on the way out: %s", exc)
        if consumer is not None:
            try:
                # No commit happens here: auto-commit is off and a fenced or failed
                # instance must leave its offsets where the last good commit put them.
                # The revoke/lost callbacks this triggers find no open transaction.
                consumer.close()
            except (KafkaException, RunfoldError) as exc:
                log.warning("closing the consumer: %s", exc)
        self._consumer = self._producer = None
        if producer is not None and clean:
            producer.flush(10)

    def _loop(self) -> None:
        cfg = self.config
        last_record = self._clock()
        finishing = False
        committed = self.stats.transactions
        while True:
            try:
                try:
                    if finishing or self._stopping:
                        if self._in_txn:
                            self._commit()
                        return
                    # Asked each time: a recovery may have replaced it.
                    msgs = self._next_records(self._consumer_or_fail())
                    got = self._fold_batch(msgs) if msgs else 0
                    now = self._clock()
                    if got:
                        last_record = now
                    if self._in_txn and (
                        self._txn_events >= cfg.batch_size
                        or (now - self._txn_started) * 1000 >= cfg.txn_interval_ms
                    ):
                        self._commit()
                except _Abort:
                    # When finishing, the next turn finds nothing open and returns.
                    self._abort_and_rewind()
                    last_record = self._clock()
                    continue
            except ClientsFailed as failure:
                # Raised by a call, an abort, or a rebalance callback (through consume()).
                # What the dropped transaction held is folded again before --until-idle
                # may finish; a stop does not wait for that (the next start folds it).
                self._recover(failure)
                finishing = False
                last_record = self._clock()
                continue
            now = self._clock()
            if self.stats.transactions != committed or (self._assigned and not self._in_txn):
                committed = self.stats.transactions
                self._healthy_at = now
            if not self._assigned:
                # --until-idle counts only while partitions are assigned and restored: on a
                # fresh broker the first join alone can outlast it, and exiting then folds
                # nothing.
                last_record = now
            elif self._assigned_at > last_record:
                last_record = self._assigned_at
            if cfg.until_idle is not None and now - last_record >= cfg.until_idle:
                log.info("idle for %.1fs, finishing", cfg.until_idle)
                finishing = True

    def _next_records(self, consumer: Consumer) -> list[Message]:
        """The next records, waiting no longer than the open transaction's deadline.

        ``consume(n, timeout)`` returns only when it has ``n`` records or the timeout has
        passed, so at a low rate every call would sit out its whole timeout: that wait was
        most of the end-to-end latency. With no transaction open, ``poll`` returns on the
        first record and whatever else is already fetched joins it; with one open, records
        are gathered until its ``txn_interval_ms`` deadline.
        """
        cfg = self.config
        call = self._errors.call
        if self._in_txn:
            left = self._txn_started + cfg.txn_interval_ms / 1000 - self._clock()
            wait = min(max(left, 0.0), _IDLE_WAIT)
            msgs = call("consume", lambda: consumer.consume(cfg.batch_size, wait))
            self._returned = self._clock()
            return msgs
        asked = self._clock()
        first = call("consume", lambda: consumer.poll(_IDLE_WAIT))
        if first is None:
            self._returned = self._clock()
            return []
        # A record that was already fetched may have waited since the previous consume
        # returned (through the commit in between, typically): its transaction's deadline
        # counts from then, so no record waits a commit plus a whole interval. A poll that
        # had to wait was answered by a record that just arrived.
        answered = self._clock()
        self._waiting_since = answered if answered - asked > _ALREADY_THERE else self._returned
        msgs = [first]
        if cfg.batch_size > 1:
            # A failure here leaves ``first`` unfolded and uncommitted: an abort rewinds to
            # the committed offsets and a stop commits nothing, so it is read again.
            msgs += call("consume", lambda: consumer.consume(cfg.batch_size - 1, 0))
        self._returned = self._clock()
        return msgs

    # ------------------------------------------------------------------ folding

    def _ensure_txn(self) -> None:
        if self._in_txn:
            return
        if self._eos:
            self._errors.call("begin_transaction", self._producer_or_fail().begin_transaction)
        self._in_txn = True
        self._txn_started = max(self._waiting_since, self._clock() - _IDLE_WAIT)
        self._txn_events = 0
        self._txn_stats = ServiceStats()
        self._delivery_failures.clear()

    def _fold_batch(self, msgs: list[Message]) -> int:
        """Fold a consumed batch; returns how many records (not errors) it held.

        The edge's lane decoder reads the common records straight from their bytes (the
        next event of a run under way, of a kind that only counts: most of them) and
        :func:`~consumers.sequence.fold_next` applies them by the one next-event rule;
        every other record, and each one the rule declines, takes :meth:`_fold_record`.
        One loop in order, so each run's records keep their order. The lane's counts are
        added once per batch: nothing commits or aborts in the middle of a batch.
        """
        lane = self.edge.lane
        decoded = lane.read(msgs) if lane is not None else None
        runs_of, unchecked = self._store.runs, self._store.unchecked
        dirty_of, next_offsets = self._dirty, self._next_offsets
        got = fast = 0
        for index, msg in enumerate(msgs):
            values = decoded[index] if decoded is not None else None
            if values is not None:
                partition, key, offset, seq, timestamp, tag, digest = values
                runs = runs_of.get(partition)
                state = runs.get(key) if runs is not None else None
                if (
                    state is not None
                    and offset > state.source_offset
                    and key not in unchecked
                    and fold_next(state, seq, timestamp, tag, digest)
                ):
                    state.source_offset = offset
                    next_offsets[partition] = offset + 1
                    dirty = dirty_of.get(partition)
                    if dirty is None:
                        dirty = dirty_of[partition] = set()
                    dirty.add(key)
                    fast += 1
                    continue
            err = msg.error()
            if err is not None:
                self._errors.consumer_error(err)
                continue
            got += 1
            self._ensure_txn()
            self._fold_record(msg)
        if fast:
            self._ensure_txn()
            self._txn_stats.add_applied(fast)
            self._txn_events += fast
        return got + fast

    def _fold_record(self, msg: Message) -> None:
        """The general path of one record: decode, checks, fold, outputs, counts."""
        partition, offset = position(msg)
        stats = self._txn_stats
        self._txn_events += 1
        # The next offset to read is tracked here, not asked of position(): after a
        # seek position() can be invalid, and transaction markers take offsets.
        self._next_offsets[partition] = offset + 1
        key = msg.key()
        value = msg.value()
        edge = self.edge
        try:
            event = edge.decode_event(value or b"", msg.topic(), partition, offset)
        except RunfoldError as exc:
            self._dead_letter(msg, getattr(exc, "reason", "invalid-value"), exc)
            return
        if key is None:
            missing = _KeyError("record has no key; expected the run_id")
            self._dead_letter(msg, "missing-key", missing)
            return
        # Runs are kept by their key bytes. A key seen before was checked against its
        # run's id when the run was created; comparing the ids (ints) is enough then.
        state = self._store.get(partition, key)
        if state is None or state.run_id != event.run_id:
            run_id = str(event.run_id)
            if key != run_id.encode():
                text = key.decode("utf-8", "replace")
                mismatch = _KeyError(f"key {text!r} is not the event's run_id {run_id}")
                self._dead_letter(msg, "key-mismatch", mismatch)
                return
        if state is not None and state.source_offset >= offset:
            # At-least-once replay after a crash: this event is already in the state.
            stats.consumed += 1
            stats.replayed += 1
            return
        # A guarded run (its state failed to encode at a commit) keeps its state from
        # before each record, to roll back to if this record breaks it.
        before = state.copy() if state is not None and key in self._guarded else None
        try:
            # value is the bytes just decoded, so it is not None here.
            state, outcomes = edge.apply(state, event, edge.digest(value))  # type: ignore[arg-type]
        except RunfoldError as exc:
            self._dead_letter(msg, "fold-rejected", exc)
            return
        if key in self._guarded:
            broken = _encoding_error(edge, state)
            if broken is not None:
                if before is not None:
                    self._store.put(partition, key, before)
                self._dead_letter(msg, "unencodable-state", broken)
                return
        state.source_offset = offset
        self._store.put(partition, key, state)
        dirty = self._dirty.get(partition)
        if dirty is None:
            dirty = self._dirty[partition] = set()
        dirty.add(key)
        self._record_outcomes(key, outcomes)

    def _record_outcomes(self, key: bytes, outcomes: list[Outcome], consumed: int = 1) -> None:
        """Count the fold's outcomes of ``consumed`` records and publish their violations."""
        stats = self._txn_stats
        stats.add(outcomes, consumed)
        for outcome in outcomes:
            if outcome.violations:
                producer = self._producer_or_fail()
                for violation in outcome.violations:
                    self._produce(
                        producer,
                        self.config.violations_topic,
                        key=key,
                        value=self.edge.encode_violation(violation),
                    )
                    stats.violations_emitted += 1

    def _expire_buffers(self) -> None:
        """Declare the gaps of reorder buffers left behind by their partition's stream time.

        A run's own clock moves only with its own events, so a run whose lost event is
        followed by nothing (its ``graph_completed`` buffered behind the gap) would wait
        for ever; the partition's clock moves with every run. Runs in the open transaction
        are observed first, then every watched buffer is held to the bound. What it
        releases is counted (no record is consumed) and its run written with the rest.
        """
        for partition, keys in self._dirty.items():
            self._store.observe(partition, keys)
        for partition, key, outcomes in self._store.expire(self.edge.config):
            self._dirty.setdefault(partition, set()).add(key)
            self._record_outcomes(key, outcomes, consumed=0)

    def _dead_letter(self, msg: Message, reason: str, exc: BaseException) -> None:
        letter = DeadLetter(
            reason=reason,
            error=str(exc),
            source_topic=msg.topic() or "",
            source_partition=msg.partition() or 0,
            source_offset=msg.offset() or 0,
            exception=type(exc).__name__,
        )
        key, value, headers = fit_dead_letter(
            msg.key(), msg.value(), dead_letter_headers(letter), self._limits.dlq
        )
        self._produce(
            self._producer_or_fail(), self.config.dlq_topic, key=key, value=value, headers=headers
        )
        self._txn_stats.consumed += 1
        self._txn_stats.dlq += 1
        self._txn_stats.dlq_reasons[reason] += 1

    def _produce(
        self,
        producer: Producer,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"key": key, "value": value}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                producer.produce(topic, **kwargs)
                return
            except BufferError:
                # Local queue full: serve delivery reports until there is room.
                self._errors.poll_producer(producer, 0.05)
            except KafkaException as exc:
                self._errors.classify("produce", exc, last=False)
                self._errors.poll_producer(producer, 0.1)

    # ------------------------------------------------------------------ commit / abort

    def _commit(self) -> None:
        """Produce the changed runs, commit them with the offsets, count the work.

        Every changed state is encoded (and shrunk to fit, :mod:`~consumers.service.oversize`)
        before anything is produced; a state that cannot be encoded aborts the transaction
        instead (:meth:`_state_records`), never raises out of here otherwise.
        """
        producer = self._producer_or_fail()
        consumer = self._consumer_or_fail()
        self._expire_buffers()
        # Encoded (and shrunk) before anything is flushed or produced: a state that cannot
        # be encoded aborts here, and the violations a shrink declares are delivered with
        # the others, before the states (at-least-once).
        records = self._state_records()
        if not self._eos:
            # At-least-once: the violations and dead letters are delivered before the states
            # that record them. A state that outlived a crash would make the replayed
            # records look folded, and what they emitted would be lost, not repeated.
            self._flush_outputs()
        for partition, key, value in records:
            # Same partition number as the input: agent-runs is co-partitioned,
            # so the restore of input partition p reads agent-runs partition p.
            self._produce(
                producer,
                self.config.runs_topic,
                key=key,
                value=value,
                partition=partition,
            )
        written = len(records)
        offsets = [
            TopicPartition(self.config.events_topic, p, off)
            for p, off in self._next_offsets.items()
        ]
        if self._eos:
            if offsets:
                self._errors.call(
                    "send_offsets_to_transaction",
                    lambda: producer.send_offsets_to_transaction(
                        offsets, consumer.consumer_group_metadata(), 30
                    ),
                )
            self._errors.call("commit_transaction", lambda: producer.commit_transaction(60))
        else:
            self._flush_outputs()
            if offsets:
                self._errors.call(
                    "commit", lambda: consumer.commit(offsets=offsets, asynchronous=False)
                )
        self._txn_stats.runs_written += written
        self._txn_stats.transactions += 1
        self.stats.merge(self._txn_stats)
        self._reset_txn()

    def _state_records(self) -> list[tuple[int, bytes, bytes]]:
        """``(partition, key, value)`` of every changed run's ``agent-runs`` record.

        A state too large is shrunk in place until it fits; the outcomes of events its
        reorder buffer released on the way are published and counted with this
        transaction. A state that cannot be encoded (a fold bug, or a value the codec
        let through) must not stop the service: the transaction is aborted and its
        partitions rewound (:class:`TransactionAbort`), and the run is *guarded*: when
        its records come again, :meth:`_fold_record` checks its state after each one
        and sends the record that breaks it to the DLQ (``unencodable-state``), the
        run rolled back to its state before that record.
        """
        records: list[tuple[int, bytes, bytes]] = []
        broken: list[str] = []
        encode, limit, config = self.edge.encode_state, self._limits.runs, self.edge.config
        for partition, keys in self._dirty.items():
            runs = self._store.runs.get(partition, {})
            for key in keys:
                state = runs.get(key)
                if state is None:
                    continue
                try:
                    fitted = shrink_to_fit(key, state, encode, limit, config)
                except StateTooLarge as exc:
                    # Only a topic limit below a few KiB gets here: a setting to fix, said
                    # loudly; the run's previous version stays in agent-runs.
                    log.error("%s", exc)
                    continue
                except Exception as exc:  # noqa: BLE001 - any failure to encode, see above
                    if key in self._guarded:
                        # Its records were checked one by one and it still fails: not one
                        # record's doing (a restored or rebuilt state). Rewinding again
                        # would meet it again; its previous version stays in agent-runs.
                        log.error("state of run %s cannot be encoded, not written: %s",
                                  key.decode("utf-8", "replace"), exc)
                        continue
                    self._guarded.add(key)
                    broken.append(f"{key.decode('utf-8', 'replace')}: {exc}")
                    continue
                self._guarded.discard(key)
                records.append((partition, key, fitted.value))
                if fitted.outcomes:  # released events: consumed and counted before
                    self._record_outcomes(key, fitted.outcomes, consumed=0)
        if broken:
            log.error(
                "%d run states cannot be encoded (%s): aborting; their records are folded "
                "again one by one and the one that breaks a state goes to the DLQ",
                len(broken),
                "; ".join(broken[:3]),
            )
            raise _Abort("unencodable state")
        return records

    def _flush_outputs(self) -> None:
        """At-least-once: wait until everything produced is delivered, or abort the batch."""
        producer = self._producer_or_fail()
        remaining = self._errors.call("flush", lambda: producer.flush(60))
        if remaining or self._delivery_failures:
            failures = "; ".join(self._delivery_failures[:5])
            log.warning("at-least-once batch not fully delivered (%s): %s", remaining, failures)
            raise _Abort("delivery failed")

    def _reset_txn(self) -> None:
        self._in_txn = False
        self._txn_events = 0
        self._txn_stats = ServiceStats()
        self._dirty = {}
        self._next_offsets = {}

    def _abort(self) -> None:
        """Abort the open transaction (exactly-once) and drop its share of the counts.
        An abort that fails stops the service: nothing of it may commit later."""
        if self._eos and self._in_txn:
            try:
                self._errors.call(
                    "abort_transaction", lambda: self._producer_or_fail().abort_transaction(30)
                )
            except _Abort as exc:
                raise ServiceStopped(f"abort_transaction failed: {exc}") from exc
        self._reset_txn()
        self.stats.aborts += 1

    def _abort_and_rewind(self) -> None:
        """Abort, forget the owned state, restore it and seek back to the committed offsets."""
        self._abort()
        partitions = self._store.partitions()
        self._store.clear()
        self._rewind(partitions)

    def _rewind(self, partitions: list[int]) -> None:
        """Restore ``partitions`` (their state must be cleared) and seek each one back to
        its committed offset."""
        if not partitions:
            return
        consumer = self._consumer_or_fail()
        self._restore(partitions)
        tps = [TopicPartition(self.config.events_topic, p) for p in partitions]
        committed = self._errors.call("committed", lambda: consumer.committed(tps, timeout=30))
        for tp in committed:
            if tp.offset < 0:
                tp.offset = OFFSET_BEGINNING
            self._seek(consumer, tp)
        log.info("rewound partitions %s to their committed offsets", partitions)

    # ------------------------------------------------------------------ recovery

    def _recover(self, failure: ClientsFailed) -> None:
        """Rebuild the clients after ``failure`` and go on from the last commit.

        Exactly-once holds because nothing of the open transaction survives: it is
        dropped here (its state, offsets and counts), the new producer's
        ``init_transactions`` (same ``transactional.id``) completes or aborts it on the
        broker, and the state is restored from ``agent-runs`` (read_committed) for the
        offsets committed with it. The consumer is rebuilt only when it failed itself:
        then the group assigns its partitions again (static membership: the same ones,
        without a rebalance) and :meth:`_on_assign` restores them; otherwise its assigned
        partitions are restored and rewound here. A rebuild that fails is retried after
        a doubling backoff (at most ``recovery_backoff_max_s``); after
        ``max_recoveries`` in a row without a commit the service stops.
        """
        cfg = self.config
        now = self._clock()
        if (
            self.stats.transactions > self._transactions_at_rebuild
            or now - self._rebuilt_at > _STEADY_AFTER
        ):
            self._rebuilds_in_row = 0
        interrupted = dict(self._next_offsets) if self._in_txn else {}
        interrupted_stats = self._txn_stats
        dropped_open = self._in_txn
        consumer_too = failure.consumer
        if failure.suspect:
            self._confirm_not_fenced(failure)
        while True:
            self._rebuilds_in_row += 1
            if self._rebuilds_in_row > cfg.max_recoveries:
                raise ServiceStopped(
                    f"giving up after {cfg.max_recoveries} client rebuilds in a row without "
                    f"a commit; last failure: {failure}"
                ) from failure
            wait = min(
                _FIRST_BACKOFF * 2 ** (self._rebuilds_in_row - 1), cfg.recovery_backoff_max_s
            )
            log.warning(
                "recovering from %s: new %s in %.1fs (rebuild %d in a row)",
                failure,
                "producer and consumer" if consumer_too else "producer",
                wait,
                self._rebuilds_in_row,
            )
            self._drop_clients(consumer=consumer_too)
            if not self._pause(wait):
                return  # stopping: nothing is open, the next start goes on from the commit
            try:
                self._start_producer()
                if self._consumer is None:
                    self._start_consumer()
                self._settle_interrupted(interrupted, interrupted_stats, dropped_open)
                interrupted, dropped_open = {}, False
                if not consumer_too:
                    self._rewind_assigned()
            except ClientsFailed as again:
                failure = again
                consumer_too = consumer_too or again.consumer
                continue
            break
        self.stats.recoveries += 1
        self._transactions_at_rebuild = self.stats.transactions
        self._rebuilt_at = self._healthy_at = self._clock()
        log.warning(
            "recovered: new %s, going on from the committed offsets",
            "producer and consumer" if consumer_too else "producer",
        )

    def _confirm_not_fenced(self, failure: ClientsFailed) -> None:
        """Stop (exit 3) unless the group's fencing of this consumer was its own doing.

        A newer instance with this id calls ``init_transactions`` before it joins the
        group, so it has bumped this producer's epoch by then; a consumer that rejoined
        by itself after its coordinator moved (librdkafka does, in a failover) has not.
        The old producer asks the transaction coordinator (abort the open transaction,
        then the fencing probe) *before* a new one is built: a new ``init_transactions``
        would fence the newer instance instead.
        """
        producer, consumer = self._producer, self._consumer
        if not self._eos or producer is None or consumer is None:
            raise ServiceStopped(f"{failure}. Stopping without committing.", fenced=True)
        try:
            if self._in_txn:
                self._errors.call("abort_transaction", lambda: producer.abort_transaction(30))
            self._in_txn = False
            self._errors.verify_not_fenced(consumer, self.config.events_topic, [])
        except (ClientsFailed, TransactionAbort) as exc:
            raise ServiceStopped(
                f"{failure}; whether a newer instance took over could not be checked "
                f"({exc}). Stopping without committing.",
                fenced=True,
            ) from exc
        log.warning(
            "%s, but this instance's producer epoch is current: no newer instance took over "
            "(its own rejoin after the coordinator moved)",
            failure,
        )

    def _drop_clients(self, *, consumer: bool) -> None:
        """Forget the open transaction and let go of the producer (and the consumer)."""
        self._reset_txn()
        self._store.clear()
        self._assigned = False
        producer, self._producer = self._producer, None
        self._errors.reset(None)
        if producer is not None:
            if self._eos:
                try:
                    # Best effort, to free the partitions sooner; the next producer's
                    # init_transactions aborts it in any case.
                    producer.abort_transaction(5)
                except KafkaException as exc:
                    log.info("abort with the failed producer: %s", exc)
            try:
                # Records still queued belong to the dropped transaction (or, at-least-once,
                # to a batch whose offsets never commit): they must not be sent. A producer
                # in a fatal state raises its error here too: it is dropped all the same.
                producer.purge()
                producer.flush(0)
            except KafkaException as exc:
                log.info("purging the failed producer: %s", exc)
        if consumer and self._consumer is not None:
            old, self._consumer = self._consumer, None
            try:
                # The revoke callback this triggers finds nothing open and nothing owned.
                old.close()
            except (KafkaException, RunfoldError) as exc:
                log.warning("closing the failed consumer: %s", exc)

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` unless asked to stop; False if asked to stop."""
        deadline = self._clock() + seconds
        while not self._stopping:
            left = deadline - self._clock()
            if left <= 0:
                return True
            time.sleep(min(left, _IDLE_WAIT))
        return False

    def _settle_interrupted(
        self, offsets: dict[int, int], stats: ServiceStats, dropped_open: bool
    ) -> None:
        """Count the dropped transaction: committed if its offsets are the committed ones
        (its commit succeeded but the answer was lost), else aborted."""
        if not dropped_open:
            return
        committed_all = False
        if offsets:
            consumer = self._consumer_or_fail()
            tps = [TopicPartition(self.config.events_topic, p) for p in offsets]
            # read_committed: the group coordinator answers once the transaction the new
            # producer settled is complete (KIP-447 require_stable).
            found = self._errors.call("committed", lambda: consumer.committed(tps, timeout=30))
            committed_all = all(tp.offset == offsets[tp.partition] for tp in found)
        if committed_all:
            log.warning("the interrupted transaction had committed (offsets %s)", offsets)
            stats.transactions += 1
            self.stats.merge(stats)
        else:
            self.stats.aborts += 1

    def _rewind_assigned(self) -> None:
        """Restore and rewind what the (kept) consumer has assigned now."""
        consumer = self._consumer_or_fail()
        assigned = self._errors.call("assignment", consumer.assignment)
        topic = self.config.events_topic
        partitions = sorted(tp.partition for tp in assigned if tp.topic == topic)
        self._rewind(partitions)
        self._assigned = bool(partitions)
        if partitions:
            self._assigned_at = self._clock()

    def _seek(self, consumer: Consumer, tp: TopicPartition) -> None:
        self._errors.call("seek", lambda: consumer.seek(tp))

    # ------------------------------------------------------------------ rebalance

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stats.rebalances += 1
        owned = sorted(tp.partition for tp in partitions)
        log.info("assigned %s partitions %s", self.config.events_topic, owned)
        # A zombie that rejoined after a long stop learns only here that it was replaced.
        self._errors.verify_not_fenced(consumer, self.config.events_topic, owned)
        self._store.clear()
        self._restore(owned)
        self._assigned_at = self._clock()
        self._assigned = True
        # Returning without assign(): the client assigns and starts each partition at
        # its committed offset (or earliest), which matches the state just restored.

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", sorted(tp.partition for tp in partitions))
        self._assigned = False
        try:
            if self._in_txn:
                try:
                    self._commit()
                except _Abort:
                    self._abort()
        finally:
            # Even when the commit failed for good (ClientsFailed, re-raised by consume()
            # and recovered from there): the partitions go, their state with them.
            self._store.clear()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member may already own these partitions: nothing of the open
        # transaction may commit.
        log.warning("partitions lost: %s", sorted(tp.partition for tp in partitions))
        self._assigned = False
        try:
            if self._in_txn:
                self._abort()
        finally:
            self._store.clear()

    def _restore(self, partitions: list[int]) -> None:
        """Restore the runs of ``partitions`` (:meth:`PartitionStore.restore`); a partition
        whose ``agent-runs`` is empty while offsets are committed is rebuilt from events."""
        if not partitions:
            return
        started = self._clock()
        total, empty = self._store.restore(
            self.config.kafka,
            self.config.runs_topic,
            partitions,
            timeout=self.config.transaction_timeout_ms / 1000 + 60,
        )
        if empty:
            self._rebuild_from_events(empty)
        self.stats.restores += 1
        self.stats.restored_runs += total
        log.info(
            "restored %d runs of partitions %s in %.2fs",
            total,
            partitions,
            self._clock() - started,
        )

    def _rebuild_from_events(self, partitions: list[int]) -> None:
        """``agent-runs`` has nothing for these partitions: if offsets were committed,
        fold the events before the committed offset again (outputs are not re-emitted)
        and write the rebuilt runs in the next transaction, so the changelog heals."""
        consumer = self._consumer_or_fail()
        tps = [TopicPartition(self.config.events_topic, p) for p in partitions]
        committed = self._errors.call("committed", lambda: consumer.committed(tps, timeout=30))
        for tp in committed:
            if tp.offset <= 0:
                continue
            log.warning(
                "%s[%d] is empty but offsets up to %d are committed: rebuilding its runs from %s",
                self.config.runs_topic,
                tp.partition,
                tp.offset,
                self.config.events_topic,
            )
            runs = self._store.rebuild(
                self.config.kafka, self.config.events_topic, tp.partition, tp.offset
            )
            if runs:
                self._ensure_txn()
                self._dirty.setdefault(tp.partition, set()).update(runs)


def _encoding_error(edge: FoldEdge, state: RunState) -> UnencodableState | None:
    """Why ``state`` cannot be encoded, or None when it can."""
    try:
        edge.encode_state(state)
    except Exception as exc:  # noqa: BLE001 - whatever stops the encoding
        error = UnencodableState(
            f"folding this record would leave run {state.run_id} with a state that cannot "
            f"be written to agent-runs ({type(exc).__name__}: {exc}); the run stays as it "
            "was before it"
        )
        error.__cause__ = exc
        return error
    return None


class UnencodableState(RunfoldError):
    """Folding a record would leave its run's state impossible to encode."""


class _PauseWatch:
    """Notices when the whole process was paused: a daemon thread ticks every 0.25 s and
    remembers when it last found a gap longer than :data:`_PAUSE` between two ticks."""

    def __init__(self) -> None:
        self._paused_at = float("-inf")
        self._last = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="runfold-pause-watch")
        self._thread.daemon = True
        self._thread.start()

    def _tick(self) -> None:
        while not self._done.wait(0.25):
            now = time.monotonic()
            if now - self._last > _PAUSE:
                self._paused_at = now
            self._last = now

    def paused_since(self, since: float) -> bool:
        """True if a pause ended after ``since`` (``time.monotonic()`` time), or one is
        under way (the last tick is overdue)."""
        # Just resumed, the thread has not ticked yet: the overdue tick says it.
        return self._paused_at >= since or time.monotonic() - self._last > _PAUSE

    def stop(self) -> None:
        self._done.set()


class _KeyError(RunfoldError):
    """The record's key does not name the run its event belongs to."""
