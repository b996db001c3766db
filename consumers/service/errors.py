"""How the folding service treats Kafka client errors, by class (docs/guarantees.md).

- retriable → retry the call, a bounded number of times;
- ``txn_requires_abort()`` → :class:`TransactionAbort` (the service aborts and rewinds);
- fenced, or a permanent error (authorization, unsupported, bad config) →
  :class:`ServiceStopped`: stop, commit nothing. Two look-alikes a failover causes are
  :class:`ClientsFailed` instead: the group's fencing of the consumer (``suspect``: the
  service checks its producer epoch before it decides) and the epoch fencing of a
  transaction its coordinator timed out while the process ran (``timed_out``);
- fatal but not fencing (an idempotent producer's lost sequence after a failover, a
  consumer's fatal error that names no fencing), or a retriable error that outlasted its
  retries (brokers gone, quorum lost) → :class:`ClientsFailed`: the service rebuilds its
  clients with the same ``transactional.id`` and goes on (``FoldService._recover``);
- anything else → :class:`ServiceStopped`: unknown territory is not guessed at.

Fencing is also looked for before newly assigned partitions are folded
(:meth:`ErrorPolicy.verify_not_fenced`): a zombie that rejoined its group may have
nothing left to fold, and then no call of its own would ever tell it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from consumers.service.config import ServiceConfig
from schemas.errors import RunfoldError

__all__ = [
    "FENCED_CODES",
    "PERMANENT_CODES",
    "ClientsFailed",
    "ErrorPolicy",
    "ServiceStopped",
    "TransactionAbort",
    "is_fenced",
]

log = logging.getLogger("runfold.consume")

T = TypeVar("T")

_RETRIES = 10
_CONSUMER_CALLS = frozenset({"consume", "committed", "seek"})
"""Calls of the consumer: when their retries run out, the consumer is rebuilt too."""
FENCED_CODES = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.FENCED_INSTANCE_ID,
    }
)
"""Error codes meaning another instance took this one's place."""
PERMANENT_CODES = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError._INVALID_ARG,
        KafkaError._UNSUPPORTED_FEATURE,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.UNSUPPORTED_VERSION,
        KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
        KafkaError.INVALID_TRANSACTION_TIMEOUT,
        KafkaError.INVALID_CONFIG,
    }
)
"""Fatal error codes that new clients would meet again (rights, versions, settings):
rebuilding the clients cannot help, so the service stops on them."""
_FENCED_WORDS = ("fenced", "FENCED_INSTANCE_ID", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH")
"""How a consumer's ``_FATAL`` message names fencing (its KafkaError carries no cause)."""
_GROUP_FENCE_WORDS = ("group.instance.id", "FENCED_INSTANCE_ID")
"""How a ``_FATAL`` message names the group's fencing (static membership), not the epoch's."""


class ServiceStopped(RunfoldError):
    """The service stopped on an error it must not work around (fenced, fatal)."""

    def __init__(self, message: str, *, fenced: bool = False) -> None:
        super().__init__(message)
        self.fenced = fenced


class TransactionAbort(Exception):
    """The open transaction must be aborted and the owned partitions rewound."""


class ClientsFailed(Exception):
    """A client is unusable for a reason new clients may overcome: rebuild and go on.

    ``consumer`` says whether the consumer must be rebuilt too (its own fatal error or
    outlasted retries); the producer always is, since the transaction's fate is only
    settled by a new ``init_transactions`` with the same ``transactional.id``.
    """

    def __init__(self, message: str, *, consumer: bool = False, suspect: bool = False) -> None:
        super().__init__(message)
        self.consumer = consumer or suspect
        self.suspect = suspect
        """The group fenced this consumer (FENCED_INSTANCE_ID): a newer instance with this
        id, or the consumer's own rejoin after its coordinator moved (librdkafka does
        that in a failover). Only the producer's epoch tells which: the service checks it
        (:meth:`ErrorPolicy.verify_not_fenced`) before it rebuilds anything."""


def is_fenced(err: KafkaError) -> bool:
    """True when ``err`` says this instance was fenced by another one."""
    if err.code() in FENCED_CODES:
        return True
    # A consumer's fatal error arrives as _FATAL; only its text names the cause.
    return err.code() == KafkaError._FATAL and any(w in err.str() for w in _FENCED_WORDS)


def is_group_fence(err: KafkaError) -> bool:
    """True when ``err`` is the group's fencing of a static member (FENCED_INSTANCE_ID),
    which a newer instance causes but so can a failover; the producer epoch's fencing
    (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH) is certain."""
    if err.code() == KafkaError.FENCED_INSTANCE_ID:
        return True
    return err.code() == KafkaError._FATAL and any(w in err.str() for w in _GROUP_FENCE_WORDS)


def is_recoverable(err: KafkaError) -> bool:
    """True when new clients (same ids) may well succeed where these failed: a fatal
    error that is neither fencing nor permanent (:data:`PERMANENT_CODES`)."""
    return not is_fenced(err) and err.code() not in PERMANENT_CODES


class ErrorPolicy:
    """Runs client calls for one service instance and turns their errors into actions."""

    def __init__(self, config: ServiceConfig, in_transaction: Callable[[], bool]) -> None:
        self.config = config
        self.producer: Producer | None = None
        """Set by the service once built: its error callback is served from ``poll``."""
        self._in_transaction = in_transaction
        self.timed_out: Callable[[], bool] = lambda: False
        """Set by the service: True when it has been stuck (no commit, no healthy idle
        turn) for longer than ``transaction.timeout.ms`` while the process ran (was not
        paused), so that a transaction of its own may have been timed out."""
        self._fatal: KafkaError | None = None

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run a client call; retry retriable errors (bounded), classify the others."""
        attempt = 0
        while True:
            try:
                return fn()
            except KafkaException as exc:
                attempt += 1
                self.classify(what, exc, last=attempt >= _RETRIES)
                time.sleep(min(0.1 * 2**attempt, 2.0))

    def classify(self, what: str, exc: KafkaException, *, last: bool) -> None:
        """Raise what ``exc`` calls for; return only when the call may be retried."""
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if err is None:
            raise ServiceStopped(f"{what} failed: {exc}") from exc
        if is_fenced(err) or err.fatal():
            raise self.failed(what, err, consumer=what in _CONSUMER_CALLS) from exc
        if err.txn_requires_abort():
            log.warning("%s failed, aborting the transaction: %s", what, err.str())
            raise TransactionAbort(err.str()) from exc
        if err.retriable():
            if not last:
                log.info("%s: retriable error, retrying: %s", what, err.str())
                return
            # A broker outage outlasted the retries (quorum lost, every broker down): new
            # clients start over once it is back; the producer's may have failed as well.
            fatal = self.fatal_error()
            if fatal is not None:
                raise self.failed(what, fatal) from exc
            raise ClientsFailed(
                f"{what}: still failing after {_RETRIES} attempts: {err.str()}",
                consumer=what in _CONSUMER_CALLS,
            ) from exc
        # The call's own error may not say why (produce() in a failed transaction says
        # only "Erroneous state"): the client's fatal error, if any, does.
        fatal = self.fatal_error()
        if fatal is not None:
            raise self.failed(what, fatal) from exc
        if err.code() == KafkaError._STATE and self._in_transaction():
            log.warning("%s failed in a failed transaction, aborting: %s", what, err.str())
            raise TransactionAbort(err.str()) from exc
        # Neither retriable nor abortable: unknown territory, stop rather than guess.
        raise ServiceStopped(f"{what} failed: {err.str()}") from exc

    def verify_not_fenced(self, consumer: Consumer, topic: str, partitions: list[int]) -> None:
        """Raise :class:`ServiceStopped` (fenced) if another instance took this one's
        ``transactional.id``; call before folding newly assigned partitions.

        An instance stopped past its session timeout (SIGSTOP, a long pause) finds its
        session expired when it resumes, drops its partitions and joins again with its
        ``group.instance.id``; static membership lets the newest join with that id take
        the place, so the group accepts the zombie and never says FENCED_INSTANCE_ID.
        Only its producer's epoch is stale (the replacement's ``init_transactions``
        bumped it), and a producer learns that only from the transaction coordinator:
        with nothing new to fold it would never ask, and would hold the partitions,
        folding nothing, for ever. So: a probe transaction that adds offsets (that call
        reaches the coordinator with this producer's epoch), then aborts. Nothing of it
        is ever committed; it costs a few round trips per assignment.
        """
        producer = self.producer
        if producer is None or self.config.guarantee != "exactly-once" or self._in_transaction():
            return
        # Any valid offset will do: the probe always aborts, so none of them is committed.
        offsets = [TopicPartition(topic, p, 0) for p in partitions or [0]]
        self.call("fencing probe: begin_transaction", producer.begin_transaction)
        # An abortable error here is not fencing (that is fatal, raised by call()): the
        # group moved on again, and the rebalance that follows is the callbacks' job. Nor
        # is the group's FENCED_INSTANCE_ID (abortable): the transaction coordinator
        # checked this producer's epoch (AddOffsetsToTxn) before the group coordinator
        # looked at the member (TxnOffsetCommit), and a newer instance bumps the epoch
        # before it joins the group.
        try:
            self.call(
                "fencing probe: send_offsets_to_transaction",
                lambda: producer.send_offsets_to_transaction(
                    offsets, consumer.consumer_group_metadata(), 30
                ),
            )
        except TransactionAbort:
            pass
        except ClientsFailed as exc:
            if not exc.suspect:
                raise
        try:
            self.call("fencing probe: abort_transaction", lambda: producer.abort_transaction(30))
        except TransactionAbort as exc:
            raise ServiceStopped(f"fencing probe: abort_transaction failed: {exc}") from exc

    def on_error(self, err: KafkaError) -> None:
        # librdkafka's error callback: most errors are informational (it reconnects by
        # itself); a fatal one is kept so that the next failing call names it.
        if err.fatal() and self._fatal is None:
            self._fatal = err
        log.info("kafka: %s", err.str())

    def fatal_error(self) -> KafkaError | None:
        if self._fatal is None and self.producer is not None:
            try:
                self.producer.poll(0)  # serves the error callback
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.fatal():
                    self._fatal = err
        return self._fatal

    def poll_producer(self, producer: Producer, timeout: float) -> None:
        try:
            producer.poll(timeout)
        except KafkaException as exc:
            self.classify("poll", exc, last=False)

    def failed(
        self, what: str, err: KafkaError, *, consumer: bool = False
    ) -> ServiceStopped | ClientsFailed:
        """What a fatal ``err`` calls for: stop if fenced or permanent, else rebuild; a
        group fence (exactly-once: the producer epoch can be checked) is a suspect."""
        if is_group_fence(err) and self.config.guarantee == "exactly-once":
            return ClientsFailed(
                f"{what}: the group fenced this consumer: {err.str()}", suspect=True
            )
        if is_fenced(err) and not is_group_fence(err) and self.timed_out():
            # The transaction coordinator aborts a transaction that outlives its timeout
            # and bumps the epoch: to the producer that looks exactly like a newer
            # instance. An instance stuck that long in a failover, in a process that never
            # paused, was timed out; a zombie (paused past its session) was not, nor is
            # one that was committing when a newer instance started.
            return ClientsFailed(
                f"{what}: {err.str()}: stuck in a broker failover for longer than "
                f"transaction.timeout.ms ({self.config.transaction_timeout_ms} ms), so a "
                "transaction coordinator aborted a transaction of this instance and bumped "
                "its producer epoch"
            )
        if is_recoverable(err):
            return ClientsFailed(f"{what}: fatal Kafka error: {err.str()}", consumer=consumer)
        return self.stopped(what, err)

    def reset(self, producer: Producer | None) -> None:
        """Forget the old producer's fatal error: ``producer`` replaces it."""
        self.producer = producer
        self._fatal = None

    def stopped(self, what: str, err: KafkaError) -> ServiceStopped:
        if is_fenced(err):
            return ServiceStopped(
                f"{what}: this instance was fenced ({err.str()}); another instance with "
                f"transactional.id {self.config.transactional_id!r} or group instance id "
                f"{self.config.instance_id!r} took over. Stopping without committing.",
                fenced=True,
            )
        return ServiceStopped(f"{what}: fatal Kafka error, stopping: {err.str()}")

    def consumer_error(self, err: KafkaError) -> None:
        """An error event returned by ``consume()``: stop if fenced, rebuild the clients
        if fatal otherwise, else log it."""
        # A fatal consumer error arrives as a message with code _FATAL whose KafkaError
        # says fatal() == False: the client is dead all the same (retrying with it only
        # keeps a member that folds nothing), so it is replaced, unless it was fenced.
        if is_fenced(err) or err.fatal() or err.code() == KafkaError._FATAL:
            raise self.failed("consume", err, consumer=True)
        # Transport errors and the like: librdkafka reconnects and refetches by itself.
        log.warning("consumer error (will retry): %s", err.str())
