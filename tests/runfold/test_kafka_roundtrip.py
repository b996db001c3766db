"""Produce, consume and run Kafka transactions through the real broker (no mocks)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

pytestmark = pytest.mark.integration


def _consumer(bootstrap: str, isolation: str, group: str | None = None) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or f"test-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": isolation,
        }
    )


def _poll_until(
    consumer: Consumer, done: Callable[[list[Message]], bool], timeout: float = 30.0
) -> list[Message]:
    """Poll with a deadline until ``done(messages)``; fails the test when the deadline passes."""
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    while not done(messages):
        assert time.monotonic() < deadline, f"timed out; got {[m.value() for m in messages]}"
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
            continue
        messages.append(message)
    return messages


def test_produce_and_consume_round_trip(kafka_bootstrap: str, topic_factory) -> None:
    topic = topic_factory(partitions=3)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    sent = {f"run-{i}".encode(): f"event-{i}".encode() for i in range(20)}
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    consumer = _consumer(kafka_bootstrap, "read_committed")
    consumer.subscribe([topic])
    try:
        got = _poll_until(consumer, lambda ms: len(ms) >= len(sent))
    finally:
        consumer.close()
    assert {m.key(): m.value() for m in got} == sent
    # One key, one partition: what per-run ordering relies on.
    partitions_by_key = {}
    for m in got:
        assert partitions_by_key.setdefault(m.key(), m.partition()) == m.partition()


def test_transaction_commits_output_and_offsets_together_and_abort_is_invisible(
    kafka_bootstrap: str, topic_factory
) -> None:
    source, sink = topic_factory(), topic_factory()
    plain = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(3):
        plain.produce(source, key=b"run", value=f"in-{i}".encode())
    assert plain.flush(30) == 0

    group = f"test-folder-{uuid.uuid4().hex[:8]}"
    consumer = _consumer(kafka_bootstrap, "read_committed", group)
    consumer.subscribe([source])
    txn = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"test-{uuid.uuid4().hex}"}
    )
    try:
        inputs = _poll_until(consumer, lambda ms: len(ms) >= 3)
        txn.init_transactions(30)

        txn.begin_transaction()
        for message in inputs:
            txn.produce(sink, key=message.key(), value=b"out-" + message.value())
        # The offset to commit is the next one to read (last processed + 1).
        next_offset = inputs[-1].offset() + 1
        txn.send_offsets_to_transaction(
            [TopicPartition(source, inputs[-1].partition(), next_offset)],
            consumer.consumer_group_metadata(),
            30,
        )
        txn.commit_transaction(30)

        txn.begin_transaction()
        txn.produce(sink, key=b"run", value=b"aborted")
        txn.flush(30)  # on the broker's log, but never committed
        txn.abort_transaction(30)

        txn.begin_transaction()
        txn.produce(sink, key=b"run", value=b"after")
        txn.commit_transaction(30)

        committed = consumer.committed([TopicPartition(source, 0)], timeout=30)
        assert committed[0].offset == next_offset == 3
    finally:
        consumer.close()

    committed_reader = _consumer(kafka_bootstrap, "read_committed")
    committed_reader.assign([TopicPartition(sink, 0, 0)])
    uncommitted_reader = _consumer(kafka_bootstrap, "read_uncommitted")
    uncommitted_reader.assign([TopicPartition(sink, 0, 0)])
    try:

        def saw_after(ms: list[Message]) -> bool:
            return any(m.value() == b"after" for m in ms)

        committed_values = [m.value() for m in _poll_until(committed_reader, saw_after)]
        uncommitted_values = [m.value() for m in _poll_until(uncommitted_reader, saw_after)]
    finally:
        committed_reader.close()
        uncommitted_reader.close()
    assert committed_values == [b"out-in-0", b"out-in-1", b"out-in-2", b"after"]
    # The aborted record is really in the log: only read_committed hides it.
    assert b"aborted" in uncommitted_values
