"""How the folding service changes hands and comes back: rebalances, abort, failover.

On assign the owned partitions' runs are restored (:class:`~consumers.service.store.
PartitionStore`) before any of their records is folded; on revoke the open transaction
commits, on loss it aborts. An abort rewinds to the committed offsets. When a client
failed for good (brokers restarted, quorum lost, a fatal idempotent-producer error that
is not fencing) the clients are rebuilt with the same ``transactional.id``, the owned
partitions restored and the service goes on, with a bounded back-off
(docs/guarantees.md); fencing by a newer instance still stops it.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)

from consumers.service.base import IDLE_WAIT
from consumers.service.errors import (
    ClientsFailed,
    ServiceStopped,
    TransactionAbort,
)
from consumers.service.outputs import ServiceOutputs
from consumers.service.stats import ServiceStats
from schemas.errors import RunfoldError

__all__ = ["ServiceRecovery"]

log = logging.getLogger("runfold.consume")

_Abort = TransactionAbort
_FIRST_BACKOFF = 0.5
"""Wait before the first client rebuild in a row (doubled for each next one)."""
_PAUSE = 2.0
"""A gap this long between two ticks of :class:`PauseWatch` means the process was
paused (SIGSTOP, a frozen VM), not busy: a pause is how an instance becomes a zombie."""
_STEADY_AFTER = 300.0
"""A rebuild this long after the previous one is not "in a row" even without a commit
(an idle service commits nothing, yet months of occasional failovers are not a loop)."""


class ServiceRecovery(ServiceOutputs):
    """Rebalances, abort and rewind, restore and failover of
    :class:`~consumers.service.loop.FoldService`."""

    def _txn_timed_out(self, watch: PauseWatch) -> bool:
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

    def _recover(self, failure: ClientsFailed) -> None:
        """Rebuild the clients after ``failure`` and go on from the last commit.

        Exactly-once holds because nothing of the open transaction survives: it is
        dropped here (its state, offsets and counts), the new producer's
        ``init_transactions`` (same ``transactional.id``) completes or aborts it on the
        broker, and the state is restored from the changelog (read_committed) for the
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
            time.sleep(min(left, IDLE_WAIT))
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
        """Restore the runs of ``partitions`` from the changelog
        (:meth:`PartitionStore.restore`; from the whole states an older deployment left in
        ``agent-runs`` when the changelog partition never had a record); a partition with
        nothing to restore while offsets are committed is rebuilt from events."""
        if not partitions:
            return
        started = self._clock()
        total, empty = self._store.restore(
            self.config.kafka,
            self.config.changelog_topic,
            partitions,
            timeout=self.config.transaction_timeout_ms / 1000 + 60,
            runs_topic=self.config.runs_topic,
        )
        if empty:
            self._rebuild_from_events(empty)
        # The wait for an event of every restored run starts now (a restart restarts it).
        self._stalls.restored(self._store, partitions, self._stalls.clock())
        self.stats.restores += 1
        self.stats.restored_runs += total
        log.info(
            "restored %d runs of partitions %s in %.2fs",
            total,
            partitions,
            self._clock() - started,
        )

    def _rebuild_from_events(self, partitions: list[int]) -> None:
        """The changelog (and ``agent-runs``) has nothing for these partitions: if offsets
        were committed, fold the events before the committed offset again (outputs are
        not re-emitted) and write the rebuilt runs (both records) in the next
        transaction, so the changelog heals."""
        consumer = self._consumer_or_fail()
        tps = [TopicPartition(self.config.events_topic, p) for p in partitions]
        committed = self._errors.call("committed", lambda: consumer.committed(tps, timeout=30))
        for tp in committed:
            if tp.offset <= 0:
                continue
            log.warning(
                "%s[%d] is empty but offsets up to %d are committed: rebuilding its runs from %s",
                self.config.changelog_topic,
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


class PauseWatch:
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
