"""Pure pieces of the folding service: DLQ headers, accounting, error classification."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from consumers.service.config import (
    ASSIGNMENT_STRATEGY,
    ServiceConfig,
    consumer_config,
    producer_config,
)
from consumers.service.dlq import (
    DLQ_HEADERS,
    DeadLetter,
    dead_letter_headers,
    parse_dead_letter_headers,
)
from consumers.service.errors import (
    ClientsFailed,
    ErrorPolicy,
    ServiceStopped,
    TransactionAbort,
    is_fenced,
)
from consumers.service.stats import ServiceStats
from schemas.errors import ConfigError

pytestmark = pytest.mark.unit


def test_dead_letter_headers_round_trip_and_are_bounded() -> None:
    letter = DeadLetter("wrong-magic", "x" * 5000, "agent-run-events", 2, 41, "DecodeError")
    headers = dead_letter_headers(letter)
    assert [name for name, _ in headers] == list(DLQ_HEADERS)
    back = parse_dead_letter_headers(headers)
    assert back.reason == "wrong-magic" and back.source_partition == 2
    assert back.source_offset == 41 and back.exception == "DecodeError"
    assert len(back.error) == 2000  # a huge message cannot blow the record size


def test_parse_names_the_missing_header() -> None:
    with pytest.raises(KeyError, match="runfold.source.offset"):
        parse_dead_letter_headers([(n, b"1") for n in DLQ_HEADERS if "offset" not in n])


def test_stats_balance_and_merge() -> None:
    total = ServiceStats()
    share = ServiceStats(consumed=10, applied=5, duplicate=1, violation=1, buffered=2, dlq=1)
    share.dlq_reasons["truncated"] += 1
    assert share.balanced()
    total.merge(share)
    total.merge(share)
    assert total.consumed == 20 and total.dlq_reasons["truncated"] == 2 and total.balanced()
    share.consumed += 1
    assert not share.balanced()


def test_client_configs_carry_the_guarantee() -> None:
    config = ServiceConfig(kafka={"bootstrap.servers": "b:9092"}, group="g", instance_id="7")
    consumer = consumer_config(config)
    assert consumer["enable.auto.commit"] is False
    assert consumer["isolation.level"] == "read_committed"
    assert consumer["group.instance.id"] == "g-7"
    producer = producer_config(config)
    assert producer["transactional.id"] == "runfold-g-7"
    assert producer["enable.idempotence"] is True and producer["acks"] == "all"
    at_least_once = ServiceConfig(kafka={}, guarantee="at-least-once")
    assert "transactional.id" not in producer_config(at_least_once)


def _policy() -> ErrorPolicy:
    return ErrorPolicy(ServiceConfig(kafka={}), in_transaction=lambda: True)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (KafkaError(KafkaError._TIMED_OUT, "t", retriable=True), "retry"),
        (KafkaError(KafkaError._TIMED_OUT, "t", txn_requires_abort=True), "abort"),
        (KafkaError(KafkaError._FENCED, "f", fatal=True), "fenced"),
        (KafkaError(KafkaError.PRODUCER_FENCED, "f"), "fenced"),
        (KafkaError(KafkaError.INVALID_PRODUCER_EPOCH, "newer epoch", fatal=True), "fenced"),
        # The group's fencing: a newer instance, or the consumer's own rejoin after a
        # failover; the service checks its producer epoch before it decides.
        (KafkaError(KafkaError.FENCED_INSTANCE_ID, "f", fatal=True), "suspect"),
        (KafkaError(KafkaError.FENCED_INSTANCE_ID, "f", txn_requires_abort=True), "suspect"),
        # A fatal idempotent-producer error after a failover: rebuild, not stop.
        (KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "lost", fatal=True), "rebuild"),
        (KafkaError(KafkaError._INCONSISTENT, "inconsistent", fatal=True), "rebuild"),
        (KafkaError(KafkaError.UNKNOWN, "u", fatal=True), "rebuild"),
        # New clients would meet these again.
        (KafkaError(KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "a", fatal=True), "stop"),
        (KafkaError(KafkaError.UNSUPPORTED_VERSION, "v", fatal=True), "stop"),
        (KafkaError(KafkaError.UNKNOWN, "u"), "stop"),
        (KafkaError(KafkaError._STATE, "erroneous state"), "abort"),
    ],
)
def test_errors_are_handled_by_class(error: KafkaError, outcome: str) -> None:
    policy = _policy()
    try:
        policy.classify("commit_transaction", KafkaException(error), last=False)
        got = "retry"
    except TransactionAbort:
        got = "abort"
    except ClientsFailed as exc:
        got = "suspect" if exc.suspect else "rebuild"
        assert exc.consumer == exc.suspect  # a producer call: the consumer is kept, unless
        assert error.str() in str(exc)  # the group fenced it
    except ServiceStopped as exc:
        got = "fenced" if exc.fenced else "stop"
        if exc.fenced:
            assert "fenced" in str(exc) and "Stopping without committing" in str(exc)
    assert got == outcome
    assert is_fenced(error) == (outcome in ("fenced", "suspect"))


def test_retries_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = _policy()
    calls = 0

    def always_retriable() -> None:
        nonlocal calls
        calls += 1
        raise KafkaException(KafkaError(KafkaError._TRANSPORT, "down", retriable=True))

    monkeypatch.setattr("consumers.service.errors.time.sleep", lambda _seconds: None)
    # An outage that outlasts the retries (quorum lost) is for new clients, not an exit.
    with pytest.raises(ClientsFailed, match="still failing after 10 attempts.*down") as info:
        policy.call("send_offsets_to_transaction", always_retriable)
    assert calls == 10
    assert not info.value.consumer
    with pytest.raises(ClientsFailed) as info:
        policy.call("committed", always_retriable)
    assert info.value.consumer  # the consumer's own call: it is rebuilt too


@pytest.mark.parametrize(
    ("text", "outcome"),
    [
        (
            "Fatal error: Broker: Static consumer fenced by other consumer with same "
            "group.instance.id",
            "suspect",
        ),
        ("Fatal error: Broker: Unknown member", "rebuild"),
    ],
)
def test_a_fatal_consumer_error_is_fencing_only_if_it_says_so(text: str, outcome: str) -> None:
    policy = _policy()
    try:
        policy.consumer_error(KafkaError(KafkaError._FATAL, text))
        got = "logged"
    except ClientsFailed as exc:
        assert exc.consumer
        got = "suspect" if exc.suspect else "rebuild"
    except ServiceStopped as exc:
        got = "fenced" if exc.fenced else "stop"
    assert got == outcome


def test_a_group_fence_stops_at_once_without_a_producer_epoch_to_check() -> None:
    policy = ErrorPolicy(ServiceConfig(kafka={}, guarantee="at-least-once"), lambda: False)
    with pytest.raises(ServiceStopped) as info:
        policy.consumer_error(
            KafkaError(
                KafkaError._FATAL,
                "Fatal error: Broker: Static consumer fenced by "
                "other consumer with same group.instance.id",
            )
        )
    assert info.value.fenced


def test_transport_errors_from_consume_are_only_logged() -> None:
    _policy().consumer_error(KafkaError(KafkaError._TRANSPORT, "broker down", retriable=True))


def test_the_assignment_strategy_is_pinned_to_an_eager_one() -> None:
    config = ServiceConfig(kafka={}, consumer_overrides={"partition.assignment.strategy": "range"})
    assert consumer_config(config)["partition.assignment.strategy"] == ASSIGNMENT_STRATEGY
    assert ASSIGNMENT_STRATEGY in ("range", "roundrobin")
    assert consumer_config(config)["group.protocol"] == "classic"
    for name, value in [
        ("partition.assignment.strategy", "cooperative-sticky"),
        ("partition.assignment.strategy", "range,cooperative-sticky"),
        ("group.protocol", "consumer"),
    ]:
        with pytest.raises(ConfigError, match=f"{name}=.*pinned.*remove the override"):
            ServiceConfig(kafka={}, consumer_overrides={name: value})
    with pytest.raises(ConfigError, match="kafka setting partition.assignment.strategy="):
        ServiceConfig(kafka={"partition.assignment.strategy": "cooperative-sticky"})
    # An override added after the config was made is caught when the consumer is built.
    late = ServiceConfig(kafka={})
    late.consumer_overrides["partition.assignment.strategy"] = "cooperative-sticky"
    with pytest.raises(ConfigError, match="cooperative-sticky"):
        consumer_config(late)


def test_epoch_fencing_of_a_timed_out_transaction_is_recovered_not_a_stop() -> None:
    fenced = KafkaException(
        KafkaError(KafkaError._FENCED, "fenced by newer producer instance", fatal=True)
    )
    policy = _policy()
    with pytest.raises(ServiceStopped) as stopped:
        policy.classify("commit_transaction", fenced, last=False)
    assert stopped.value.fenced
    # The transaction outlived transaction.timeout.ms in a process that never paused:
    # the coordinator aborted it and bumped the epoch, no newer instance did.
    policy.timed_out = lambda: True
    with pytest.raises(ClientsFailed, match="longer than transaction.timeout.ms") as failed:
        policy.classify("commit_transaction", fenced, last=False)
    assert not failed.value.suspect
