"""The folding service: consume ``agent-run-events``, fold, produce, exactly once.

One :class:`FoldService` is one consumer-group member. Its loop::

    consume a batch ──▶ lane decoder (C) ──▶ common records: fold_next (the one rule)
                        └─▶ the rest: decode ─(bad)─▶ DLQ record
                                    └──▶ apply_event ──▶ violations (produced as they come)
    every batch_size events or txn_interval_ms:
        produce each changed run's RunState ──▶ the changelog  (same partition)
                          and its RunSummary ──▶ agent-runs
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
  partition, restore it from the changelog and seek back to the committed offsets;
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

from confluent_kafka import (
    Consumer,
    KafkaException,
    Message,
)

from consumers.digest import content_digest
from consumers.lifecycle import forgotten, forgotten_outcome, judge
from consumers.next_event import fold_next
from consumers.service.base import IDLE_WAIT
from consumers.service.config import (
    Guarantee,
    ServiceConfig,
    output_limits,
)
from consumers.service.errors import (
    ClientsFailed,
    ServiceStopped,
    TransactionAbort,
)
from consumers.service.memory import release_freed_memory, trim_eagerly
from consumers.service.outputs import encoding_error
from consumers.service.recovery import PauseWatch, ServiceRecovery
from consumers.service.restore import position
from consumers.service.stats import ServiceStats
from schemas import Event
from schemas.errors import RunfoldError

__all__ = [
    "FoldService",
    "ServiceConfig",
    "ServiceStopped",
    "Guarantee",
]

log = logging.getLogger("runfold.consume")

_TRIM_AFTER = 1.0
"""Seconds without records (and no transaction open) before freed memory is given back."""

CONSUME_CHUNK = 1_000
"""Records asked of one ``consume()`` call at most; a transaction still gathers
``batch_size`` events over as many calls. Each record's ``Message``, key, value and lane
tuple are small Python objects that live until their chunk is folded: a 10,000-record
chunk held ~10 MB of them at once, and the long-lived objects made meanwhile (markers'
neighbours, paged runs, cache entries) pinned the arenas that peak touched. Asking 1,000
at a time left the week's RSS ~10 MiB lower (``runfold bench --stages week``) at the same
fold rate (docs/benchmarks.md, Issue 15)."""

_Abort = TransactionAbort
_ALREADY_THERE = 0.001
"""A poll answered sooner than this found its record already fetched."""


class FoldService(ServiceRecovery):
    """One member of the folding consumer group (see the module docstring).

    Its state is :class:`~consumers.service.base.ServiceBase`'s, its outputs
    :class:`~consumers.service.outputs.ServiceOutputs`'s, its rebalances, aborts and
    recovery :class:`~consumers.service.recovery.ServiceRecovery`'s."""

    def run(self) -> ServiceStats:
        """Consume until stopped (:meth:`stop`), idle for ``until_idle`` or an error.

        Returns the stats; raises :class:`ServiceStopped` on a fatal or fenced error,
        after closing the clients without committing anything more.
        """
        # What does not fit its topic is truncated before produce(), never a reason to stop.
        self._limits = output_limits(self.config)
        trim_eagerly()
        watch = PauseWatch()
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

    def stop(self) -> None:
        """Ask the loop to finish: the open transaction is committed, then it returns."""
        self._stopping = True

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
        trimmed = False  # freed memory given back since the last record (see below)
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
                        trimmed = False
                    elif not self._in_txn and self._store.seed():
                        trimmed = False  # restored heads read while idle (PartitionStore.seed)
                    elif not self._in_txn and self._store.page_out({}):
                        # Runs idle for --page-idle-after became bytes: nothing to write
                        # (the changelog has them), counted now (no commit is coming).
                        self.stats.runs_paged_out += self._store.take_counts().runs_paged_out
                        self.gauges = self._store.gauges()
                        trimmed = False
                    elif not trimmed and not self._in_txn and now - last_record >= _TRIM_AFTER:
                        # A burst is over: what its fetches and encodings freed goes back to
                        # the system, so the process's RSS is its state, not its busiest
                        # moment (a few ms, once per quiet spell).
                        release_freed_memory()
                        trimmed = True
                    if self._in_txn and (
                        self._txn_events >= cfg.batch_size
                        or (now - self._txn_started) * 1000 >= cfg.txn_interval_ms
                    ):
                        self._commit()
                    elif (
                        self._assigned
                        and not self._in_txn
                        and self._stalls.due(self._stalls.clock())
                    ):
                        # Idle: no commit would flag the runs gone silent; one is opened
                        # to write them and publish their violations.
                        self._ensure_txn()
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
        chunk = min(cfg.batch_size, CONSUME_CHUNK)
        if self._in_txn:
            left = self._txn_started + cfg.txn_interval_ms / 1000 - self._clock()
            wait = min(max(left, 0.0), IDLE_WAIT)
            msgs = call("consume", lambda: consumer.consume(chunk, wait))
            self._returned = self._clock()
            return msgs
        asked = self._clock()
        first = call("consume", lambda: consumer.poll(IDLE_WAIT))
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
        if chunk > 1:
            # A failure here leaves ``first`` unfolded and uncommitted: an abort rewinds to
            # the committed offsets and a stop commits nothing, so it is read again.
            msgs += call("consume", lambda: consumer.consume(chunk - 1, 0))
        self._returned = self._clock()
        return msgs

    def _fold_batch(self, msgs: list[Message]) -> int:
        """Fold a consumed batch; returns how many records (not errors) it held.

        The edge's lane decoder reads the common records straight from their bytes (the
        next event of a run under way, of a kind that only counts: most of them) and
        :func:`~consumers.next_event.fold_next` applies them by the one next-event rule;
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
        edge.learn_framing(value or b"")  # a Confluent id the lane may read from now on
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
        if state is None and self._known_otherwise(partition, key, event):
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
            state, outcomes = edge.apply(state, event)
        except RunfoldError as exc:
            self._dead_letter(msg, "fold-rejected", exc)
            return
        if key in self._guarded:
            broken = encoding_error(edge, state)
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

    def _known_otherwise(self, partition: int, key: bytes, event: Event) -> bool:
        """An event of a run not held whole: judged by its marker, or a ``forgotten_run``
        violation when it is older than the retention (:mod:`consumers.lifecycle`);
        True when it was (counted and published), False for a new run."""
        store = self._store
        marker = store.marker(partition, event.run_id)
        if marker is not None:
            outcome = judge(marker, event.run_id, event.seq, content_digest(event))
            self._txn_stats.marker_events += 1
        else:
            if not forgotten(event.timestamp, store.horizon.get(partition)):
                return False
            retention = store.lifecycle.retention_ns
            outcome = forgotten_outcome(event.run_id, event.seq, event.timestamp, retention)
            self._txn_stats.forgotten_run_events += 1
        self._record_outcomes(key, [outcome])
        return True


class _KeyError(RunfoldError):
    """The record's key does not name the run its event belongs to."""
