"""``runfold produce``: bad input, and a faulty fleet through a real broker that the fold
(reading the topic back) judges exactly as the manifest predicts."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, TopicPartition

from consumers import fold
from producers import AsyncRunRecorder, EventProducer
from runfold.cli import main
from schemas import Event, NodeEntered, ToolCalled
from schemas.codec import EventCodec
from schemas.errors import DecodeError


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[
        tuple[int, bytes, bytes]]:
    """Every record of ``topic`` as (partition, key, value), polling until ``expected``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4()}",
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in sorted(partitions)])
        records: list[tuple[int, bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.5):
                assert msg.error() is None, msg.error()
                records.append((msg.partition(), msg.key(), msg.value()))
        return records
    finally:
        consumer.close()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("faults", "named"),
    [("gap=0.1,lag=0.2", "item 2 ('lag=0.2'): unknown fault 'lag'"),
     ("dup", "item 1 ('dup') has no '='"),
     ("corrupt=3", "3 is not a probability")],
)
def test_bad_faults_text_is_refused_naming_the_item(faults: str, named: str) -> None:
    result = CliRunner().invoke(main, ["produce", "--runs", "1", "--faults", faults,
                                       "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert "Invalid value for '--faults'" in result.output
    assert named in result.output


@pytest.mark.integration
def test_produce_a_faulty_fleet_and_the_fold_agrees_with_the_manifest(
    kafka_bootstrap: str, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    topic = topic_factory(partitions=3)
    manifest_path = tmp_path / "m.json"
    result = CliRunner().invoke(main, [
        "produce", "--runs", "200", "--agents", "6", "--seed", "5", "--no-ensure-topics",
        "--faults", "gap=0.2,dup=0.2,reorder=0.2,after_end=0.2,conflict=0.2,corrupt=0.2",
        "--manifest", str(manifest_path), "--bootstrap", kafka_bootstrap, "--topic", topic,
    ])
    assert result.exit_code == 0, result.output
    manifest = json.loads(manifest_path.read_text())
    totals = manifest["totals"]
    assert f"delivered={totals['records']} failed=0 indeterminate=0 pending=0" in result.output
    assert "events/s" in result.output

    records = read_all(kafka_bootstrap, topic, totals["records"])
    assert len(records) == totals["records"]
    codec = EventCodec()
    events: list[Event] = []
    dlq = 0
    for _, _key, value in records:
        try:
            events.append(codec.decode(value))
        except DecodeError:
            dlq += 1
    assert dlq == totals["dlq"] > 0
    states = {str(run_id): state for run_id, state in fold(events).runs.items()}
    for entry in manifest["runs"]:
        state = states[entry["run_id"]]
        assert json.loads(state.run.to_json()) == entry["run"]
        reported = sorted(({"kind": v.kind.value, "first_seq": v.first_seq,
                            "last_seq": v.last_seq} for v in state.violations),
                          key=lambda v: (v["first_seq"], v["kind"]))
        assert reported == entry["violations"], entry["run_id"]
        assert state.events_applied == entry["applied"]


@pytest.mark.integration
def test_async_agents_record_concurrently_through_kafka(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
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
    for _, key, value in read_all(kafka_bootstrap, topic, report.delivered):
        seqs[key.decode()].append(codec.decode(value).seq)
    assert {k: v for k, v in seqs.items()} == {
        run_id: list(range(1, n + 1)) for run_id, n in lengths.items()}
