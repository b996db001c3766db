"""What the folding service produces and commits: violations, dead letters, run states.

Everything here is written inside the open transaction (exactly-once) or the batch
(at-least-once): :meth:`ServiceOutputs._record_outcomes` counts the fold's outcomes and
publishes their violations, :meth:`~ServiceOutputs._dead_letter` sends a record the fold
cannot take to the DLQ with headers naming why and where, :meth:`~ServiceOutputs._commit`
writes every changed run with the consumed offsets, and :meth:`~ServiceOutputs._produce`
waits out a full local queue instead of dropping.

A changed run writes two records (:class:`RunRecords`, made by ``_state_records``:
shrunk when they would not fit, guarded when they cannot be encoded): its whole state to
the internal changelog (what a restore needs) and its summary to ``agent-runs`` (what
readers want), both to the partition of its events, in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from confluent_kafka import (
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from consumers.sequence import duplicate_violation
from consumers.service.base import ServiceBase
from consumers.service.dlq import DeadLetter, dead_letter_headers, fit_dead_letter
from consumers.service.edge import FoldEdge
from consumers.service.errors import (
    TransactionAbort,
)
from consumers.service.oversize import StateTooLarge, shrink_to_fit
from consumers.state import Outcome, OutcomeKind, RunState
from schemas.errors import RunfoldError

__all__ = ["RunRecords", "ServiceOutputs", "UnencodableState"]

log = logging.getLogger("runfold.consume")

_Abort = TransactionAbort


class RunRecords(NamedTuple):
    """What one run writes in a commit, to the partition of its events in two
    co-partitioned topics. Every record a run writes is made into one of these (changed
    runs, runs copied over from ``agent-runs``), and :meth:`ServiceOutputs._commit`
    produces them all the same way."""

    partition: int
    key: bytes
    changelog: bytes | None
    """The changelog record (``runfold.RunState``): what a restore needs; None: a
    tombstone (the run is forgotten)."""
    runs: bytes | None
    """The ``agent-runs`` record (``runfold.RunSummary``); None: a tombstone."""
    write_runs: bool = True
    """False: nothing is written to ``agent-runs`` (its record there stays as it is)."""


class ServiceOutputs(ServiceBase):
    """The outputs of :class:`~consumers.service.loop.FoldService`."""

    def _record_outcomes(self, key: bytes, outcomes: list[Outcome], consumed: int = 1) -> None:
        """Count the fold's outcomes of ``consumed`` records and publish their violations
        (and a ``duplicate`` one per dropped duplicate when ``publish_duplicates`` asks)."""
        stats = self._txn_stats
        stats.add(outcomes, consumed)
        publish_duplicates = self.config.publish_duplicates
        for outcome in outcomes:
            violations = outcome.violations
            if publish_duplicates and outcome.kind is OutcomeKind.DUPLICATE:
                violations = (*violations, duplicate_violation(outcome))
            if violations:
                producer = self._producer_or_fail()
                for violation in violations:
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
        A batch of restored heads is read first (:meth:`PartitionStore.seed`): the clock and
        the watched buffers they give count from this commit on.
        """
        self._store.seed()
        for partition, keys in self._dirty.items():
            self._store.observe(partition, keys)
        changed: dict[int, set[bytes]] = {}
        for partition, key, outcomes in self._store.expire(self.edge.config):
            changed.setdefault(partition, set()).add(key)
            self._dirty.setdefault(partition, set()).add(key)
            self._record_outcomes(key, outcomes, consumed=0)
        # The bounds (docs/operations.md): buffers over max_buffered_events flushed, runs
        # over max_active_runs paged out (never one this transaction changed).
        for partition, key, outcomes in self._store.bound(self._dirty):
            changed.setdefault(partition, set()).add(key)
            self._dirty.setdefault(partition, set()).add(key)
            self._record_outcomes(key, outcomes, consumed=0)
        for partition, keys in changed.items():
            self._store.observe(partition, keys)  # a released terminal event ends a run

    def _watch_stalls(self) -> None:
        """Stamp the runs of this transaction as seen now and flag those silent for
        ``stall_after`` (:mod:`consumers.service.stalls`): a flagged run is written with
        the rest, its ``stalled`` violation published in this transaction. A flag consumes
        no record (counted in ``stalled_flagged``); buffered events a FAILED ending gave
        up on are counted as released."""
        watch, stats = self._stalls, self._txn_stats
        now = watch.clock()
        watch.touch(self._dirty, self._store, now)
        for partition, key, stall in watch.check(self._store, now, self.edge.config):
            self._dirty.setdefault(partition, set()).add(key)
            if stall.outcomes:
                self._record_outcomes(key, stall.outcomes, consumed=0)
            if stall.violation is not None:
                self._produce(
                    self._producer_or_fail(),
                    self.config.violations_topic,
                    key=key,
                    value=self.edge.encode_violation(stall.violation),
                )
                stats.violations_emitted += 1
                stats.stalled_flagged += 1

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

    def _commit(self) -> None:
        """Produce the changed runs, commit them with the offsets, count the work.

        Every changed state is encoded (and shrunk to fit, :mod:`~consumers.service.oversize`)
        before it is produced (at-least-once: before anything is); a state that cannot be
        encoded aborts the transaction instead (:meth:`_state_records`), never raises out
        of here otherwise.
        """
        producer = self._producer_or_fail()
        consumer = self._consumer_or_fail()
        self._expire_buffers()
        self._watch_stalls()
        # Exactly-once: each run's records are produced as soon as they are encoded. The
        # transaction shows them all or none (a state that cannot be encoded aborts it
        # once the others are produced), and a commit of ten thousand changed runs never
        # holds all their encoded records at once (~0.7 KiB a run): what it held stayed
        # in the process as freed small blocks long after (issue 15's week).
        records: Iterable[RunRecords] = self._state_records()
        if not self._eos:
            # At-least-once: every state is encoded (and shrunk) before anything is
            # flushed or produced, so that the violations and dead letters, a shrink's
            # too, are delivered before the states that record them. A state that
            # outlived a crash would make the replayed records look folded, and what they
            # emitted would be lost, not repeated.
            records = list(records)
            self._flush_outputs()
        changelog, runs_topic = self.config.changelog_topic, self.config.runs_topic
        written = 0
        for record in records:
            # Same partition number as the input: both topics are co-partitioned,
            # so the restore of input partition p reads changelog partition p.
            partition, key = record.partition, record.key
            self._produce(producer, changelog, key=key, value=record.changelog, partition=partition)
            if record.write_runs:
                self._produce(producer, runs_topic, key=key, value=record.runs, partition=partition)
            written += 1
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
        self.gauges = self._store.gauges()

    def _state_records(self) -> Iterator[RunRecords]:
        """The records of every changed run (:class:`RunRecords`), of the runs a restore
        took from ``agent-runs`` that are not in the changelog yet (copied there as they
        are: their ``agent-runs`` record stays), and the lifecycle's
        (:meth:`PartitionStore.age`): a RunMarker in the changelog for each finished run
        past its grace (no longer held whole; its ``agent-runs`` summary stays), a
        changelog tombstone for each marker forgotten or shed (and one in ``agent-runs``
        with ``runs_tombstones``).

        Yielded as each is made. A state too large is shrunk in place until it fits; the
        outcomes of events its reorder buffer released on the way are published and
        counted with this transaction. A state that cannot be encoded (a fold bug, or a
        value the codec let through) must not stop the service: once the others are
        yielded, the transaction is aborted and its partitions rewound
        (:class:`TransactionAbort`), and the run is *guarded*: when its records come
        again, :meth:`_fold_record` checks its state after each one and sends the record
        that breaks it to the DLQ (``unencodable-state``), the run rolled back to its
        state before that record.
        """
        broken: list[str] = []
        encode, config = self.edge.encode_records, self.edge.config
        limit = self._limits.runs
        if self.config.max_run_bytes is not None:
            limit = min(limit, self.config.max_run_bytes)
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
                    # loudly; the run's previous version stays in the changelog.
                    log.error("%s", exc)
                    continue
                except Exception as exc:  # noqa: BLE001 - any failure to encode, see above
                    if key in self._guarded:
                        # Its records were checked one by one and it still fails: not one
                        # record's doing (a restored or rebuilt state). Rewinding again
                        # would meet it again; its previous version stays in the changelog.
                        log.error(
                            "state of run %s cannot be encoded, not written: %s",
                            key.decode("utf-8", "replace"),
                            exc,
                        )
                        continue
                    self._guarded.add(key)
                    broken.append(f"{key.decode('utf-8', 'replace')}: {exc}")
                    continue
                self._guarded.discard(key)
                if fitted.outcomes:  # released events: consumed and counted before
                    self._record_outcomes(key, fitted.outcomes, consumed=0)
                changelog, summary = fitted.values
                yield RunRecords(partition, key, changelog, summary)
        if broken:
            log.error(
                "%d run states cannot be encoded (%s): aborting; their records are folded "
                "again one by one and the one that breaks a state goes to the DLQ",
                len(broken),
                "; ".join(broken[:3]),
            )
            raise _Abort("unencodable state")
        yield from self._copied_records()
        yield from self._lifecycle_records()

    def _lifecycle_records(self) -> list[RunRecords]:
        """The lifecycle's records (:meth:`PartitionStore.age`), after the changed runs'
        (a run that finished in this transaction and is past its grace already gets its
        summary in ``agent-runs`` above, then its marker supersedes its state in the
        changelog), and the lifecycle's and the bounds' counts."""
        tombstones = self.config.runs_tombstones
        out = [
            RunRecords(partition, key, value, None, write_runs=value is None and tombstones)
            for p in self._store.partitions()
            for partition, key, value in self._store.age(p)
        ]
        counts = self._store.take_counts()
        stats = self._txn_stats
        stats.markers_made += counts.markers_made
        stats.markers_forgotten += counts.markers_forgotten
        stats.markers_shed += counts.markers_shed
        stats.runs_paged_out += counts.runs_paged_out
        stats.forced_flushes += counts.forced_flushes
        return out

    def _copied_records(self) -> list[RunRecords]:
        """Changelog records of the runs restored from ``agent-runs`` (moving over to the
        changelog, :meth:`PartitionStore.take_copies`) that did not change: the bytes as
        read, or the state encoded when it was decoded since. A state that cannot be
        encoded is left out, said loudly: it stays in ``agent-runs`` only."""
        out: list[RunRecords] = []
        for partition, key, held in self._store.take_copies():
            if key in self._dirty.get(partition, ()):
                continue  # written above with the changed runs
            if isinstance(held, bytes):
                out.append(RunRecords(partition, key, held, None, write_runs=False))
                continue
            try:
                value = self.edge.encode_state(held)
            except Exception as exc:  # noqa: BLE001 - see the docstring
                log.error(
                    "run %s not copied to the changelog: %s", key.decode("utf-8", "replace"), exc
                )
                continue
            out.append(RunRecords(partition, key, value, None, write_runs=False))
        return out

    def _flush_outputs(self) -> None:
        """At-least-once: wait until everything produced is delivered, or abort the batch."""
        producer = self._producer_or_fail()
        remaining = self._errors.call("flush", lambda: producer.flush(60))
        if remaining or self._delivery_failures:
            failures = "; ".join(self._delivery_failures[:5])
            log.warning("at-least-once batch not fully delivered (%s): %s", remaining, failures)
            raise _Abort("delivery failed")


def encoding_error(edge: FoldEdge, state: RunState) -> UnencodableState | None:
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
