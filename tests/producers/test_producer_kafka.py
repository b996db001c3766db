"""EventProducer and RunRecorder against a real broker: order, partitioning, back-pressure,
delivery accounting and a broker that is not there."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from consumers.service.queries import partition_for
from producers import AsyncRunRecorder, EventProducer, RunRecorder
from schemas import Event, MessageAdded, NodeEntered, NodeExited, ToolCalled, ToolReturned
from schemas.codec import EventCodec
from schemas.errors import KafkaSetupError

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "murmur2_partitions.json"


@pytest.mark.integration
def test_thousand_recorded_runs_read_back_in_order_on_murmur2_partitions(
    kafka_bootstrap: str, topic_factory: Callable[..., str],
    read_topic: Callable[..., list[tuple[int, bytes, bytes]]]
) -> None:
    from schemas.codec import decode_event

    partitions = 6
    topic = topic_factory(partitions=partitions)
    producer = EventProducer(topic, bootstrap_servers=kafka_bootstrap)
    recorder = RunRecorder(producer)
    lengths: dict[str, int] = {}
    for index in range(1000):
        with recorder.run("spec", "0" * 40, {"i": index}, graph_name="g",
                          entry_point="a") as run:
            for iteration in range(1, 1 + index % 3):
                run.emit(NodeEntered(node_id="a", iteration=iteration), {"i": iteration})
                run.emit(ToolCalled(tool_name="search"))
                run.emit(ToolReturned(tool_name="search"), {"bytes": index})
                run.emit(MessageAdded(role="assistant", content_length=index))
                run.emit(NodeExited(node_id="a", next_node=None, duration_ms=iteration))
            run.complete(outputs={"i": index})
        lengths[str(run.run_id)] = run.seq
    report = recorder.close(timeout=60)
    total = sum(lengths.values())
    assert report.produced == total
    assert report.delivered == total, report.summary()
    assert report.failed == report.indeterminate == report.pending == 0

    records = read_topic(topic, total)
    assert len(records) == report.delivered
    seqs: dict[str, list[int]] = defaultdict(list)
    partition_of: dict[str, set[int]] = defaultdict(set)
    for partition, key, value in records:
        event: Event = decode_event(value)
        assert key == str(event.run_id).encode()
        seqs[key.decode()].append(event.seq)
        partition_of[key.decode()].add(partition)
    assert seqs.keys() == lengths.keys()
    for run_id, n in lengths.items():
        assert seqs[run_id] == list(range(1, n + 1)), run_id
        assert partition_of[run_id] == {partition_for(run_id.encode(), partitions)}
    assert len({p for ps in partition_of.values() for p in ps}) == partitions


@pytest.mark.integration
@pytest.mark.parametrize("partitions", [3, 12, 64])
def test_partitions_match_the_java_clients_table(
    kafka_bootstrap: str, topic_factory: Callable[..., str],
    read_topic: Callable[..., list[tuple[int, bytes, bytes]]], partitions: int
) -> None:
    """Keys land where Java's ``Utils.murmur2`` puts them (tests/vectors, from the jars)."""
    rows = json.loads(VECTORS.read_text())["vectors"]
    topic = topic_factory(partitions=partitions)
    producer = EventProducer(topic, bootstrap_servers=kafka_bootstrap)
    for row in rows:
        producer.produce(row["key"], row["key"].encode() or b"-")
    assert producer.close(timeout=30).delivered == len(rows)
    placed = {value: p for p, _, value in read_topic(topic, len(rows))}
    for row in rows:
        expected = row["partitions"][str(partitions)]
        assert placed[row["key"].encode() or b"-"] == expected, row["key"]


@pytest.mark.integration
def test_a_tiny_queue_applies_back_pressure_and_drops_nothing(
    kafka_bootstrap: str, topic_factory: Callable[..., str],
    read_topic: Callable[..., list[tuple[int, bytes, bytes]]]
) -> None:
    topic = topic_factory(partitions=3)
    producer = EventProducer(topic, bootstrap_servers=kafka_bootstrap,
                             config={"queue.buffering.max.messages": 10, "linger.ms": 5})
    count = 2000
    for i in range(count):
        producer.produce(f"run-{i % 50}", i.to_bytes(4, "big"))
    report = producer.close(timeout=60)
    assert report.produced == report.delivered == count, report.summary()
    records = read_topic(topic, count)
    assert sorted(int.from_bytes(v, "big") for _, _, v in records) == list(range(count))


@pytest.mark.integration
def test_produce_many_keeps_order_partitions_and_back_pressure(
    kafka_bootstrap: str, topic_factory: Callable[..., str],
    read_topic: Callable[..., list[tuple[int, bytes, bytes]]]
) -> None:
    """The bulk loop produce_fleet uses: same records, same partitions, none dropped."""
    partitions = 6
    topic = topic_factory(partitions=partitions)
    # A tiny queue: the loop must wait for room (BufferError) many times, in order.
    producer = EventProducer(topic, bootstrap_servers=kafka_bootstrap,
                             config={"queue.buffering.max.messages": 10, "linger.ms": 5})
    count = 3000
    rows = [(f"run-{i % 70}".encode(), i.to_bytes(4, "big"), "meta") for i in range(count)]
    progress: list[int] = []
    assert producer.produce_many(rows[:1000], on_progress=progress.append, every=400) == 1000
    assert progress == [400, 800]
    assert producer.produce_many(iter(rows[1000:])) == count - 1000
    report = producer.close(timeout=60)
    assert report.produced == report.delivered == count, report.summary()
    records = read_topic(topic, count)
    assert len(records) == count
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for partition, key, value in records:
        assert partition == partition_for(key, partitions)
        by_key[key].append(int.from_bytes(value, "big"))
    for key, values in by_key.items():
        assert values == [i for i in range(count) if rows[i][0] == key]


@pytest.mark.integration
def test_broker_rejections_are_counted_with_the_reason(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(partitions=1, config={"max.message.bytes": "2000"})
    producer = EventProducer(topic, bootstrap_servers=kafka_bootstrap,
                             config={"compression.type": "none"})
    producer.produce("k", b"small")
    producer.flush(30)  # in its own batch: the broker rejects a whole batch at once
    producer.produce("k", bytes(50_000))
    report = producer.close(timeout=30)
    assert (report.produced, report.delivered, report.failed) == (2, 1, 1)
    assert any("too large" in reason.lower() for reason in report.failure_reasons)
    assert "failures:" in report.summary()


@pytest.mark.integration
def test_records_that_time_out_are_indeterminate_not_delivered(kafka_bootstrap: str) -> None:
    """Successes are derived (failure-only reports): a timed-out record never counts as one."""
    missing = f"runfold-missing-{uuid.uuid4().hex[:8]}"
    producer = EventProducer(missing, bootstrap_servers=kafka_bootstrap, config={
        "message.timeout.ms": 500, "linger.ms": 5, "allow.auto.create.topics": False})
    for i in range(50):
        producer.produce(f"run-{i}", b"v")
    during = producer.report
    assert (during.delivered, during.pending) == (0, 50)
    report = producer.close(timeout=30)
    assert (report.produced, report.delivered, report.indeterminate, report.pending) == (
        50, 0, 50, 0), report.summary()


@pytest.mark.integration
def test_a_close_that_gives_up_leaves_records_pending_for_good(kafka_bootstrap: str) -> None:
    missing = f"runfold-missing-{uuid.uuid4().hex[:8]}"
    producer = EventProducer(missing, bootstrap_servers=kafka_bootstrap, config={
        "message.timeout.ms": 30_000, "allow.auto.create.topics": False})
    for i in range(20):
        producer.produce(f"run-{i}", b"v")
    report = producer.close(timeout=0.2)
    assert (report.delivered, report.pending) == (0, 20), report.summary()
    assert (producer.report.delivered, producer.report.pending) == (0, 20)


@pytest.mark.integration
@pytest.mark.parametrize("only_errors", [True, False])
def test_delivered_counts_never_lead_and_never_go_back(
    kafka_bootstrap: str, topic_factory: Callable[..., str], only_errors: bool
) -> None:
    """Derived from failure-only reports (the default) or counted from every report."""
    topic = topic_factory(partitions=3)
    producer = EventProducer(topic, bootstrap_servers=kafka_bootstrap, config={
        "linger.ms": 1, "delivery.report.only.error": only_errors})
    seen: list[int] = []
    for i in range(20_000):
        producer.produce(f"run-{i % 300}", b"value")
        if i % 500 == 0:
            producer.poll(0.02)  # time for acknowledgements to arrive while sending
            snapshot = producer.report
            assert 0 <= snapshot.delivered <= snapshot.produced
            seen.append(snapshot.delivered)
    report = producer.close(timeout=60)
    assert report.produced == report.delivered == 20_000, report.summary()
    assert seen == sorted(seen) and seen[-1] > 0  # some were delivered while sending


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.unit
def test_a_broker_that_is_not_there_gives_a_clear_error_in_bounded_time() -> None:
    address = f"127.0.0.1:{closed_port()}"
    producer = EventProducer("t", bootstrap_servers=address, startup_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(KafkaSetupError, match=f"no Kafka broker answered at {address} within 2s"):
        producer.produce("k", b"v")
    assert time.monotonic() - started < 10
    assert producer.close(timeout=1).produced == 0


@pytest.mark.integration
def test_async_agents_record_concurrently_through_kafka(
    kafka_bootstrap: str, topic_factory: Callable[..., str],
    read_topic: Callable[..., list[tuple[int, bytes, bytes]]],
) -> None:
    topic = topic_factory(partitions=3)
    producer = EventProducer(topic, bootstrap_servers=kafka_bootstrap)
    recorder = AsyncRunRecorder(producer)
    lengths: dict[str, int] = {}

    async def agent(index: int) -> None:
        async with recorder.run("spec", "sha", {"agent": index}) as run:
            for step in range(1, 6 + index % 4):
                await run.emit(NodeEntered(node_id="n", iteration=step))
                await asyncio.sleep(0)
                await run.emit(ToolCalled(tool_name="t"))
        lengths[str(run.run_id)] = run.seq

    async def fleet() -> None:
        await asyncio.gather(*(agent(i) for i in range(40)))

    asyncio.run(fleet())
    report = asyncio.run(recorder.aclose(timeout=30))
    assert report.delivered == report.produced == sum(lengths.values())
    seqs: dict[str, list[int]] = defaultdict(list)
    codec = EventCodec()
    for _, key, value in read_topic(topic, report.delivered):
        seqs[key.decode()].append(codec.decode(value).seq)
    assert {k: v for k, v in seqs.items()} == {
        run_id: list(range(1, n + 1)) for run_id, n in lengths.items()}
