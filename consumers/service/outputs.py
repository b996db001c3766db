"""What the folding service produces and commits: violations, dead letters, run states.

Everything here is written inside the open transaction (exactly-once) or the batch
(at-least-once): :meth:`ServiceOutputs._record_outcomes` counts the fold's outcomes and
publishes their violations, :meth:`~ServiceOutputs._dead_letter` sends a record the fold
cannot take to the DLQ with headers naming why and where, :meth:`~ServiceOutputs._commit`
writes every changed run (encoded by ``_state_records``: shrunk when it would not fit,
guarded when it cannot be encoded) with the consumed offsets, and
:meth:`~ServiceOutputs._produce` waits out a full local queue instead of dropping.
"""

from __future__ import annotations

import logging
from typing import Any

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

__all__ = ["ServiceOutputs", "UnencodableState"]

log = logging.getLogger("runfold.consume")

_Abort = TransactionAbort


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
