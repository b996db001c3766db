"""``runfold runs list/show/replay`` against a folded fleet, and the partitioner they rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from confluent_kafka import Producer
from service_fixtures import load_fleet, prefix_of, run_consume

from clients.settings import TopicNames
from consumers.service.queries import murmur2, partition_for
from consumers.service.restore import iter_partition
from schemas.codec import decode_event
from schemas.ledger import replay_digest


@pytest.mark.unit
@pytest.mark.parametrize(
    ("key", "expected"),
    [  # Kafka's UtilsTest.testMurmur2
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_is_the_java_clients(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


def _runs(bootstrap: str, topics: TopicNames, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNFOLD_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "runfold",
            "runs",
            *args,
            "--json",
            "--bootstrap-servers",
            bootstrap,
            "--prefix",
            prefix_of(topics),
        ],
        capture_output=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


@pytest.mark.integration
def test_partition_for_matches_the_producer(kafka_bootstrap: str, topic_factory: Any) -> None:
    topic = topic_factory(5)
    placed: dict[bytes, int] = {}

    def report(err: Any, msg: Any) -> None:
        assert err is None
        placed[msg.key()] = msg.partition()

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    keys = [f"0000000{i}-aaaa-4bbb-8ccc-{i:012d}".encode() for i in range(40)]
    for key in keys:
        producer.produce(topic, b"x", key=key, on_delivery=report)
    assert producer.flush(30) == 0
    assert {key: partition_for(key, 5) for key in keys} == placed


@pytest.mark.integration
def test_list_show_replay_a_folded_fleet(kafka_bootstrap: str, unique_topics: TopicNames) -> None:
    manifest = load_fleet(kafka_bootstrap, unique_topics, runs=40, seed=7)
    status, _, stderr = run_consume(kafka_bootstrap, unique_topics, "--until-idle", "2")
    assert status == 0, stderr
    expected = {entry["run_id"]: entry for entry in manifest["runs"]}

    listed = _runs(kafka_bootstrap, unique_topics, "list")
    assert {doc["run"]["run_id"] for doc in listed} == set(expected)
    for doc in listed:
        assert doc["run"] == expected[doc["run"]["run_id"]]["run"]
    failed = _runs(kafka_bootstrap, unique_topics, "list", "--status", "failed")
    assert {doc["run"]["run_id"] for doc in failed} == {
        run_id for run_id, e in expected.items() if e["run"]["status"] == "FAILED"
    }

    faulty = next(
        e for e in manifest["runs"] if e["violations"] and e["run"]["status"] != "RUNNING"
    )
    shown = _runs(kafka_bootstrap, unique_topics, "show", faulty["run_id"])
    assert shown["run"] == faulty["run"]
    assert shown["counters"]["events_applied"] == faulty["applied"]
    assert sorted(
        (v["kind"], v["first_seq"], v["last_seq"]) for v in shown["violations"]
    ) == sorted((v["kind"], v["first_seq"], v["last_seq"]) for v in faulty["violations"])

    replayed = _runs(kafka_bootstrap, unique_topics, "replay", faulty["run_id"])
    assert len(replayed["timeline"]) == faulty["records"]
    assert replayed["applied"] == faulty["applied"]
    offsets = [entry["offset"] for entry in replayed["timeline"]]
    assert offsets == sorted(offsets)
    assert replayed["partition"] == partition_for(faulty["run_id"].encode(), 3)
    assert len(replayed["digest"]) == 64

    # A run without faults: its digest is the ledger's over exactly the events sent.
    clean = next(e for e in manifest["runs"] if not e["faults"])
    sent = [
        decode_event(msg.value())
        for msg in iter_partition(
            {"bootstrap.servers": kafka_bootstrap},
            unique_topics.events,
            partition_for(clean["run_id"].encode(), 3),
        )
        if msg.key() == clean["run_id"].encode()
    ]
    assert len(sent) == clean["events"]
    clean_replay = _runs(kafka_bootstrap, unique_topics, "replay", clean["run_id"])
    assert clean_replay["digest"] == replay_digest(sent)
